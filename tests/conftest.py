"""Shared fixtures: registry backends (SQLite, PostgreSQL, S3 through moto's server) and a small model.

PostgreSQL is expected at SCOREGATE_TEST_POSTGRES (default 127.0.0.1:5432, database
``test``). Under CI (``CI=true``) a missing server fails the run instead of skipping.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from scoregate.config import Settings
from scoregate.registry import Registry

POSTGRES_ADMIN_URL = os.environ.get("SCOREGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    import psycopg

    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        _unavailable(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    import psycopg

    name = f"sg_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_admin.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, in its own process, on a free loopback port."""
    port = _free_port()
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        _unavailable("moto's S3 server did not start")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    import boto3

    name = f"sg-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["sqlite-local", "postgres-local", "sqlite-s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for each supported store combination."""
    home = tmp_path / "home"
    if request.param == "sqlite-local":
        return Settings(home=home)
    if request.param == "postgres-local":
        return Settings(home=home, database_url=request.getfixturevalue("postgres_url"))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return Settings(
        home=home,
        artifacts_url=f"s3://{bucket}/artifacts",
        artifacts_options={"endpoint_url": endpoint, "key": "testing", "secret": "testing"},
    )


@pytest.fixture(autouse=True)
def _close_registries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every registry a test opened, so no database connection outlives its test."""
    opened: list[Registry] = []
    init = Registry.__init__

    def tracked(self: Registry, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        opened.append(self)

    monkeypatch.setattr(Registry, "__init__", tracked)
    yield
    for registry in opened:
        registry.close()


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def make_credit_data(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": rng.normal(50_000, 12_000, n).round(2),
            "age": rng.integers(18, 80, n),
            "debt_ratio": rng.uniform(0, 1, n),
            "purpose": rng.choice(["car", "home", "education"], n),
        }
    )
    logit = -2 + 3 * frame["debt_ratio"] - frame["income"] / 50_000 + (frame["purpose"] == "car")
    frame["default"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


@pytest.fixture
def credit_files(tmp_path: Path) -> dict[str, Path]:
    """A trained sklearn pipeline, its training data as Parquet and CSV, and a few rows as JSON."""
    frame = make_credit_data()
    features = frame.drop(columns="default")
    model = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["purpose"]), remainder=StandardScaler()),
        LogisticRegression(max_iter=500),
    ).fit(features, frame["default"])
    folder = tmp_path / "files"
    folder.mkdir()
    paths = {
        "model": folder / "model.joblib",
        "train": folder / "train.parquet",
        "train_csv": folder / "train.csv",
        "rows": folder / "rows.json",
    }
    joblib.dump(model, paths["model"])
    frame.to_parquet(paths["train"], index=False)
    frame.to_csv(paths["train_csv"], index=False)
    features.head(5).to_json(paths["rows"], orient="records")
    return paths


@pytest.fixture
def registry(sqlite_settings: Settings) -> Iterator[Registry]:
    """An embedded registry (SQLite + local folder) for tests that need one, closed afterwards."""
    reg = Registry.open(sqlite_settings)
    yield reg
    reg.close()


@pytest.fixture
def good(registry: Registry, credit_files: dict[str, Path]):  # type: ignore[no-untyped-def]
    """credit-risk@1: the fixture's sklearn pipeline, registered with its training data."""
    return registry.register(
        "credit-risk", credit_files["model"], flavor="sklearn", train_data=credit_files["train"], target="default"
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The SCOREGATE_HOME of the CLI tests."""
    return tmp_path / "home"


@pytest.fixture
def run(home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run ``scoregate ARGS...`` in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("SCOREGATE_HOME", str(home))
    monkeypatch.delenv("SCOREGATE_TOKEN", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.chdir(home.parent)

    def invoke(*args: object) -> tuple[int, str, str]:
        return invoke_cli(monkeypatch, capsys, args)

    return invoke


def invoke_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: tuple[object, ...]
) -> tuple[int, str, str]:
    """``scoregate ARGS...`` in this process: (exit code, stdout, stderr)."""
    from scoregate.cli import main

    monkeypatch.setattr("sys.argv", ["scoregate", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
