"""Fixtures of the packaging tests: two registered versions of the credit model that score
differently, and the container engine (podman/docker) with the test base image.

Container tests are marked ``containers``. Without an engine or the base image (made by
``.ci/containers.sh``) they skip, and fail under CI (``CI=true``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import joblib
import pytest
from sklearn.compose import make_column_transformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from scoregate.config import Settings
from scoregate.registry import Registry
from tests.conftest import IN_CI, invoke_cli, make_credit_data

TEST_BASE = "scoregate-test-base:bookworm"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "containers: needs podman or docker and the test base image")


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required under CI; run .ci/containers.sh)")
    pytest.skip(reason)


def register_two_versions(home: Path, files: Path) -> Registry:
    """credit-risk@1 (logistic regression) and credit-risk@2 (a random forest): different scores."""
    frame = make_credit_data()
    features = frame.drop(columns="default")
    files.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(files / "train.parquet", index=False)
    encode = make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["purpose"]), remainder=StandardScaler())
    models = [
        make_pipeline(encode, LogisticRegression(max_iter=500)),
        make_pipeline(encode, RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0)),
    ]
    registry = Registry(Settings(home=home))
    for i, model in enumerate(models, start=1):
        model.fit(features, frame["default"])
        path = files / f"model{i}.joblib"
        joblib.dump(model, path)
        registry.register("credit-risk", path, flavor="sklearn", train_data=files / "train.parquet", target="default")
    return registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The packaging tests' registry: the two versions of :func:`register_two_versions`, once per module."""
    root = tmp_path_factory.mktemp("two-versions")
    registry = register_two_versions(root / "home", root / "files")
    yield registry
    registry.close()


@pytest.fixture(scope="session")
def engine():  # type: ignore[no-untyped-def]
    from scoregate.errors import ScoregateError
    from scoregate.packaging import Engine

    if shutil.which("podman") is None and shutil.which("docker") is None:
        _unavailable("no container engine (podman or docker) on PATH")
    try:
        found = Engine.detect()
        usable = found.run("info", check=False, timeout=60).returncode == 0
    except ScoregateError as exc:
        _unavailable(str(exc))
    if not usable:
        _unavailable(f"the container engine {found.binary} does not work (`{found.binary} info` failed)")
    if not found.image_exists(TEST_BASE):
        _unavailable(f"the test base image {TEST_BASE} is missing")
    return found


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """``cli(home, *args) -> (exit code, stdout)``: the scoregate command, in-process."""
    import scoregate.cli.packaging  # noqa: F401  (adds the image/deploy/k8s commands to the app)

    monkeypatch.setenv("COLUMNS", "200")

    def invoke(home: Path, *args: str) -> tuple[int, str]:
        monkeypatch.setenv("SCOREGATE_HOME", str(home))
        code, out, err = invoke_cli(monkeypatch, capsys, args)
        return code, out + err

    return invoke
