"""Governance commands: init, users, tokens, evidence, approve, policy, exceptions,
alias history and rollback, retention, inventory, model cards, environment export."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from scoregate.cli.app import alias_app, app, get_registry, governance_for, out, read_text_file
from scoregate.errors import InvalidInputError
from scoregate.refs import ModelRef

users_app = typer.Typer(no_args_is_help=True, help="Users and their roles.")
tokens_app = typer.Typer(no_args_is_help=True, help="API tokens: issue, list, revoke.")
evidence_app = typer.Typer(no_args_is_help=True, help="Evidence: recorded runs and attached documents.")
policy_app = typer.Typer(no_args_is_help=True, help="The governance policy in force.")
hold_app = typer.Typer(no_args_is_help=True, help="Legal holds (block deletion).")
env_app = typer.Typer(no_args_is_help=True, help="Recorded environments.")
webhooks_app = typer.Typer(no_args_is_help=True, help="Signed webhooks fed from the audit log (outbox).")
app.add_typer(users_app, name="users", rich_help_panel="Governance")
app.add_typer(tokens_app, name="tokens", rich_help_panel="Governance")
app.add_typer(evidence_app, name="evidence", rich_help_panel="Governance")
app.add_typer(policy_app, name="policy", rich_help_panel="Governance")
app.add_typer(hold_app, name="hold", rich_help_panel="Governance")
app.add_typer(env_app, name="env", rich_help_panel="Governance")
app.add_typer(webhooks_app, name="webhooks", rich_help_panel="Governance")


def governance():  # type: ignore[no-untyped-def]
    return governance_for(get_registry())


def parse_when(text: str, option: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"invalid {option} {text!r}: expected an ISO date or date-time, e.g. 2026-06-30"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@app.command(rich_help_panel="Governance")
def init(name: Annotated[str, typer.Option(help="Name of the first admin.")] = "admin") -> None:
    """Create the first admin and print its API token once. Mutations need a token from then on."""
    token = governance().init(name)
    out.print(f"created admin [bold]{name}[/]. Its API token, shown only now:")
    sys.stdout.write(token + "\n")
    out.print("Set it as SCOREGATE_TOKEN (or `token` in the config file).")


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument()],
    role: Annotated[list[str], typer.Option(help="viewer, developer, validator, deployer or admin (repeatable).")],
    expires_days: Annotated[int, typer.Option(help="Lifetime of the first token.")] = 90,
) -> None:
    """Add a user with roles and print their first token once."""
    token = governance().add_user(name, role, expires_in_days=expires_days)
    out.print(f"added user [bold]{name}[/] ({', '.join(role)}). Token, shown only now:")
    sys.stdout.write(token + "\n")


@users_app.command("list")
def users_list() -> None:
    table = Table("user", "roles", "created")
    for user in governance().list_users():
        table.add_row(user["name"], ", ".join(user["roles"]), f"{user['created_at']:%Y-%m-%d}")
    out.print(table)


@tokens_app.command("issue")
def tokens_issue(
    user: Annotated[str, typer.Argument()],
    expires_days: Annotated[int, typer.Option()] = 90,
    description: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Issue a new token for a user (admin); printed once."""
    sys.stdout.write(governance().issue_token(user, expires_in_days=expires_days, description=description) + "\n")


@tokens_app.command("revoke")
def tokens_revoke(prefix: Annotated[str, typer.Argument(help="The token, or its first 10 characters.")]) -> None:
    governance().revoke_token(prefix)
    out.print(f"revoked {prefix[:10]}…")


@tokens_app.command("list")
def tokens_list() -> None:
    table = Table("token", "user", "created", "expires", "revoked", "description")
    for t in governance().list_tokens():
        table.add_row(
            f"{t['prefix']}…",
            t["user"],
            f"{t['created_at']:%Y-%m-%d}",
            f"{t['expires_at']:%Y-%m-%d}" if t["expires_at"] else "never",
            f"{t['revoked_at']:%Y-%m-%d}" if t["revoked_at"] else "",
            t["description"] or "",
        )
    out.print(table)


@evidence_app.command("attach")
def evidence_attach(
    ref: Annotated[str, typer.Argument()],
    kind: Annotated[str, typer.Argument(help="document or external (runs record validation, loadtest, profile).")],
    file: Annotated[Path, typer.Argument()],
) -> None:
    """Attach a document; it counts only where the policy names its kind and a validator accepted it."""
    record = governance().attach_evidence(ref, kind, file)
    out.print(
        f"attached {record['kind']} #{record['id']} sha256:{record['digest'][:12]} to {escape(ref)} (uploaded)",
        highlight=False,
    )


