"""``scoregate audit``: verify the hash-chained audit log (and the rows it covers), anchor it,
export it, list its events."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy import select

from scoregate.cli.app import app, err, get_registry, out, pairs
from scoregate.errors import ConflictError, InvalidInputError
from scoregate.governance.anchors import DEFAULT_HMAC_ENV, MAX_TIMEOUT

if TYPE_CHECKING:
    from scoregate.governance.checkpoint import AnchorKey, Checkpoint

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log: verify, anchor, export, list.")
app.add_typer(audit_app, name="audit", rich_help_panel="Governance")

#: Exit code when the chain does not verify.
CHAIN_BROKEN = 1


@audit_app.command("verify")
def audit_verify(
    anchor: Annotated[
        list[Path] | None,
        typer.Option(help="A checkpoint from `audit anchor` to hold the chain to (repeat for several)."),
    ] = None,
    public_key: Annotated[
        Path | None, typer.Option(help="Public key that checks Ed25519 anchors (from `audit keygen`).")
    ] = None,
    hmac_env: Annotated[
        str | None, typer.Option(help=f"Environment variable with the HMAC secret (default {DEFAULT_HMAC_ENV}).")
    ] = None,
) -> None:
    """Recompute the hash chain, compare every audited row with it, check the append-only
    triggers and the anchors; exit 1 naming every problem."""
    from scoregate.governance.audit import verify

    checkpoints = _checked_anchors(anchor or [], public_key, hmac_env)
    registry = get_registry()
    try:
        if hasattr(registry, "verify_audit"):  # a client of the registry service: it verifies
            result = registry.verify_audit(checkpoints)
        else:
            result = verify(registry.engine, anchors=checkpoints)
    finally:
        registry.close()
    if result.ok:
        out.print(
            f"{result.checked} events, chain intact; {result.rows} audited rows match it; "
            "append-only triggers in place",
            highlight=False,
        )
        for item in checkpoints:
            out.print(f"anchor at event {item.seq} ({item.time}, {item.key_id}) holds", highlight=False)
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


def _checked_anchors(files: list[Path], public_key: Path | None, hmac_env: str | None) -> list[Checkpoint]:
    """The anchors whose signatures verify; exit 1 on the first that does not (a forged anchor)."""
    from scoregate.governance import anchors
    from scoregate.governance.checkpoint import Scheme, signature_problem

    if (public_key is not None or hmac_env is not None) and not files:
        raise InvalidInputError("--public-key and --hmac-env check anchors: give --anchor FILE as well")
    keys: dict[Scheme, AnchorKey] = {}
    found = []
    for path in files:
        item = anchors.read_checkpoint(path)
        if item.scheme not in keys:
            if item.scheme is Scheme.ED25519:
                if public_key is None:
                    raise InvalidInputError(f"{path} is signed with Ed25519: give --public-key FILE to check it")
                keys[item.scheme] = anchors.read_public_key(public_key)
            else:
                keys[item.scheme] = anchors.hmac_key_from_env(hmac_env)
        problem = signature_problem(item, keys[item.scheme])
        if problem is not None:
            err.print(
                f"[red]anchor refused:[/] {escape(str(path))}: {escape(problem)}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(CHAIN_BROKEN)
        found.append(item)
    return found


@audit_app.command("anchor")
def audit_anchor(
    key: Annotated[Path | None, typer.Option(help="Ed25519 private key file that signs (from `audit keygen`).")] = None,
    hmac_env: Annotated[
        str | None,
        typer.Option(
            help=f"Sign with HMAC-SHA256, the secret in this environment variable (default {DEFAULT_HMAC_ENV})."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the checkpoint to this new file.")
    ] = None,
    to: Annotated[
        list[str] | None,
        typer.Option(help="Also send it to an http(s) webhook, or write it once into a folder or bucket (s3://...)."),
    ] = None,
    option: Annotated[
        list[str] | None, typer.Option(help="fsspec storage option for --to, KEY=VALUE (e.g. endpoint_url=...).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each --to destination has to take the anchor.")] = 10.0,
) -> None:
    """Verify the chain and write a signed checkpoint of its head (seq and hash), to be kept
    outside the database: `audit verify --anchor FILE` then catches a rewritten or cut chain."""
    from scoregate.governance import anchors, checkpoint
    from scoregate.governance.audit import verify

    if key is not None and hmac_env is not None:
        raise InvalidInputError("give either --key FILE or --hmac-env VAR, not both")
    if not 0 < timeout <= MAX_TIMEOUT:
        raise InvalidInputError(f"invalid --timeout {timeout}: must be more than 0 and at most {MAX_TIMEOUT:g} s")
    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        raise InvalidInputError(f"cannot write {output}: give a new file in an existing folder")
    signer = anchors.read_private_key(key) if key is not None else anchors.hmac_key_from_env(hmac_env)
    storage = pairs(option, "--option")
    registry = get_registry()
    try:
        result = verify(registry.engine)
    finally:
        registry.close()
    if not result.ok:
        reasons = [result.reason] if result.reason else []
        listing = "; ".join([*reasons, *(m.message for m in result.mismatches), *result.problems][:3])
        raise ConflictError(f"the audit log does not verify, so it is not anchored: {listing}")
    made = checkpoint.sign(result.checked, result.last_hash, signer)
    text = made.to_json()
    if output is not None:
        anchors.write_once(output, (text + "\n").encode())
        err.print(f"wrote {escape(str(output))}", highlight=False)
    for destination in to or []:
        err.print(escape(anchors.publish(made, destination, timeout=timeout, options=storage)), highlight=False)
    if output is None and not to:
        sys.stdout.write(text + "\n")
    err.print(f"anchored event {made.seq} (hash {made.hash[:16]}…) with {made.key_id}", highlight=False)


@audit_app.command("keygen")
def audit_keygen(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the new key pair.")],
) -> None:
    """Write a new Ed25519 key pair for anchors: keep the private key away from the database's owner."""
    from scoregate.governance.anchors import write_keypair

    private, public = write_keypair(output)
    out.print(f"private key {escape(str(private))} (mode 0600; signs anchors: keep it secret)", highlight=False)
    out.print(
        f"public key  {escape(str(public))} (checks anchors: `audit verify --anchor ... --public-key`)", highlight=False
    )


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
