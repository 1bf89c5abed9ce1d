"""The local scoring server of ``scoregate loadtest NAME@VERSION``, in a child process.

The server runs the model, and a model that hangs there must not hang the command: a
scoring thread stuck in a model cannot be stopped, and one spinning in C holds the
interpreter lock of whatever process it is in. So the server (the scoring app of
``scoregate serve``, on a socket bound here to port 0, so no other process can take the port
between choosing and binding it) runs in a child process with its own process group. The
child prints its URL once it is ready (the model loaded and warmed up); the load test must
see it within ``timeout`` seconds. At the end the child is asked to stop (its stdin closed)
and, past a grace period, killed with its group. Run as ``python -m scoregate.cli.loadtest_server``
with the settings on stdin.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from scoregate.errors import ModelTimeoutError, ScoregateError
from scoregate.isolation import child_environment

#: Seconds the child may take to stop after its stdin closed, before it is killed.
STOP_GRACE_S = 5.0


@contextlib.contextmanager
def served_in_child(registry: Any, ref: str, *, timeout: float) -> Iterator[str]:
    """Serve ``ref`` in a child process for the block; yields its base URL."""
    request = {"settings": registry.settings.model_dump(mode="json"), "token": registry.token, "ref": ref}
    # the child's log goes to a file, not a pipe: a pipe nobody reads would stall the server
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scoregate.cli.loadtest_server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=child_environment(),
            start_new_session=True,
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
            base = _read_url(proc, timeout)
            if base is None:
                raise ModelTimeoutError(
                    f"the scoring server for {ref} did not become ready within {timeout:g} s "
                    "(loading and warming up the model); no request was sent",
                    seconds=timeout,
                )
            if not base:
                code = proc.wait()
                log.seek(0)
                tail = log.read().decode(errors="replace").strip().splitlines()
                reason = tail[-1].strip() if tail else f"exit {code}"
                raise ScoregateError(f"the scoring server for {ref} did not start: {reason}")
            yield base
        finally:
            _stop(proc)


def _read_url(proc: subprocess.Popen[bytes], timeout: float) -> str | None:
    """The URL line the child prints when ready; "" when it exited first, None at the timeout."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return ""
        line += chunk
    return line.decode().strip()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_GRACE_S)
    _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    if proc.stdout is not None:
        with contextlib.suppress(OSError):
            proc.stdout.close()


def _main() -> None:  # pragma: no cover - exercised through served_in_child
    import socket
    import threading

    import uvicorn

    from scoregate.config import Settings
    from scoregate.registry import Registry
    from scoregate.serving.app import create_app
    from scoregate.serving.source import RegistrySource

    url_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the model's prints go to stderr, never into the URL line
    request = json.loads(sys.stdin.readline())
    registry = Registry(Settings(**request["settings"]), token=request.get("token"))
    app = create_app(RegistrySource(registry), models=[request["ref"]], predictions_dir=None)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", access_log=False, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            sys.exit(1)  # uvicorn logged why (a model that failed to load, say)
        time.sleep(0.02)
    url_out.write(f"http://127.0.0.1:{port}\n")
    url_out.flush()
    sys.stdin.read()  # until the load test closes it, or is gone
    server.should_exit = True
    thread.join(STOP_GRACE_S / 2)
    os._exit(0)  # a scoring thread stuck in the model is not waited for


if __name__ == "__main__":  # pragma: no cover
    _main()
