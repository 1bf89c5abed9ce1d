"""``scoregate labels``: ingest ground-truth labels for a model's logged decisions, and list them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from scoregate.cli.app import app, get_registry, out
from scoregate.errors import InvalidInputError

labels_app = typer.Typer(no_args_is_help=True, help="Ground-truth labels: ingest them, list the batches stored.")
app.add_typer(labels_app, name="labels", rich_help_panel="Monitoring")


@labels_app.command("ingest")
def ingest(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@ALIAS (labels belong to the model).")],
    file: Annotated[Path, typer.Argument(help="The labels (Parquet or CSV).")],
    id_column: Annotated[str, typer.Option("--id", help="Column of the request id (or business key) a label is for.")],
    label_column: Annotated[str, typer.Option("--label", help="Column of the label (a class, or a value).")],
    at_column: Annotated[
        str | None, typer.Option("--at", help="Column of when the outcome was observed (default: now).")
    ] = None,
    row_column: Annotated[
        str | None, typer.Option("--row", help="Column of the row within a request of several (default: 0).")
    ] = None,
    key: Annotated[
        str,
        typer.Option(help="What --id holds: 'request' (the server's or client's request id) or 'input.FIELD'."),
    ] = "request",
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace stored labels that differ (audited with the count).")
    ] = False,
) -> None:
    """Validate FILE and store its labels once; a different second label for an id is a conflict."""
    from scoregate.monitoring.labels import LabelColumns, check_key
    from scoregate.monitoring.labels import ingest as run
    from scoregate.refs import ModelRef

    ModelRef.parse(ref)
    try:
        check_key(key)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    if row_column is not None and key != "request":
        raise InvalidInputError("--row goes with --key request: a business key names one row itself")
    registry = get_registry()
    try:
        result = run(
            registry,
            ref,
            file,
            LabelColumns(id=id_column, label=label_column, at=at_column, row=row_column),
            key=key,
            replace=replace,
        )
    finally:
        registry.close()
    if result.digest is None:
        out.print(
            f"all {result.rows:,} labels were already stored for {escape(result.model)}; nothing recorded",
            highlight=False,
        )
        return
    extra = []
    if result.replaced:
        extra.append(f"{result.replaced:,} replaced")
    if result.unchanged:
        extra.append(f"{result.unchanged:,} already stored")
    more = f" ({', '.join(extra)})" if extra else ""
    out.print(
        f"stored {result.stored:,} of {result.rows:,} labels for [bold]{escape(result.model)}[/]{more}: "
        f"batch sha256:{result.digest[:12]}",
        highlight=False,
    )


@labels_app.command("list")
def list_batches(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@ALIAS.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The label batches stored for a model, oldest first (each file re-hashed)."""
    from scoregate.monitoring.labels import stored_labels

    registry = get_registry()
    try:
        version = registry.resolve(ref)
        found, _ = stored_labels(registry, version.name)
    finally:
        registry.close()
    if as_json:
        rows = [
            {"seq": b.seq, "time": b.time.isoformat(), "actor": b.actor, "digest": b.digest, "labels": b.rows}
            for b in found
        ]
        out.print_json(json.dumps(rows))
        return
    if not found:
        out.print(f"no labels stored for {escape(version.name)}")
        return
    table = Table("time (UTC)", "by", "batch", "labels", "key", title=escape(version.name))
    for b in found:
        table.add_row(f"{b.time:%Y-%m-%d %H:%M:%S}", escape(b.actor), f"sha256:{b.digest[:12]}", f"{b.rows:,}", b.key)
    out.print(table)
