"""Serve one registered version in this process for a while (load tests, validation against an endpoint)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from scoregate.errors import ScoregateError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_server(registry: Any, ref: str) -> Iterator[str]:
    """Serve ``ref`` from the registry with the scoring server (uvicorn in a thread) for the block."""
    import uvicorn

    from scoregate.serving.app import create_app
    from scoregate.serving.protocol import ScoringProtocol
    from scoregate.serving.source import RegistrySource

    app = create_app(RegistrySource(registry), models=[ref], predictions_dir=None)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=ScoringProtocol,
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=app.options.keep_alive_timeout,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="scoregate-loadtest-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise ScoregateError(f"the local scoring server for {ref} did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
