"""Shared fixtures: real scikit-learn models (two versions of a credit model with a
category feature), served in-process through the sklearn flavor, and a registry."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from scoregate.flavors import load_scorer
from scoregate.schema import infer_schema
from scoregate.serving import InMemorySource, create_app

FEATURES = ["income", "debt", "age", "segment"]


def training_frame(seed: int = 0, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": rng.uniform(10, 200, n).round(2),
            "debt": rng.uniform(0, 100, n).round(2),
            "age": rng.integers(18, 90, n),
            "segment": rng.choice(["retail", "sme", "corporate"], n),
        }
    )
    frame["default"] = ((frame["debt"] / frame["income"] + (frame["segment"] == "sme") * 0.3) > 0.5).astype(int)
    return frame


def train(seed: int, c: float) -> Pipeline:
    frame = training_frame(seed)
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("num", "passthrough", ["income", "debt", "age"]), ("cat", OneHotEncoder(), ["segment"])]
                ),
            ),
            ("clf", LogisticRegression(C=c, max_iter=500)),
        ]
    )
    pipe.fit(frame[FEATURES], frame["default"])
    return pipe


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serving-artifacts")
    out = {}
    for version, (seed, c) in {1: (0, 1.0), 2: (1, 0.01), 3: (2, 100.0)}.items():
        path = root / f"credit-v{version}.joblib"
        joblib.dump(train(seed, c), path)
        out[f"v{version}"] = path
    train_path = root / "train.parquet"
    training_frame(0).to_parquet(train_path, index=False)
    out["train"] = train_path
    return out


@pytest.fixture(scope="session")
def schema() -> Any:
    return infer_schema(training_frame(0), target="default")


def sample_rows(n: int, seed: int = 7) -> list[dict[str, Any]]:
    frame = training_frame(seed, n)
    return [
        {"income": float(r.income), "debt": float(r.debt), "age": int(r.age), "segment": str(r.segment)}
        for r in frame.itertuples()
    ]


@pytest.fixture
def source(artifacts: dict[str, Path], schema: Any) -> InMemorySource:
    src = InMemorySource()
    for version in (1, 2, 3):
        src.add("credit", version, load_scorer("sklearn", artifacts[f"v{version}"]), schema)
    src.set_alias("credit", "production", 1)
    src.set_alias("credit", "challenger", 2)
    return src


class Served:
    """An app under test, with an httpx client on its ASGI interface (lifespan run by hand)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")

    async def __aenter__(self) -> Served:
        await self.app.startup()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.aclose()
        await self.app.shutdown()


def serve(source: Any, **kwargs: Any) -> Served:
    kwargs.setdefault("poll_interval", 0.05)
    return Served(create_app(source, **kwargs))


class ThreadedServer:
    """uvicorn on a real loopback socket, in a thread of the test process."""

    def __init__(self, app: Any, port: int = 0) -> None:
        """``port`` 0 lets the kernel pick a free one at bind time (no race with other binds)."""
        import uvicorn

        from scoregate.serving.protocol import ScoringProtocol

        self.app = app
        self.port = port
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            loop="asyncio",
            http=ScoringProtocol,  # the server's own protocol: its timeouts, connection cap and drain
            lifespan="on",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=20,
            timeout_keep_alive=getattr(getattr(app, "options", None), "keep_alive_timeout", 5),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def wait_for(predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; a server not listening yet counts as false."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def register_credit(home: Path, artifacts: dict[str, Path], versions: int = 1) -> Any:
    """An open registry under ``home`` with ``versions`` versions of the credit model and
    production on version 1 (the low risk tier's policy moves production without evidence)."""
    from scoregate.config import Settings
    from scoregate.registry import Registry

    registry = Registry.open(Settings(home=home))
    for version in range(1, versions + 1):
        registry.register(
            "credit",
            artifacts[f"v{version}"],
            flavor="sklearn",
            train_data=artifacts["train"],
            target="default",
            risk_tier="low",
        )
    registry.set_alias("credit", "production", 1)
    return registry


def start_server(home: Path, port: int, *, workers: int = 1) -> Any:
    """``serving.run`` on the registry under ``home`` in its own process group, with this
    process's environment (so it imports this checkout) and its own metrics folder."""
    import os
    import subprocess
    import sys

    code = (
        "from scoregate.config import Settings; from scoregate.serving import run; "
        f"run(Settings(home={str(home)!r}), '127.0.0.1', {port}, workers={workers}, log_level='warning')"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)


def stop_server(proc: Any, timeout: float = 60) -> int:
    """SIGTERM to the server's process group; its exit code (killed and raised if it hangs)."""
    import os
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def threaded() -> Iterator[Any]:
    servers: list[ThreadedServer] = []

    def start(app: Any) -> ThreadedServer:
        server = ThreadedServer(app).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.thread.is_alive():
            server.stop()
