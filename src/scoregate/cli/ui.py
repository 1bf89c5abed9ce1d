"""``scoregate ui``: the web UI on an embedded registry, for one person (team mode serves it
from ``scoregate server`` under ``/ui``)."""

from __future__ import annotations

from typing import Annotated

import typer

from scoregate.cli.app import app, out, state
from scoregate.config import Settings
from scoregate.errors import InvalidInputError

#: Bounds of the HTTP server: idle keep-alive, concurrent connections, header size.
KEEP_ALIVE_S = 5
MAX_CONNECTIONS = 256


@app.command(rich_help_panel="Governance")
def ui(
    host: Annotated[str, typer.Option(help="Interface to listen on (keep 127.0.0.1 unless behind TLS).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8600,
) -> None:
    """Serve the web UI (inventory, versions, evidence, audit, monitoring) on this registry."""
    import socket

    import uvicorn

    from scoregate.ui.app import embedded_site

    if not 0 <= port <= 65535:
        raise InvalidInputError(f"invalid --port {port}: must be between 0 and 65535")
    settings = state.settings or Settings.load()
    site = embedded_site(settings)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise InvalidInputError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    shown = f"[{host}]" if ":" in host else host
    out.print(f"scoregate UI on http://{shown}:{sock.getsockname()[1]}/ui/ (Ctrl-C stops it)", highlight=False)
    config = uvicorn.Config(
        site,
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=MAX_CONNECTIONS,
        h11_max_incomplete_event_size=64 * 1024,
        proxy_headers=False,
    )
    uvicorn.Server(config).run(sockets=[sock])
