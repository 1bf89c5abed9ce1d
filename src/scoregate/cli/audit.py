"""``scoregate audit``: verify the hash-chained audit log, export it, list its events."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy import select

from scoregate.cli.app import app, err, get_registry, out
from scoregate.errors import InvalidInputError

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log: verify, export, list.")
app.add_typer(audit_app, name="audit", rich_help_panel="Governance")

#: Exit code when the chain does not verify.
CHAIN_BROKEN = 1


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain, compare every audited row with it and check the append-only
    triggers; exit 1 naming every problem."""
    from scoregate.governance.audit import verify

    registry = get_registry()
    try:
        result = verify(registry.engine)
    finally:
        registry.close()
    if result.ok:
        out.print(
            f"{result.checked} events, chain intact; {result.rows} audited rows match it; "
            "append-only triggers in place",
            highlight=False,
        )
        return
    if result.reason is not None:
        err.print(
            f"[red]audit chain broken[/] at event seq {result.first_bad_seq}: {escape(result.reason)} "
            f"({result.checked} events before it verify)",
            highlight=False,
            soft_wrap=True,
        )
    else:
        out.print(f"{result.checked} events, chain intact", highlight=False)
    for line in [m.message for m in result.mismatches] + list(result.problems):
        err.print(f"[red]tampered:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(CHAIN_BROKEN)


@audit_app.command("export")
def audit_export(
    file: Annotated[Path, typer.Argument(help="JSON Lines file to write (one canonical event per line).")],
) -> None:
    """Write every event as canonical JSON Lines; keep the printed last hash elsewhere to anchor the chain."""
    from scoregate.governance.audit import export

    if file.is_dir():
        raise InvalidInputError(f"{file} is a folder: give a file name")
    if not file.parent.is_dir():
        raise InvalidInputError(f"folder {file.parent} does not exist")
    registry = get_registry()
    try:
        summary = export(registry.engine, file)
    finally:
        registry.close()
    out.print(f"wrote {summary.events} events to {escape(str(file))}", highlight=False)
    out.print(f"last seq {summary.last_seq}, last hash {summary.last_hash}", highlight=False)


@audit_app.command("log")
def audit_log(
    subject: Annotated[str | None, typer.Option(help="Only events about this subject, e.g. credit-risk@3.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. alias.set, evidence.attach.")] = None,
    request_id: Annotated[
        str | None, typer.Option(help="Only the events of one command or request (its request id).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Show the last N matching events.")] = 50,
) -> None:
    """List the most recent events (oldest of them first)."""
    from scoregate.registry.tables import AuditEventRow

    if limit < 1:
        raise InvalidInputError(f"invalid --limit {limit}: must be at least 1")
    query = select(AuditEventRow).order_by(AuditEventRow.seq.desc()).limit(limit)
    if subject is not None:
        query = query.where(AuditEventRow.subject == subject)
    if action is not None:
        query = query.where(AuditEventRow.action == action)
    if request_id is not None:
        query = query.where(AuditEventRow.request_id == request_id)
    registry = get_registry()
    try:
        with registry.reading() as session:
            rows = list(reversed(session.scalars(query).all()))
    finally:
        registry.close()
    if not rows:
        out.print("no matching audit events")
        return
    table = Table("seq", "time (UTC)", "actor", "action", "subject", "change", "reason", "request id")
    for row in rows:
        table.add_row(
            str(row.seq),
            f"{row.time:%Y-%m-%d %H:%M:%S}",
            escape(row.actor),
            escape(row.action),
            escape(row.subject),
            escape(_change(row.before, row.after)),
            escape(row.reason or ""),
            escape(row.request_id or ""),
        )
    out.print(table)


def _change(before: str | None, after: str | None, width: int = 80) -> str:
    """``before -> after`` in compact JSON, shortened to ``width`` characters."""
    if before is None:
        text = _compact(after) if after is not None else ""
    else:
        text = f"{_compact(before)} -> {_compact(after) if after is not None else 'null'}"
    return text if len(text) <= width else text[: width - 1] + "…"


def _compact(stored: str) -> str:
    try:
        return orjson.dumps(orjson.loads(stored)).decode()
    except orjson.JSONDecodeError:
        return stored


__all__ = ["audit_app"]