@evidence_app.command("accept")
def evidence_accept(
    ref: Annotated[str, typer.Argument()],
    evidence_id: Annotated[int, typer.Argument(help="The id `scoregate evidence list` shows.")],
    reason: Annotated[str, typer.Option()],
) -> None:
    """Accept an uploaded document as evidence (a validator other than its uploader)."""
    record = governance().accept_evidence(ref, evidence_id, reason=reason)
    out.print(f"accepted {record['kind']} #{record['id']} on {escape(ref)}", highlight=False)


@evidence_app.command("list")
def evidence_list(ref: Annotated[str, typer.Argument()]) -> None:
    """The version's evidence: recorded runs and uploads, and whether each counts under the policy."""
    table = Table("id", "kind", "origin", "counts", "author", "date", "document", "why not")
    for e in governance().evidence(ref):
        origin = e["origin"] + (f", accepted by {e['accepted_by']}" if e["accepted_by"] else "")
        table.add_row(
            str(e["id"]),
            e["kind"],
            escape(origin),
            "yes" if e["counts"] else "no",
            escape(e["author"]),
            f"{e['created_at']:%Y-%m-%d %H:%M}",
            f"{escape(e['name'])} sha256:{e['digest'][:12]}",
            escape("; ".join(e["problems"][:2])),
        )
    out.print(table)


@app.command("mark-validated", rich_help_panel="Governance")
def mark_validated(ref: Annotated[str, typer.Argument()], reason: Annotated[str | None, typer.Option()] = None) -> None:
    """Record that a version is validated, on a recorded validation run that meets its tier's rules."""
    status = governance().mark_validated(ref, reason=reason)
    out.print(f"{ref}: {status}")


@app.command(rich_help_panel="Governance")
def approve(ref: Annotated[str, typer.Argument()], reason: Annotated[str, typer.Option()]) -> None:
    """Approve a validated version (four-eyes: not its registrant nor its validator)."""
    status = governance().approve(ref, reason=reason)
    out.print(f"{ref}: {status}")


@app.command(rich_help_panel="Governance")
def decisions(ref: Annotated[str, typer.Argument()]) -> None:
    """The lifecycle decisions of a version: who, when, why, on which evidence."""
    table = Table("when", "action", "status", "by", "reason", "evidence")
    for d in governance().decisions(ref):
        table.add_row(
            f"{d['at']:%Y-%m-%d %H:%M:%S}",
            d["action"],
            f"{d['from']} → {d['to']}",
            d["actor"],
            d["reason"] or "",
            ", ".join(map(str, d["evidence"])),
        )
    out.print(table)


@app.command(rich_help_panel="Governance")
def check(ref: Annotated[str, typer.Argument()], alias: Annotated[str, typer.Option()] = "production") -> None:
    """List what the policy is missing before ALIAS may point at REF (exit 5 when something is)."""
    missing = governance().check(ref, alias)
    if not missing:
        out.print(f"{ref} meets the policy for {alias}")
        return
    for item in missing:
        out.print(escape(f"- [{item['rule']}] {item['message']}"), highlight=False, soft_wrap=True)
    raise typer.Exit(5)


@policy_app.command("show")
def policy_show() -> None:
    number, document = governance().policy()
    out.print(f"# policy version {number}{' (built-in default)' if number == 0 else ''}", highlight=False)
    sys.stdout.write(document)


@policy_app.command("set")
def policy_set(file: Annotated[Path, typer.Argument()], reason: Annotated[str, typer.Option()]) -> None:
    """Put a new policy in force, or propose it when the policy asks for a second admin (admin)."""
    document = read_text_file(file, "policy file")
    change = governance().set_policy(document, reason=reason)
    if change.version is None:
        out.print(
            f"policy proposal {change.proposal} awaits a second admin: `scoregate policy approve {change.proposal} "
            "--reason ...`"
        )
    else:
        out.print(f"policy version {change.version} in force")


@policy_app.command("approve")
def policy_approve(proposal: Annotated[int, typer.Argument()], reason: Annotated[str, typer.Option()]) -> None:
    """Put a proposed policy in force (an admin other than its author)."""
    change = governance().approve_policy(proposal, reason=reason)
    out.print(f"policy proposal {proposal} approved: policy version {change.version} in force")


@policy_app.command("reject")
def policy_reject(proposal: Annotated[int, typer.Argument()], reason: Annotated[str, typer.Option()]) -> None:
    """Turn a proposed policy down (any admin; its author withdraws it this way)."""
    governance().reject_policy(proposal, reason=reason)
    out.print(f"policy proposal {proposal} rejected")


