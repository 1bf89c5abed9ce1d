"""``scoregate monitor policy|evaluate|status|rules|dashboard|report``: alerts and reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from scoregate.cli.app import get_registry, out, read_text_file, writable_file
from scoregate.cli.monitoring import monitor_app
from scoregate.errors import InvalidInputError

policy_app = typer.Typer(no_args_is_help=True, help="The monitoring policy: alert thresholds per tier or version.")
monitor_app.add_typer(policy_app, name="policy")


def _write(text: str, output: Path | None, option: str) -> None:
    """Print ``text``, or write it to ``output`` atomically."""
    if output is None:
        out.print(text, markup=False, highlight=False, soft_wrap=True, end="")
        return
    writable_file(output, option)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)
    out.print(f"wrote {escape(str(output))}", highlight=False)


@policy_app.command("show")
def policy_show() -> None:
    """Print the monitoring policy in force (the built-in default until one is set)."""
    from scoregate.monitoring import alerting

    registry = get_registry()
    try:
        policy = alerting.policy_in_force(registry)
    finally:
        registry.close()
    out.print(f"# monitoring policy version {policy.version} sha256:{policy.digest[:12]}", highlight=False)
    out.print(policy.document, markup=False, highlight=False, end="")


@policy_app.command("set")
def policy_set(
    file: Annotated[Path, typer.Argument(help="The new monitoring policy (YAML).")],
    reason: Annotated[str, typer.Option(help="Why the thresholds change (recorded in the audit log).")],
) -> None:
    """Put a monitoring policy in force (admin; versioned and audited)."""
    from scoregate.monitoring import alerting

    document = read_text_file(file, "monitoring policy")
    registry = get_registry()
    try:
        policy = alerting.set_policy(registry, document, reason=reason)
    finally:
        registry.close()
    out.print(f"monitoring policy version {policy.version} in force (sha256:{policy.digest[:12]})", highlight=False)


@policy_app.command("history")
def policy_history() -> None:
    """Every monitoring policy put in force: who, when, why."""
    from scoregate.monitoring import alerting

    registry = get_registry()
    try:
        entries = alerting.policy_history(registry)
    finally:
        registry.close()
    table = Table("version", "time (UTC)", "by", "digest", "reason")
    for e in entries:
        table.add_row(
            str(e["version"]),
            f"{e['time']:%Y-%m-%d %H:%M:%S}",
            escape(e["author"]),
            f"sha256:{e['digest'][:12]}",
            escape(e["reason"] or ""),
        )
    out.print(table if entries else "no monitoring policy set: the built-in default is in force")


@monitor_app.command("evaluate")
def evaluate(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Evaluate the version's alerts from its records; fire or resolve them (audited, webhooks)."""
    from scoregate.monitoring import alerting

    registry = get_registry()
    try:
        changes = alerting.evaluate_version(registry, ref)
    finally:
        registry.close()
    if as_json:
        out.print_json(json.dumps([_change_json(c) for c in changes]))
        return
    print_changes(changes, ref)


def _change_json(change: Any) -> dict[str, Any]:
    return {
        "kind": change.kind.value,
        "transition": change.transition.value,
        "summary": change.verdict.summary,
        "details": list(change.verdict.details),
        "evidence": change.verdict.evidence,
    }


def print_changes(changes: list[Any], ref: str) -> None:
    if not changes:
        out.print(f"no alert changed for {escape(ref)}", highlight=False)
    for c in changes:
        colour = "red" if c.transition.value == "fire" else "green"
        verb = "fired" if c.transition.value == "fire" else "resolved"
        out.print(
            f"[{colour}]alert {c.kind.value} {verb}[/] for {escape(ref)}: {escape(c.verdict.summary)}",
            highlight=False,
        )


