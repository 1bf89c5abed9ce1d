"""The container engine: podman or docker, whichever works here, behind one command builder.

An engine works when it answers ``<engine> info`` within a few seconds: a docker client with
no daemon behind it (common: Docker Desktop not started, a CI image with the CLI only) is
on PATH but cannot run a container, so detection asks the engine, not the PATH.

Podman gets ``--runtime <runtime>`` (default ``runc``; env ``SCOREGATE_CONTAINER_RUNTIME``,
empty to leave podman's default) and builds in Docker format so the image keeps its
HEALTHCHECK.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from scoregate.errors import ScoregateError, StoreUnavailableError

ENGINE_ENV = "SCOREGATE_CONTAINER_ENGINE"
RUNTIME_ENV = "SCOREGATE_CONTAINER_RUNTIME"
#: Seconds ``<engine> info`` may take to show the engine works.
PROBE_TIMEOUT_S = 15.0


class EngineError(ScoregateError):
    status_code = 503


@dataclass
class Engine:
    binary: str
    kind: str  # podman | docker
    runtime: str | None = None
    extra_global: list[str] = field(default_factory=list)

    @classmethod
    def detect(cls, preferred: str | None = None, runtime: str | None = None) -> Engine:
        """The first of ``preferred`` (or ``SCOREGATE_CONTAINER_ENGINE``, or podman then docker)
        that is installed and answers ``info``; the error names each one that does not."""
        choice = preferred or os.environ.get(ENGINE_ENV)
        candidates = [choice] if choice else ["podman", "docker"]
        silent = []
        for name in candidates:
            path = shutil.which(name)
            if path is None:
                continue
            kind = "docker" if os.path.basename(name).startswith("docker") else "podman"
            engine = cls(path, kind)
            if kind == "podman":
                chosen = runtime if runtime is not None else os.environ.get(RUNTIME_ENV, "runc")
                engine = cls(path, kind, runtime=chosen or None)
            problem = engine.problem()
            if problem is None:
                return engine
            silent.append(problem)
        if silent:
            raise EngineError(f"no working container engine: {'; '.join(silent)}")
        raise StoreUnavailableError(
            f"no container engine found: install podman or docker (looked for {', '.join(candidates)})"
        )

    def problem(self, timeout: float | None = None) -> str | None:
        """None when the engine answers ``info`` within ``timeout`` seconds; else why not, in one line."""
        name = os.path.basename(self.binary)
        limit = PROBE_TIMEOUT_S if timeout is None else timeout
        try:
            proc = subprocess.run(self.command("info"), capture_output=True, text=True, timeout=limit, check=False)
        except subprocess.TimeoutExpired:
            return f"{name} ({self.binary}) did not answer `{name} info` within {limit:g} s"
        except OSError as exc:
            return f"{name} ({self.binary}) cannot be run: {exc.strerror}"
        if proc.returncode == 0:
            return None
        said = " ".join((proc.stderr.strip() or proc.stdout.strip()).split())[-300:] or f"exit {proc.returncode}"
        return f"{name} ({self.binary}) does not answer: `{name} info` failed: {said}"

    # -- command builder ---------------------------------------------------------------------

    def command(self, *args: str) -> list[str]:
        cmd = [self.binary]
        if self.kind == "podman" and self.runtime:
            cmd += ["--runtime", self.runtime]
        return cmd + self.extra_global + list(args)

    def build_command(self, context: str, tag: str, *, network_none: bool = True) -> list[str]:
        args = ["build", "--tag", tag, "--file", f"{context}/Containerfile"]
        if self.kind == "podman":
            args += ["--format", "docker"]
        if network_none:
            args += ["--network", "none"]
        return self.command(*args, context)

    def run_command(
        self, image: str, *, name: str, host_port: int, container_port: int = 8080, host: str = "127.0.0.1"
    ) -> list[str]:
        return self.command(
            "run",
            "--detach",
            "--name",
            name,
            "--publish",
            f"{host}:{host_port}:{container_port}",
            "--label",
            "scoregate.managed=true",
            image,
        )

    # -- operations --------------------------------------------------------------------------

    def run(self, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        cmd = self.command(*args)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
        if check and proc.returncode != 0:
            raise EngineError(f"`{' '.join(cmd[1:3])}` failed: {(proc.stderr or proc.stdout).strip()[-600:]}")
        return proc

    def build(self, context: str, tag: str, *, log: Any = None) -> str:
        cmd = self.build_command(context, tag)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if log is not None:
            log.write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise EngineError(f"image build of {tag} failed:\n{tail}")
        return self.image_id(tag)

    def inspect_image(self, image: str) -> dict[str, Any]:
        proc = self.run("image", "inspect", image)
        data = json.loads(proc.stdout)
        return data[0] if isinstance(data, list) else data

    def image_exists(self, image: str) -> bool:
        return self.run("image", "inspect", image, check=False).returncode == 0

    def image_id(self, image: str) -> str:
        info = self.inspect_image(image)
        return str(info.get("Id") or info.get("ID") or "")

    def image_labels(self, image: str) -> dict[str, str]:
        info = self.inspect_image(image)
        config = info.get("Config") or {}
        return dict(config.get("Labels") or info.get("Labels") or {})

    def image_healthcheck(self, image: str) -> dict[str, Any]:
        info = self.inspect_image(image)
        return dict(info.get("Healthcheck") or (info.get("Config") or {}).get("Healthcheck") or {})

    def start(self, image: str, *, name: str, host_port: int) -> str:
        self.remove(name)
        proc = self.run(*self.run_command(image, name=name, host_port=host_port)[len(self.command()) :])
        return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else name

    def stop(self, name: str, *, timeout: int = 10) -> None:
        self.run("stop", "--time", str(timeout), name, check=False)

    def remove(self, name: str) -> None:
        self.run("rm", "--force", name, check=False)

    def logs(self, name: str, tail: int = 40) -> str:
        proc = self.run("logs", "--tail", str(tail), name, check=False)
        return (proc.stdout + proc.stderr).strip()

    def is_running(self, name: str) -> bool:
        proc = self.run("inspect", "--format", "{{.State.Running}}", name, check=False)
        return proc.returncode == 0 and proc.stdout.strip() == "true"


def wait_ready(base_url: str, *, timeout: float = 90.0, engine: Engine | None = None, name: str | None = None) -> None:
    """Poll ``/v2/health/ready`` until 200; fail early if the container exits."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{base_url}/v2/health/ready", timeout=2.0)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        if engine is not None and name is not None and not engine.is_running(name):
            raise EngineError(f"container {name} exited before it was ready:\n{engine.logs(name)}")
        time.sleep(0.3)
    logs = engine.logs(name) if engine is not None and name is not None else ""
    raise EngineError(f"{base_url} was not ready within {timeout:g} s ({last})\n{logs}".rstrip())


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
