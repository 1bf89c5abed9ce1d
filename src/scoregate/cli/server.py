"""``scoregate server``: the registry service (team mode)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from scoregate.cli.app import app, out, rule, state
from scoregate.config import Settings
from scoregate.limits import between


@app.command("server", rich_help_panel="Team")
def server(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", callback=rule(between, 1, 65535))] = 8090,
    workers: Annotated[int, typer.Option(help="Worker processes.", callback=rule(between, 1, 64))] = 1,
    max_upload_mb: Annotated[
        int, typer.Option(help="Largest upload (artifact, training file) in MiB.", callback=rule(between, 1, 1 << 20))
    ] = 8192,
) -> None:
    """Serve the registry as a REST API (/api/v1): this process holds the database and artifact
    store credentials; the CLI and Client elsewhere reach it with SCOREGATE_URL and a token."""
    import uvicorn

    from scoregate.server.app import create_server_app
    from scoregate.server.settings import ServerSettings

    settings = state.settings or Settings.load()
    options = ServerSettings(host=host, port=port, workers=workers, max_upload_bytes=max_upload_mb << 20)
    create_server_app(settings, options).state.registry.close()  # refuse a bad setup before listening
    out.print(f"registry service on http://{host}:{port}/api/v1 ({workers} worker(s))", highlight=False)
    if workers == 1:
        uvicorn.run(create_server_app(settings, options), host=host, port=port, log_level="warning")
        return
    # several workers import the app by name and read the settings from the environment
    os.environ.update({f"SCOREGATE_{k.upper()}": str(v) for k, v in _env(settings).items()})
    os.environ["SCOREGATE_SERVER_MAX_UPLOAD_BYTES"] = str(options.max_upload_bytes)
    uvicorn.run(
        "scoregate.server.app:app_factory", factory=True, host=host, port=port, workers=workers, log_level="warning"
    )


def _env(settings: Settings) -> dict[str, str]:
    values = {"home": str(settings.home)}
    if settings.database_url:
        values["database_url"] = settings.database_url
    if settings.artifacts_url:
        values["artifacts_url"] = settings.artifacts_url
    return values