@monitor_app.command("status")
def status(
    ref: Annotated[
        str | None, typer.Argument(help="NAME@VERSION or NAME@ALIAS; every model's versions if omitted.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The monitoring status: reference profile, last drift result, open alerts, latest verdicts."""
    from scoregate.monitoring import alerting

    registry = get_registry()
    try:
        refs = [ref] if ref is not None else watched_refs(registry)
        statuses = [alerting.status(registry, r) for r in refs]
    finally:
        registry.close()
    if as_json:
        out.print_json(json.dumps([s.as_json() for s in statuses] if ref is None else statuses[0].as_json()))
        return
    if not statuses:
        out.print("no model versions registered")
        return
    table = Table("version", "tier", "reference", "last drift result", "open alerts", "latest verdicts")
    for s in statuses:
        last = s.last_result
        shown = "-" if last is None else f"{last.time:%Y-%m-%d %H:%M} {len(last.drifted)}/{last.columns} drifted"
        verdicts = ", ".join(
            f"{k.value} {'breached' if v.breached else 'ok'}"
            for k, v in s.verdicts.items()
            if v is not None and v.breached is not None
        )
        table.add_row(
            escape(s.ref),
            escape(s.tier),
            f"sha256:{s.reference_digest[:12]}" if s.reference_digest else "[yellow]none[/]",
            shown,
            "[red]"
            + escape(", ".join(f"{a.kind.value} since {a.opened_at:%Y-%m-%d %H:%M}" for a in s.open_alerts))
            + "[/]"
            if s.open_alerts
            else "none",
            escape(verdicts) or "-",
        )
    out.print(table)
    for s in statuses:
        for a in s.open_alerts:
            out.print(f"{escape(s.ref)} {a.kind.value}: {escape(a.summary)}", highlight=False)
            for detail in a.details[:5]:
                out.print(f"  {escape(detail)}", highlight=False)


def watched_refs(registry: Any) -> list[str]:
    """The versions worth a status line: each model's aliased versions and its latest."""
    refs = []
    for model in registry.list_models():
        numbers = sorted({*model.aliases.values(), *([model.latest_version] if model.latest_version else [])})
        refs += [f"{model.name}@{n}" for n in numbers]
    return refs


@monitor_app.command("rules")
def rules(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the rules file here.")] = None,
) -> None:
    """Prometheus alerting rules for the live gauges, from the monitoring policy in force."""
    from scoregate.monitoring import alerting
    from scoregate.monitoring.prometheus import rules_yaml
    from scoregate.monitoring.rules import MonitoringPolicy

    registry = get_registry()
    try:
        policy = alerting.policy_in_force(registry)
        tiers = {m.name: m.risk_tier for m in registry.list_models()}
    finally:
        registry.close()
    header = (
        f"# Prometheus alerting rules generated by `scoregate monitor rules` from monitoring policy version "
        f"{policy.version} (sha256:{policy.digest[:12]}); regenerate after a policy or tier change.\n"
    )
    _write(rules_yaml(MonitoringPolicy.parse(policy.document), tiers, header=header), output, "--output")


@monitor_app.command("dashboard")
def dashboard(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the dashboard JSON here.")] = None,
) -> None:
    """A Grafana dashboard (JSON) for the live monitoring metrics."""
    from scoregate.monitoring.prometheus import dashboard as build

    _write(json.dumps(build(), indent=2) + "\n", output, "--output")


@monitor_app.command("report")
def report(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The folder to write report.html and report.json.")],
) -> None:
    """A self-contained HTML report (and its JSON) of the version's monitoring records."""
    from scoregate.monitoring.report import write_report

    if output.exists() and not output.is_dir():
        raise InvalidInputError(f"invalid --output {output}: it is a file; give a folder")
    if not output.parent.is_dir():
        raise InvalidInputError(f"invalid --output {output}: the folder {output.parent} does not exist")
    registry = get_registry()
    try:
        written = write_report(registry, ref, output)
    finally:
        registry.close()
    out.print(
        f"wrote {escape(str(written.html))} ({written.html_bytes / 1024:.0f} KiB) and {escape(str(written.json))}",
        highlight=False,
    )
