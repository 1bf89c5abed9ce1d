"""``scoregate serve``, the HTTP scoring server, and ``scoregate predictions``, what it logged."""

from __future__ import annotations

import datetime as dt
import sys
import unicodedata
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from scoregate.cli.app import app, err, get_registry, out, state
from scoregate.config import Settings
from scoregate.errors import InvalidInputError, ScoregateError


@app.command(rich_help_panel="Serving")
def serve(
    model: Annotated[
        list[str] | None,
        typer.Argument(help="Models to serve (NAME, NAME@VERSION, NAME@ALIAS); default: every aliased version."),
    ] = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="0 picks a free port (logged at start).")] = 8080,
    workers: Annotated[int, typer.Option(help="Worker processes; each loads every model once.")] = 1,
    max_batch_rows: Annotated[
        int, typer.Option(help="Rows per framework call; larger requests are scored in slices of this size.")
    ] = 256,
    max_request_rows: Annotated[int, typer.Option(help="Rows one request may carry; more get 413.")] = 10_000,
    max_body_mb: Annotated[float, typer.Option(help="Larger request bodies get 413.")] = 10.0,
    max_queued_requests: Annotated[
        int, typer.Option(help="Requests waiting for one model version before new ones get 503 (load shedding).")
    ] = 1000,
    header_timeout: Annotated[float, typer.Option(help="Seconds a client has to send a request's headers.")] = 10.0,
    body_timeout: Annotated[float, typer.Option(help="Seconds a client has to send a request's body.")] = 30.0,
    keep_alive_timeout: Annotated[float, typer.Option(help="Seconds an idle connection is kept open.")] = 5.0,
    max_connections: Annotated[int, typer.Option(help="Open connections per worker; more get 503.")] = 1000,
    graceful_timeout: Annotated[float, typer.Option(help="Seconds in-flight requests get at shutdown.")] = 30.0,
    poll_interval: Annotated[float, typer.Option(help="Seconds between alias checks (hot swap).")] = 0.5,
    log_predictions: Annotated[bool, typer.Option(help="Write the prediction log.")] = True,
    log_durability: Annotated[
        str,
        typer.Option(
            help="sync: a decision is synced to disk before its response (survives a power loss); os: written "
            "to the OS (survives a crash of the server, not a power loss); off: buffered (a crash loses up to "
            "--log-flush-interval)."
        ),
    ] = "sync",
    log_flush_interval: Annotated[float, typer.Option(help="Seconds between prediction-log flushes.")] = 1.0,
    monitoring: Annotated[
        bool,
        typer.Option(
            help="Live monitoring: count scored rows per version into windows against its reference profile "
            "and export their drift and data quality at /metrics."
        ),
    ] = True,
    monitoring_window: Annotated[int, typer.Option(help="Seconds per live monitoring window.")] = 300,
    require_token: Annotated[
        bool, typer.Option(help="Scoring and metadata need a registry token (Authorization: Bearer).")
    ] = False,
    token_role: Annotated[
        str, typer.Option(help="With --require-token: the role a token's user needs (scorer), or 'any'.")
    ] = "scorer",
    require_token_for_metrics: Annotated[bool, typer.Option(help="/metrics needs a token too.")] = False,
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
    from scoregate.refs import ModelRef
    from scoregate.serving import run
    from scoregate.serving.options import ServeOptions

    for name, value, low, high in (
        ("--port", port, 0, 65535),
        ("--workers", workers, 1, 256),
    ):
        if not low <= value <= high:
            raise InvalidInputError(f"invalid {name} {value}: must be {low}-{high}")
    if max_body_mb <= 0:
        raise InvalidInputError(f"invalid --max-body-mb {max_body_mb}: must be positive")
    if direct_below_ms < 0:
        raise InvalidInputError(f"invalid --direct-below-ms {direct_below_ms}: must be 0 or more")
    refs = [ModelRef.parse(text) for text in model or []]  # a malformed reference: one line, exit 2
    options = ServeOptions.parse(
        models=[str(r) for r in refs] or None,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_request_rows=max_request_rows,
        max_batch_rows=max_batch_rows,
        max_queued_requests=max_queued_requests,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        keep_alive_timeout=keep_alive_timeout,
        max_connections=max_connections,
        graceful_timeout=graceful_timeout,
        poll_interval=poll_interval,
        log_predictions=log_predictions,
        log_durability=log_durability,
        log_flush_interval=log_flush_interval,
        monitoring=monitoring,
        monitoring_window=monitoring_window,
        require_token=require_token,
        token_role=token_role,
        require_token_for_metrics=require_token_for_metrics,
        scoring=scoring,
        direct_below=direct_below_ms / 1000.0,
        scorer_threads=1,
        switch_interval=0.001,
    )
    settings = state.settings or Settings.load()
    if refs:
        _check_servable(refs)
    if not require_token and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(
            f"warning: serving on {escape(host)} without --require-token: anyone who reaches the port can score",
            highlight=False,
        )
    run(settings, host=host, port=port, workers=workers, log_level=log_level, options=options)