@policy_app.command("proposals")
def policy_proposals(all_: Annotated[bool, typer.Option("--all", help="Decided proposals too.")] = False) -> None:
    """Policy changes waiting for a second admin."""
    table = Table("id", "status", "author", "proposed", "reason", "digest", "decided by")
    for p in governance().policy_proposals(pending_only=not all_):
        table.add_row(
            str(p["id"]),
            p["status"],
            escape(p["author"]),
            f"{p['created_at']:%Y-%m-%d %H:%M}",
            escape(p["reason"]),
            p["digest"][:12],
            escape(p["decided_by"] or ""),
        )
    out.print(table)


@app.command("exception", rich_help_panel="Governance")
def grant_exception(
    ref: Annotated[str, typer.Argument()],
    rule: Annotated[str, typer.Argument(help="evidence:<kind>, approvals or revalidation")],
    reason: Annotated[str, typer.Option()],
    expires: Annotated[str, typer.Option(help="ISO date the exception ends.")],
) -> None:
    """Grant a recorded, expiring exception to one policy rule for one version."""
    governance().grant_exception(ref, rule, reason=reason, expires_at=parse_when(expires, "--expires"))
    out.print(f"exception to {rule} granted for {ref} until {expires}")


@hold_app.command("place")
def hold_place(ref: Annotated[str, typer.Argument()], reason: Annotated[str, typer.Option()]) -> None:
    governance().legal_hold(ref, reason=reason)
    out.print(f"legal hold placed on {ref}")


@hold_app.command("release")
def hold_release(ref: Annotated[str, typer.Argument()], reason: Annotated[str, typer.Option()]) -> None:
    governance().release_hold(ref, reason=reason)
    out.print(f"legal hold released on {ref}")


@app.command(rich_help_panel="Governance")
def delete(ref: Annotated[str, typer.Argument()], reason: Annotated[str, typer.Option()]) -> None:
    """Delete a retired version's artifact after its retention period (leaves a tombstone)."""
    governance().delete(ref, reason=reason)
    out.print(f"deleted {ref} (tombstone kept in the registry and the audit log)")


@alias_app.command("history")
def alias_history(
    name: Annotated[str, typer.Argument()],
    alias: Annotated[str, typer.Argument()],
    at: Annotated[str | None, typer.Option(help="Only answer: which version held it at this time?")] = None,
) -> None:
    """Every move of an alias, or which version held it at a given time."""
    registry = get_registry()
    if at is not None:
        version = registry.alias_at(name, alias, parse_when(at, "--at"))
        out.print(f"{name}@{alias} at {at}: {'version ' + str(version) if version else 'no holder'}")
        return
    table = Table("when", "version", "by", "reason")
    for entry in registry.alias_history(name, alias):
        table.add_row(
            f"{entry['at']:%Y-%m-%d %H:%M:%S}",
            str(entry["version"] or "deleted"),
            entry["actor"],
            entry["reason"] or "",
        )
    out.print(table)


@alias_app.command("move")
def alias_move(
    moves: Annotated[list[str], typer.Argument(help="NAME@VERSION=ALIAS, several moved in one transaction.")],
    reason: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Move several aliases at once: all move or none does (never zero or two holders)."""
    registry = get_registry()
    parsed = []
    for move in moves:
        ref, sep, alias = move.partition("=")
        if not sep:
            raise InvalidInputError(f"invalid move {move!r}: expected NAME@VERSION=ALIAS")
        version = registry.resolve(ModelRef.parse(ref, require_selector=True))
        parsed.append((version.name, alias, version.version))
    for record in registry.move_aliases(parsed, reason=reason):
        out.print(f"{record.name}@{record.alias} → version {record.version}")


@app.command(rich_help_panel="Governance")
def rollback(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS to point back at its previous holder.")],
    reason: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Return an alias to the version that held it before."""
    parsed = ModelRef.parse(ref, require_selector=True)
    if parsed.alias is None:
        raise InvalidInputError(f"rollback needs NAME@ALIAS, got {ref!r}")
    record = get_registry().rollback(parsed.name, parsed.alias, reason=reason)
    out.print(f"{record.name}@{record.alias} → version {record.version}")


@app.command(rich_help_panel="Governance")
def inventory(
    at: Annotated[str | None, typer.Option(help="The state as it was at this date.")] = None,
    format: Annotated[str, typer.Option(help="table, csv or json.")] = "table",
) -> None:
    """Every model in use, in development or retired, with the fields regulators list."""
    if format not in ("table", "csv", "json"):
        raise InvalidInputError(f"invalid --format {format!r}: use table, csv or json")
    rows = governance().inventory(at=parse_when(at, "--at") if at else None)
    if format == "json":
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    if format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["model"])
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.write(buffer.getvalue())
        return
    table = Table("model", "status", "tier", "prod", "owner", "validator", "last validated", "next review", "complete")
    for r in rows:
        table.add_row(
            r["model"],
            r["status"],
            r["risk_tier"] or "",
            str(r["production_version"] or "-"),
            r["owner"] or "",
            r["validator"] or "",
            r["last_validated"] or "",
            (r["next_review"] or "") + (" OVERDUE" if r["overdue"] else ""),
            f"{r['completeness']:.0%}",
        )
    out.print(table)


