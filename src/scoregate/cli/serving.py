"""``scoregate serve``, the HTTP scoring server, and ``scoregate predictions``, what it logged."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from scoregate.cli.app import app, get_registry, out, state
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


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_COLUMNS = ["timestamp", "model", "version", "request_id", "row", "route", "shadow", "latency_ms"]


def _duration(text: str) -> dt.timedelta:
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.isdigit() or int(number) == 0:
        raise InvalidInputError(
            f"invalid --last {text!r}: expected a positive whole number and a unit, e.g. 30m, 2h, 7d"
        )
    return dt.timedelta(seconds=int(number) * _UNITS[unit])


@app.command(rich_help_panel="Serving")
def predictions(
    ref: Annotated[
        str, typer.Argument(help="NAME (every version), NAME@VERSION or NAME@ALIAS (the version it names).")
    ],
    last: Annotated[str | None, typer.Option(help="Only rows logged in the last 30m, 2h, 7d, ...")] = None,
    request_id: Annotated[str | None, typer.Option(help="Only the rows of one request (x-request-id).")] = None,
    limit: Annotated[int, typer.Option(help="The most recent N rows.")] = 20,
    output_format: Annotated[str, typer.Option("--format", help="table, jsonl or csv.")] = "table",
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of the terminal.")] = None,
) -> None:
    """Read the prediction log: what the server scored, newest last."""
    from scoregate.refs import ModelRef
    from scoregate.registry.predictions import read_predictions

    if limit < 1:
        raise InvalidInputError(f"invalid --limit {limit}: must be at least 1")
    if output_format not in ("table", "jsonl", "csv"):
        raise InvalidInputError(f"invalid --format {output_format!r}: use table, jsonl or csv")
    if output_format == "table" and output is not None:
        raise InvalidInputError("--output needs --format jsonl or csv")
    parsed = ModelRef.parse(ref)
    since = dt.datetime.now(dt.UTC) - _duration(last) if last else None
    settings = state.settings or Settings.load()
    version = None
    if parsed.version is not None or parsed.alias is not None:
        registry = get_registry()
        try:
            version = registry.resolve(parsed).version
        finally:
            registry.close()
    rows = read_predictions(settings, parsed.name, version, since=since, request_id=request_id, decode=False)
    rows = rows.tail(limit)
    if output_format == "table":
        _print_table(rows)
        return
    frame = rows[[*_COLUMNS, "inputs", "outputs"]].assign(timestamp=rows["timestamp"].map(lambda t: t.isoformat()))
    if output_format == "csv":
        text = frame.to_csv(index=False)
    else:
        records = frame.to_dict(orient="records")
        decoded = ({**r, "inputs": orjson.loads(r["inputs"]), "outputs": orjson.loads(r["outputs"])} for r in records)
        text = "".join(orjson.dumps(r).decode() + "\n" for r in decoded)
    if output is None:
        sys.stdout.write(text)
        return
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text)
    tmp.replace(output)
    out.print(f"wrote {len(frame)} rows to {escape(str(output))}", highlight=False)


def _print_table(rows: Any) -> None:
    if rows.empty:
        out.print("no logged predictions match")
        return
    table = Table("time (UTC)", "version", "request id", "row", "latency ms", "inputs", "outputs")
    for r in rows.itertuples():
        table.add_row(
            f"{r.timestamp:%Y-%m-%d %H:%M:%S}",
            f"{r.version}{' (shadow)' if r.shadow else ''}",
            escape(r.request_id),
            str(r.row),
            f"{r.latency_ms:.2f}",
            escape(_short(r.inputs)),
            escape(_short(r.outputs)),
        )
    out.print(table)


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
