"""One settings object: environment variables over a config file over embedded defaults.

Precedence (highest first): keyword arguments, ``SCOREGATE_*`` environment
variables, ``<home>/config.toml`` (or the file named by ``SCOREGATE_CONFIG``), then
the defaults, which keep everything embedded under ``~/.scoregate``: a SQLite file
for metadata and a local folder for artifacts, so a newcomer needs no server.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scoregate.errors import ConfigurationError

DEFAULT_HOME = Path("~/.scoregate")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SCOREGATE_", extra="forbid", frozen=True)

    home: Path = Field(default=DEFAULT_HOME, description="Folder for the embedded database, artifacts and logs.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite:///<home>/registry.db")
    artifacts_url: str | None = Field(default=None, description="fsspec URL; default <home>/artifacts")
    artifacts_options: dict[str, Any] = Field(
        default_factory=dict, description='fsspec storage options, e.g. {"endpoint_url": ...} for S3.'
    )
    token: str | None = Field(default=None, description="API token used by the CLI (governance).")
    url: str | None = Field(
        default=None,
        description="URL of a registry service (`scoregate server`): the CLI and Client become its clients.",
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
    )

    @field_validator("home", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'registry.db'}"

    @property
    def resolved_artifacts_url(self) -> str:
        return self.artifacts_url or str(self.home / "artifacts")

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def predictions_dir(self) -> Path:
        return self.home / "predictions"

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Build the settings, reading the config file that the home (or SCOREGATE_CONFIG) points to."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        home = Path(overrides.get("home") or os.environ.get("SCOREGATE_HOME") or DEFAULT_HOME).expanduser()
        config_path = Path(os.environ.get("SCOREGATE_CONFIG") or home / "config.toml").expanduser()
        from_file: dict[str, Any] = {}
        if config_path.is_file():
            try:
                from_file = tomllib.loads(config_path.read_text())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigurationError(f"config file {config_path} is not valid TOML: {exc}") from None
            unknown = sorted(set(from_file) - set(cls.model_fields))
            if unknown:
                raise ConfigurationError(
                    f"config file {config_path}: unknown setting(s) {', '.join(unknown)}; "
                    f"known: {', '.join(cls.model_fields)}"
                )
        # Environment beats the file: only take file values whose variable is not set.
        file_values = {
            k: v for k, v in from_file.items() if f"SCOREGATE_{k.upper()}" not in os.environ and k not in overrides
        }
        try:
            return cls(**file_values, **overrides)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ConfigurationError(f"invalid setting {field}: {first['msg']}") from None
