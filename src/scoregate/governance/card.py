"""Model cards (Markdown, HTML) and CycloneDX ML-BOM exports, generated from the records.

Nothing here is typed by hand: every line comes from the registry, so a card can be
regenerated at any time and always agrees with the evidence behind it.
"""

from __future__ import annotations

import datetime as dt
import html
import uuid
from typing import Any

from scoregate.governance.service import Governance
from scoregate.registry import ModelVersion


def card_facts(governance: Governance, ref: str) -> dict[str, Any]:
    registry = governance.registry
    version = registry.resolve(ref)
    model = next(m for m in registry.list_models() if m.name == version.name)
    history = {alias: registry.alias_history(version.name, alias) for alias in model.aliases}
    return {
        "version": version,
        "model": model,
        "evidence": governance.evidence(version.ref),
        "decisions": governance.decisions(version.ref),
        "alias_history": history,
        "check": governance.check(version.ref),
        "monitoring": _monitoring(registry, version.ref),
    }


def _monitoring(registry: Any, ref: str) -> dict[str, Any]:
    from scoregate.monitoring.alerting import brief

    return brief(registry, ref)


def render_markdown(facts: dict[str, Any]) -> str:
    v: ModelVersion = facts["version"]
    m = facts["model"]
    lines = [
        f"# Model card: {v.ref}",
        "",
        f"*Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC from the scoregate registry.*",
        "",
        "## Purpose",
        "",
        v.description or m.description or "_not recorded_",
        "",
        "| field | value |",
        "|---|---|",
        f"| owner | {m.owner or '-'} |",
        f"| risk tier | {m.risk_tier or '-'} |",
        f"| status | {v.status} |",
        f"| aliases | {', '.join(v.aliases) or '-'} |",
        f"| restrictions on use | {v.tags.get('restrictions', '-')} |",
        f"| limitations | {v.tags.get('limitations', '-')} |",
        "",
        "## Lineage",
        "",
        "| item | value |",
        "|---|---|",
        f"| artifact | `{v.artifact_name}` sha256:`{v.artifact_digest}` ({v.artifact_size} bytes, {v.flavor}) |",
        f"| training data | `{v.training_data_uri or '-'}` sha256:`{v.training_data_digest or '-'}` "
        f"({v.training_rows or 0} rows) |",
        f"| schema digest | `{v.training_schema_digest or '-'}` |",
        f"| code version | `{v.code_version or '-'}`{' (uncommitted changes)' if v.code_dirty else ''} |",
        f"| parent version | {v.parent_version or '-'} |",
        f"| registered | {v.created_at:%Y-%m-%d %H:%M} UTC by {v.created_by or '-'} |",
        f"| environment | Python {v.environment.get('python', '?')} on {v.environment.get('os', '?')} "
        f"{v.environment.get('machine', '')}; "
        + ", ".join(f"{k}=={val}" for k, val in v.environment.get("flavor_packages", {}).items())
        + " |",
        "",
        "## Inputs",
        "",
        "Validity rules refuse a request; the range and levels observed in training only flag a value "
        "outside them (it is scored and counted).",
        "",
        "| feature | type | nullable | validity rules | observed in training |",
        "|---|---|---|---|---|",
    ]
    for f in v.input_schema.features:
        if f.categories:
            rules = ", ".join(f.categories) + (" (unseen levels scored)" if f.unseen == "score" else "")
        else:
            rules = f.limits_text()
        nullable = "yes" if f.nullable else "no"
        lines.append(f"| {f.name} | {f.type.value} | {nullable} | {rules or '-'} | {f.observed_text() or '-'} |")
    lines += ["", "Outputs: " + (", ".join(f"`{o.name}` ({o.type.value})" for o in v.output_schema) or "-"), ""]
    lines += ["## Metrics", ""]
    lines += [f"- {k}: {val:g}" for k, val in v.metrics.items()] or ["_none recorded_"]
    lines += ["", "## Validation and evidence", ""]
    if facts["evidence"]:
        lines += [
            "| kind | origin | counts for the policy | author | date | document |",
            "|---|---|---|---|---|---|",
        ]
        for e in facts["evidence"]:
            counts = "yes" if e["counts"] else "no: " + "; ".join(e["problems"][:2])
            origin = "recorded run" if e["origin"] == "run" else f"uploaded, accepted by {e['accepted_by'] or 'nobody'}"
            lines.append(
                f"| {e['kind']} | {origin} | {counts} | {e['author']} | {e['created_at']:%Y-%m-%d} "
                f"| sha256:`{e['digest'][:16]}` |"
            )
    else:
        lines.append("_no evidence recorded_")
    lines += ["", "## Decisions", ""]
    if facts["decisions"]:
        lines += ["| date | action | status | by | reason |", "|---|---|---|---|---|"]
        for d in facts["decisions"]:
            lines.append(
                f"| {d['at']:%Y-%m-%d %H:%M} | {d['action']} | {d['from']} → {d['to']} | {d['actor']} "
                f"| {d['reason'] or ''} |"
            )
    else:
        lines.append("_no decisions recorded_")
    lines += ["", "## Alias history", ""]
    for alias, entries in facts["alias_history"].items():
        moves = "; ".join(
            f"{e['at']:%Y-%m-%d %H:%M} → {e['version'] if e['version'] is not None else 'deleted'} ({e['actor']})"
            for e in entries
        )
        lines.append(f"- **{alias}**: {moves}")
    if not facts["alias_history"]:
        lines.append("_no aliases_")
    lines += ["", "## Policy status (production)", ""]
    lines += [f"- missing: {item['message']}" for item in facts["check"]] or ["- meets the policy of its risk tier"]
    lines += ["", "## Monitoring", "", *_monitoring_lines(facts.get("monitoring")), ""]
    return "\n".join(lines)


