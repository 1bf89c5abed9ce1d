"""Fixtures of the governance tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from scoregate.config import Settings
from scoregate.governance.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, verify_signature
from scoregate.registry import Registry
from scoregate.registry.database import make_engine, migrate
from scoregate.serving import RegistrySource, create_app


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty registry database on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_settings(request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of a registry on each database, which the CLI (``run``) uses too."""
    if request.param == "sqlite":
        return Settings(home=home)
    url = request.getfixturevalue("postgres_url")
    monkeypatch.setenv("SCOREGATE_DATABASE_URL", url)
    return Settings(home=home, database_url=url)


SECRET = "s3cret-s3cret-s3cret"


@dataclass
class Receiver:
    """An HTTP endpoint on 127.0.0.1 that checks each signature and answers from a script."""

    url: str
    answers: list[int] = field(default_factory=list)  # statuses to give, in order; then 200
    received: list[dict] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(
                {
                    "body": body,
                    "event_id": self.headers[EVENT_ID_HEADER],
                    "signed": verify_signature(SECRET, body, self.headers[SIGNATURE_HEADER]),
                }
            )
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def serve_requests(registry: Registry, ref: str, requests: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Score each body through the real ASGI app with the prediction log on; the log is flushed at shutdown."""

    async def go() -> dict[str, Any]:
        app = create_app(
            RegistrySource(registry),
            models=[ref],
            predictions_dir=registry.settings.predictions_dir,
            poll_interval=0.05,
            log_flush_interval=60,
        )
        answers = {}
        await app.startup()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
                for request_id, body in requests.items():
                    r = await client.post(
                        f"/models/{ref}/predict", json={"rows": body}, headers={"x-request-id": request_id}
                    )
                    assert r.status_code == 200, r.text
                    answers[request_id] = r.json()
        finally:
            await app.shutdown()
        return answers

    return asyncio.run(go())
