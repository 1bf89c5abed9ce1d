from pathlib import Path

import pytest

from scoregate.config import Settings
from scoregate.errors import ConfigurationError


def test_embedded_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCOREGATE_HOME", str(tmp_path))
    settings = Settings.load()
    assert settings.resolved_database_url == f"sqlite:///{tmp_path}/registry.db"
    assert settings.resolved_artifacts_url == str(tmp_path / "artifacts")


def test_precedence_argument_over_environment_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.toml").write_text('database_url = "sqlite:///from-file.db"\nartifacts_url = "/from/file"\n')
    monkeypatch.setenv("SCOREGATE_HOME", str(tmp_path))
    assert Settings.load().database_url == "sqlite:///from-file.db"
    monkeypatch.setenv("SCOREGATE_DATABASE_URL", "sqlite:///from-env.db")
    settings = Settings.load()
    assert settings.database_url == "sqlite:///from-env.db" and settings.artifacts_url == "/from/file"
    assert Settings.load(database_url="sqlite:///arg.db").database_url == "sqlite:///arg.db"


def test_bad_config_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCOREGATE_HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text("database_url = [unclosed")
    with pytest.raises(ConfigurationError, match="is not valid TOML"):
        Settings.load()
    (tmp_path / "config.toml").write_text('databse_url = "typo"')
    with pytest.raises(ConfigurationError, match=r"unknown setting.*databse_url"):
        Settings.load()