def _monitoring_lines(found: dict[str, Any] | None) -> list[str]:
    if not found or (found["reference_digest"] is None and not found["results"] and not found["open_alerts"]):
        return ["_no monitoring records yet_"]
    last = found["last_drift"]
    lines = [
        "| item | value |",
        "|---|---|",
        f"| reference profile | sha256:`{(found['reference_digest'] or '-')[:16]}` |",
        f"| drift results recorded | {found['results']} |",
    ]
    if last is not None:
        drifted = ", ".join(last["drifted"][:10]) or "none"
        lines.append(
            f"| last drift result | {last['time'][:16]} UTC, {len(last['drifted'])} of {last['columns']} columns "
            f"drifted ({drifted}), sha256:`{last['result_digest'][:16]}` |"
        )
    alerts = found.get("open_alert_details", [])
    lines.append(f"| open alerts | {len(alerts) or 'none'} |")
    lines += ["", *[f"- open alert **{a['kind']}** since {a['opened_at'][:16]} UTC: {a['summary']}" for a in alerts]]
    return lines


def render_html(markdown: str) -> str:
    """A self-contained HTML page from the card's Markdown (tables, headings, lists)."""
    body: list[str] = []
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-"} for c in cells):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in cells) + "</tr>")
            else:
                body.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{_inline(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{_inline(line[3:])}</h2>")
        elif line.startswith("- "):
            body.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    if in_table:
        body.append("</table>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}"
        "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;"
        "text-align:left}code{background:#f4f4f4}"
    )
    head = f"<head><meta charset='utf-8'><title>model card</title><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{''.join(body)}</body></html>"


def _inline(text: str) -> str:
    escaped = html.escape(text)
    parts = escaped.split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    out = out.replace("**", "")
    return out.replace("_not recorded_", "<em>not recorded</em>")


def cyclonedx_bom(facts: dict[str, Any]) -> dict[str, Any]:
    """A CycloneDX 1.6 ML-BOM: the model, its training data and the pinned libraries."""
    v: ModelVersion = facts["version"]
    model_ref = f"model:{v.ref}"
    components: list[dict[str, Any]] = [
        {
            "type": "machine-learning-model",
            "bom-ref": model_ref,
            "name": v.name,
            "version": str(v.version),
            "description": v.description or "",
            "hashes": [{"alg": "SHA-256", "content": v.artifact_digest}],
            "properties": [
                {"name": "scoregate:flavor", "value": v.flavor},
                {"name": "scoregate:status", "value": v.status},
                {"name": "scoregate:risk_tier", "value": facts["model"].risk_tier or ""},
            ],
            "modelCard": {
                "modelParameters": {
                    "task": "classification"
                    if any(o.name.startswith("proba_") for o in v.output_schema)
                    else "regression",
                    "inputs": [{"format": f.type.value} for f in v.input_schema.features],
                    "outputs": [{"format": o.type.value} for o in v.output_schema],
                    "datasets": [{"ref": "data:training"}] if v.training_data_digest else [],
                },
                "quantitativeAnalysis": {
                    "performanceMetrics": [{"type": k, "value": str(val)} for k, val in v.metrics.items()]
                },
            },
        }
    ]
    if v.training_data_digest:
        components.append(
            {
                "type": "data",
                "bom-ref": "data:training",
                "name": v.training_data_uri or "training data",
                "hashes": [{"alg": "SHA-256", "content": v.training_data_digest}],
                "data": [{"type": "dataset", "name": "training", "contents": {"url": v.training_data_uri or ""}}],
            }
        )
    for name, version in sorted(v.environment.get("lock", {}).items()):
        components.append(
            {
                "type": "library",
                "bom-ref": f"pkg:pypi/{name}@{version}",
                "name": name,
                "version": version,
                "purl": f"pkg:pypi/{name}@{version}",
            }
        )
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'scoregate:' + v.ref + ':' + v.artifact_digest)}",
        "version": 1,
        "metadata": {
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "component": {
                "type": "machine-learning-model",
                "bom-ref": model_ref,
                "name": v.name,
                "version": str(v.version),
            },
        },
        "components": components,
    }


def requirements_lock(version: ModelVersion) -> str:
    """The pinned requirements file of the environment recorded at registration."""
    env = version.environment
    header = [
        f"# environment of {version.ref} (artifact sha256:{version.artifact_digest})",
        f"# python {env.get('python', '?')} on {env.get('os', '?')} {env.get('machine', '')}",
    ]
    pins = [f"{name}=={ver}" for name, ver in sorted(env.get("lock", {}).items()) if name != "scoregate"]
    return "\n".join(header + pins) + "\n"
