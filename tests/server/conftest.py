"""A registry service (`scoregate server`) started by the tests, in its own process, over
SQLite or PostgreSQL; and the two modes every CLI and Client test here runs in."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from scoregate.config import Settings
from scoregate.governance.service import Governance
from scoregate.registry import Registry

SRC = str(Path(__file__).resolve().parents[2] / "src")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    """The registry's own settings (database and store: only the service holds them), its
    URL and the first admin's token."""

    settings: Settings
    url: str
    admin_token: str
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def env(self) -> dict[str, str]:
        values = {"SCOREGATE_HOME": str(self.settings.home)}
        if self.settings.database_url:
            values["SCOREGATE_DATABASE_URL"] = self.settings.database_url
        return values


def start_service(settings: Settings, folder: Path, *, workers: int = 1) -> Service:
    admin = Governance(Registry(settings)).init("admin")
    port = free_port()
    log = folder / "service.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREGATE_")}
    env.update({"PYTHONPATH": SRC + os.pathsep + env.get("PYTHONPATH", ""), "SCOREGATE_HOME": str(settings.home)})
    if settings.database_url:
        env["SCOREGATE_DATABASE_URL"] = settings.database_url
    command = [sys.executable, "-m", "scoregate", "server", "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the registry service did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return Service(settings, url, admin, process, log)


def stop_service(service: Service) -> None:
    if service.process is None:
        return
    service.process.terminate()
    try:
        service.process.wait(15)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait(5)


@pytest.fixture(params=["sqlite", "postgres"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    home = tmp_path / "service-home"
    if request.param == "sqlite":
        settings = Settings(home=home)
    else:
        settings = Settings(home=home, database_url=request.getfixturevalue("postgres_url"))
    started = start_service(settings, tmp_path)
    yield started
    stop_service(started)


@dataclass
class Mode:
    """Where a command runs: ``embedded`` opens the registry's database itself; ``remote`` is
    a client with a home of its own, no database URL and no store, only the service's URL."""

    name: str
    service: Service
    client_home: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def remote(self) -> bool:
        return self.name == "remote"

    def settings(self, user: str) -> Settings:
        token = self.tokens[user]
        if self.remote:
            return Settings(home=self.client_home, url=self.service.url, token=token)
        base = self.service.settings
        return Settings(home=base.home, database_url=base.database_url, token=token)

    def env(self, user: str) -> dict[str, str]:
        if self.remote:
            return {
                "SCOREGATE_HOME": str(self.client_home),
                "SCOREGATE_URL": self.service.url,
                "SCOREGATE_TOKEN": self.tokens[user],
            }
        return {**self.service.env(), "SCOREGATE_TOKEN": self.tokens[user]}


@pytest.fixture(params=["embedded", "remote"])
def mode(request: pytest.FixtureRequest, service: Service, tmp_path: Path) -> Mode:
    found = Mode(request.param, service, tmp_path / "client-home", {"admin": service.admin_token})
    admin = Governance(Registry(service.settings, token=service.admin_token))
    for name, role in [("dave", "developer"), ("val", "validator"), ("vera", "validator"), ("dep", "deployer")]:
        found.tokens[name] = admin.add_user(name, [role])
    return found
