"""``scoregate serve``: the HTTP scoring server."""

from __future__ import annotations

from typing import Annotated

import typer

from scoregate.cli.app import app, state
from scoregate.config import Settings
from scoregate.errors import InvalidInputError


@app.command(rich_help_panel="Serving")
def serve(
    model: Annotated[
        list[str] | None,
        typer.Argument(help="Models to serve (NAME, NAME@VERSION, NAME@ALIAS); default: every aliased version."),
    ] = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8080,
    workers: Annotated[int, typer.Option(help="Worker processes; each loads every model once.")] = 1,
    max_batch_rows: Annotated[int, typer.Option(help="Upper bound of one adaptive batch.")] = 256,
    max_body_mb: Annotated[float, typer.Option(help="Larger request bodies get 413.")] = 10.0,
    max_queued_requests: Annotated[
        int, typer.Option(help="Requests waiting for one model version before new ones get 503 (load shedding).")
    ] = 1000,
    poll_interval: Annotated[float, typer.Option(help="Seconds between alias checks (hot swap).")] = 0.5,
    log_predictions: Annotated[bool, typer.Option(help="Write the prediction log.")] = True,
    log_flush_interval: Annotated[float, typer.Option(help="Seconds between prediction-log flushes.")] = 1.0,
    scoring: Annotated[
        str, typer.Option(help="thread: each model version scores on its own thread; inline: on the event loop.")
    ] = "thread",
    direct_below_ms: Annotated[
        float,
        typer.Option(
            help="Thread mode: a lone request to a model faster than this is scored on the event loop "
            "while the model's thread is idle (saves the thread handoff); 0 turns it off."
        ),
    ] = 2.0,
    log_level: Annotated[str, typer.Option()] = "info",
) -> None:
    """Serve models over HTTP: Open Inference Protocol V2 and plain JSON, with hot swap on alias moves."""
    from scoregate.serving import run

    for name, value, low in (
        ("--port", port, 1),
        ("--workers", workers, 1),
        ("--max-batch-rows", max_batch_rows, 1),
        ("--max-queued-requests", max_queued_requests, 1),
    ):
        if value < low:
            raise InvalidInputError(f"invalid {name} {value}: must be at least {low}")
    if scoring not in ("thread", "inline"):
        raise InvalidInputError(f"invalid --scoring {scoring!r}: use thread or inline")
    if direct_below_ms < 0:
        raise InvalidInputError(f"invalid --direct-below-ms {direct_below_ms}: must be 0 or more")
    if port > 65535:
        raise InvalidInputError(f"invalid --port {port}: must be at most 65535")
    if max_body_mb <= 0 or poll_interval <= 0 or log_flush_interval <= 0:
        raise InvalidInputError("--max-body-mb, --poll-interval and --log-flush-interval must be positive")
    run(
        state.settings or Settings.load(),
        host=host,
        port=port,
        workers=workers,
        models=model or None,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_batch_rows=max_batch_rows,
        max_queued_requests=max_queued_requests,
        poll_interval=poll_interval,
        log_predictions=log_predictions,
        log_flush_interval=log_flush_interval,
        scoring=scoring,
        direct_below=direct_below_ms / 1000.0,
        log_level=log_level,
    )