def _check_servable(refs: list[Any]) -> None:
    """Refuse to start, in one line, when none of the named models resolves; the workers report
    each one that does not, and serve the others."""
    registry = get_registry()
    problems = []
    try:
        for ref in refs:
            try:
                registry.resolve(ref)
            except ScoregateError as exc:
                problems.append((exc, f"{ref}: {exc.message}"))
    finally:
        registry.close()
    if len(problems) == len(refs):
        first = problems[0][0]
        raise type(first)(f"nothing to serve: {'; '.join(text for _, text in problems)}")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_COLUMNS = ["timestamp", "model", "version", "request_id", "client_request_id", "row", "route", "shadow", "latency_ms"]


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
    request_id: Annotated[
        str | None, typer.Option(help="Only the rows of one request: the server's x-request-id or the client's id.")
    ] = None,
    limit: Annotated[int, typer.Option(help="The most recent N rows.")] = 20,
    output_format: Annotated[str, typer.Option("--format", help="table, jsonl or csv.")] = "table",
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of the terminal.")] = None,
    compare_shadow: Annotated[
        bool, typer.Option(help="Pair each decision with its shadow's outputs and summarise how they differ.")
    ] = False,
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
    if compare_shadow:
        _compare_shadow(settings, parsed.name, version, since, request_id, limit, output_format, output)
        return
    rows = read_predictions(settings, parsed.name, version, since=since, request_id=request_id, decode=False)
    rows = rows.tail(limit)
    if output_format == "table":
        _print_table(rows)
        return
    frame = rows[[*_COLUMNS, "inputs", "outputs"]].assign(timestamp=rows["timestamp"].map(lambda t: t.isoformat()))
    frame["client_request_id"] = frame["client_request_id"].astype(object).where(frame["client_request_id"].notna())
    if output_format == "csv":
        text = frame.to_csv(index=False)
    else:
        records = frame.to_dict(orient="records")
        decoded = ({**r, "inputs": orjson.loads(r["inputs"]), "outputs": orjson.loads(r["outputs"])} for r in records)
        text = "".join(orjson.dumps(r).decode() + "\n" for r in decoded)
    _write(text, output, len(frame))


def _write(text: str, output: Path | None, rows: int) -> None:
    """``text`` to the terminal (control characters escaped) or atomically to ``output``."""
    if output is None:
        sys.stdout.write(terminal_safe(text, keep_newlines=True))
        return
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text)
    tmp.replace(output)
    out.print(f"wrote {rows} rows to {escape(str(output))}", highlight=False)


def _compare_shadow(
    settings: Settings,
    model: str,
    version: int | None,
    since: dt.datetime | None,
    request_id: str | None,
    limit: int,
    output_format: str,
    output: Path | None,
) -> None:
    """``predictions --compare-shadow``: the decisions of ``model`` (of ``version`` when a
    ref named one) beside their shadow's outputs; the summary covers every pair, the table
    the most recent ``limit``."""
    from scoregate.registry.predictions import read_predictions
    from scoregate.registry.shadow import compare_shadow

    rows = read_predictions(settings, model, since=since, request_id=request_id)
    comparison = compare_shadow(rows, version)
    pairs = comparison.pairs.tail(limit)
    if output_format == "table":
        for line in comparison.summary_lines():
            out.print(escape(terminal_safe(line)), highlight=False)
        if pairs.empty:
            return
        table = Table("time (UTC)", "request id", "row", "version", "outputs", "shadow", "shadow outputs")
        for r in pairs.itertuples():
            table.add_row(
                f"{r.timestamp:%Y-%m-%d %H:%M:%S}",
                escape(terminal_safe(r.request_id)),
                str(r.row),
                str(r.primary_version),
                escape(terminal_safe(_short(orjson.dumps(r.primary_outputs).decode()))),
                str(r.shadow_version),
                escape(terminal_safe(_short(orjson.dumps(r.shadow_outputs).decode()))),
            )
        out.print(table)
        return
    frame = pairs.assign(timestamp=pairs["timestamp"].map(lambda t: t.isoformat()))
    frame["client_request_id"] = frame["client_request_id"].astype(object).where(frame["client_request_id"].notna())
    if output_format == "csv":
        encoded = frame.assign(
            primary_outputs=frame["primary_outputs"].map(lambda o: orjson.dumps(o).decode()),
            shadow_outputs=frame["shadow_outputs"].map(lambda o: orjson.dumps(o).decode()),
        )
        text = encoded.to_csv(index=False)
    else:
        text = "".join(orjson.dumps(r).decode() + "\n" for r in frame.to_dict(orient="records"))
    _write(text, output, len(frame))


def terminal_safe(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control or formatting character (escape sequences, bidi overrides)
    shown as a ``\\uXXXX`` escape, so what the log holds cannot drive the terminal. Inside
    JSON strings the escape reads back as the same character."""
    out = []
    for char in text:
        if (char == "\n" and keep_newlines) or not _unsafe(char):
            out.append(char)
        else:
            out.append(f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}")
    return "".join(out)


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _print_table(rows: Any) -> None:
    if rows.empty:
        out.print("no logged predictions match")
        return
    table = Table("time (UTC)", "version", "request id", "client id", "row", "latency ms", "inputs", "outputs")
    for r in rows.itertuples():
        client = r.client_request_id if isinstance(r.client_request_id, str) else ""
        table.add_row(
            f"{r.timestamp:%Y-%m-%d %H:%M:%S}",
            f"{r.version}{' (shadow)' if r.shadow else ''}",
            escape(terminal_safe(r.request_id)),
            escape(terminal_safe(client)),
            str(r.row),
            f"{r.latency_ms:.2f}",
            escape(terminal_safe(_short(r.inputs))),
            escape(terminal_safe(_short(r.outputs))),
        )
    out.print(table)


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