@app.command(rich_help_panel="Governance")
def card(
    ref: Annotated[str, typer.Argument()],
    format: Annotated[str, typer.Option(help="md, html or cyclonedx.")] = "md",
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """The model card (Markdown or HTML) or a CycloneDX ML-BOM, generated from the records."""
    from scoregate.governance.card import card_facts, cyclonedx_bom, render_html, render_markdown

    if format not in ("md", "html", "cyclonedx"):
        raise InvalidInputError(f"invalid --format {format!r}: use md, html or cyclonedx")
    facts = card_facts(governance(), ref)
    if format == "cyclonedx":
        text = json.dumps(cyclonedx_bom(facts), indent=2)
    else:
        markdown = render_markdown(facts)
        text = markdown if format == "md" else render_html(markdown)
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        output.write_text(text)
        out.print(f"wrote {output}")


@env_app.command("export")
def env_export(
    ref: Annotated[str, typer.Argument()], output: Annotated[Path | None, typer.Option("--output", "-o")] = None
) -> None:
    """Write the pinned requirements of the environment recorded at registration."""
    from scoregate.governance.card import requirements_lock

    text = requirements_lock(get_registry().resolve(ref))
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        out.print(f"wrote {output}")


@webhooks_app.command("add")
def webhooks_add(
    url: Annotated[str, typer.Argument()],
    secret: Annotated[str, typer.Option(help="HMAC-SHA256 key (16+ characters) the receiver checks.")],
    action: Annotated[list[str] | None, typer.Option(help="Audit actions to send, globs (repeatable).")] = None,
) -> None:
    """Subscribe a URL to audit events (admin)."""
    number = governance().add_webhook(url, secret, action)
    out.print(f"webhook {number} → {url} ({', '.join(action or ['*'])})")


@webhooks_app.command("list")
def webhooks_list() -> None:
    table = Table("id", "url", "actions", "active", "created by")
    for sub in governance().webhooks():
        table.add_row(str(sub.id), sub.url, ", ".join(sub.actions), "yes" if sub.active else "no", sub.created_by)
    out.print(table)


@webhooks_app.command("remove")
def webhooks_remove(
    subscription: Annotated[int, typer.Argument()], reason: Annotated[str | None, typer.Option()] = None
) -> None:
    governance().remove_webhook(subscription, reason=reason)
    out.print(f"webhook {subscription} stopped")


@webhooks_app.command("deliver")
def webhooks_deliver(
    watch: Annotated[
        float | None,
        typer.Option(help="Keep delivering every SECONDS until SIGTERM or Ctrl-C (a service instead of cron)."),
    ] = None,
    max_attempts: Annotated[int, typer.Option(help="Attempts before an item is marked failed.")] = 5,
) -> None:
    """Send what the outbox holds; failures retry with backoff on later rounds."""
    if watch is not None and not watch > 0:
        raise InvalidInputError(f"invalid --watch {watch}: must be a positive number of seconds")
    if max_attempts < 1:
        raise InvalidInputError(f"invalid --max-attempts {max_attempts}: must be at least 1")
    gov = governance()
    if watch is None:
        report = gov.deliver_webhooks(max_attempts=max_attempts)
        out.print(f"delivered {report.delivered}, retrying {report.retrying}, failed {report.failed}")
        return
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    out.print(f"delivering every {watch:g} s until stopped")
    while not stop.is_set():
        report = gov.deliver_webhooks(max_attempts=max_attempts)
        if report.delivered or report.retrying or report.failed:
            out.print(f"delivered {report.delivered}, retrying {report.retrying}, failed {report.failed}")
        stop.wait(watch)
    out.print("stopped")
