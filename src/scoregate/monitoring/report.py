"""The monitoring report of a version: one self-contained HTML file and the JSON beside it.

Everything in it comes from the registry's records: the bound reference profile, the
stored drift results (read back and re-hashed), the history, performance results and
the alerts. The HTML has no scripts and no external assets; its charts are inline SVG
drawn here. It stays under ``MAX_HTML_BYTES`` whatever the number of columns or rows:
histograms are drawn for the most drifted columns first until a byte budget is spent,
tables and series are capped, and what was left out is said on the page (the JSON
holds every column).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scoregate.errors import NotFoundError
from scoregate.monitoring import alerting, feeds, store
from scoregate.monitoring.drift import DriftResult
from scoregate.monitoring.profile import ColumnProfile, ReferenceProfile
from scoregate.monitoring.svg import esc, line_chart, paired_bars
from scoregate.registry import Registry

MAX_HTML_BYTES = 5 * 1024 * 1024
#: Bytes of histograms drawn before the rest of the columns are only listed.
CHART_BUDGET = 5 * 1024 * 1024 // 2
MAX_TABLE_ROWS = 1_000
MAX_ALERT_ROWS = 100
NAME_CHARS = 80  # of a column name shown in a table or a chart title (the JSON has them whole)
MAX_HISTORY = 500  # results in the drift-over-time chart
LOADED_RESULTS = 30  # newest results read back for the per-column lines
LINES = 8  # columns drawn over time


@dataclass(frozen=True, slots=True)
class Written:
    html: Path
    json: Path
    html_bytes: int


# -- facts --------------------------------------------------------------------------------------------


def _bin_labels(column: ColumnProfile | None, size: int) -> list[str]:
    if column is None:
        return [str(i) for i in range(size)]
    if column.kind.value == "numeric" and column.coarse_edges:
        edges = column.coarse_edges
        inner = [f"{a:.3g}-{b:.3g}" for a, b in itertools.pairwise(edges)]
        return [f"<{edges[0]:.3g}", *inner, f">={edges[-1]:.3g}"]
    if column.kind.value == "categorical":
        return [column.levels[i] if i < len(column.levels) else "other" for i in range(size)]
    return [str(i) for i in range(size)]


def _result_facts(result: DriftResult, digest: str, profile: ReferenceProfile | None) -> dict[str, Any]:
    columns = []
    for c in result.columns:
        reference = None
        if profile is not None:
            try:
                reference = profile.column(c.name, c.role)
            except (KeyError, NotFoundError, ValueError):
                reference = None
        bins = c.current_bins or []
        columns.append(
            {
                "name": c.name,
                "role": c.role.value,
                "type": c.type.value,
                "statistic": c.statistic.value if c.statistic else None,
                "value": c.value,
                "threshold": c.calibration.critical_value if c.calibration else c.threshold,
                "p_adjusted": c.p_adjusted,
                "drifted": c.drifted,
                "note": c.note,
                "quality": c.quality.model_dump(mode="json"),
                "reference_bins": c.reference_bins,
                "current_bins": c.current_bins,
                "bin_labels": _bin_labels(reference, len(bins)) if bins else [],
            }
        )
    return {
        "digest": digest,
        "computed_at": result.computed_at.isoformat(),
        "current": result.current.model_dump(mode="json", exclude_none=True),
        "reference_rows": result.reference_rows,
        "alpha": result.settings.alpha,
        "calibrated": result.settings.calibrated,
        "columns": columns,
    }


def gather(registry: Registry, ref: str) -> dict[str, Any]:
    """Every fact the report shows, JSON-ready."""
    version = registry.resolve(ref)
    state = alerting.status(registry, version)
    try:
        bound = store.bound_reference(registry, version)
    except NotFoundError:
        bound = None
    profile = bound.profile if bound else None
    entries = store.history(registry, version)
    loaded = [(e, store.load_result(registry, e.result_digest)) for e in entries[-LOADED_RESULTS:]]
    latest = _result_facts(loaded[-1][1], loaded[-1][0].result_digest, profile) if loaded else None
    over_time: dict[str, list[float | None]] = {}
    if loaded:
        ranked = sorted((c for c in loaded[-1][1].columns if c.value is not None), key=lambda c: -(c.value or 0.0))[
            :LINES
        ]
        for column in ranked:
            key = f"{column.name} ({column.statistic.value if column.statistic else '?'})"
            points = []
            for _, result in loaded:
                match = next((c for c in result.columns if c.name == column.name and c.role == column.role), None)
                points.append(match.value if match is not None and match.statistic == column.statistic else None)
            over_time[key] = points
    performance = [
        {"computed_at": p.computed_at.isoformat(), "rows": p.rows, "metrics": dict(p.metrics), "digest": p.digest}
        for p in feeds.performance_history(registry, version)
    ]
    return {
        "format": "scoregate-monitoring-report/1",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "ref": version.ref,
        "status": state.as_json(),
        "reference": None
        if bound is None
        else {
            "digest": bound.digest,
            "rows": bound.profile.source.rows,
            "uri": bound.profile.source.uri,
            "sha256": bound.profile.source.sha256,
            "recorded_at": bound.recorded_at.isoformat(),
            "recorded_by": bound.recorded_by,
            "columns": len(bound.profile.columns),
        },
        "history": [
            {
                "time": e.time.isoformat(),
                "result_digest": e.result_digest,
                "rows": e.current.get("rows"),
                "columns": e.columns,
                "drifted": len(e.drifted),
                "drifted_columns": e.drifted[:20],
            }
            for e in entries[-MAX_HISTORY:]
        ],
        "results_recorded": len(entries),
        "over_time": {"x": [e.time.isoformat() for e, _ in loaded], "series": over_time},
        "latest_result": latest,
        "performance": performance,
    }


# -- HTML -----------------------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:72rem;margin:1.5rem auto;color:#222;padding:0 1rem}"
    "table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}td,th{border:1px solid #ccc;"
    "padding:.2rem .45rem;text-align:left;vertical-align:top}.bad{color:#b00;font-weight:600}.ok{color:#070}"
    ".grid{display:flex;flex-wrap:wrap;gap:.5rem}.note{color:#666;font-size:.85rem}code{background:#f4f4f4}"
)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return esc(value)


def _name(text: str) -> str:
    return esc(text if len(text) <= NAME_CHARS else text[: NAME_CHARS - 1] + "\u2026")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _alerts_section(status: dict[str, Any]) -> str:
    alerts = status["alerts"]
    if not alerts:
        return "<h2>Alerts</h2><p>No alert has fired for this version.</p>"
    rows = [
        [
            esc(a["kind"]),
            '<span class="bad">open</span>' if a["resolved_at"] is None else '<span class="ok">resolved</span>',
            esc(a["opened_at"][:19]),
            esc((a["resolved_at"] or "-")[:19]),
            esc(a["summary"][:200]) + "".join(f"<br>{esc(d[:160])}" for d in a["details"][:5]),
        ]
        for a in alerts[-MAX_ALERT_ROWS:]
    ]
    return "<h2>Alerts</h2>" + _table(["kind", "state", "opened (UTC)", "resolved (UTC)", "summary"], rows)


def _history_section(facts: dict[str, Any]) -> str:
    history = facts["history"]
    if not history:
        return "<h2>Drift over time</h2><p>No drift result recorded yet.</p>"
    share = [h["drifted"] / h["columns"] if h["columns"] else 0.0 for h in history]
    labels = [h["time"][:16] for h in history]
    parts = [
        "<h2>Drift over time</h2>",
        line_chart({"share of columns drifted": share}, labels, title="share of columns drifted, per stored result"),
    ]
    series = facts["over_time"]["series"]
    if series:
        x = [t[:16] for t in facts["over_time"]["x"]]
        parts.append(line_chart(series, x, title="deciding statistic of the most drifted columns", threshold=0.1))
    shown = (
        f"the last {len(history)} of {facts['results_recorded']}" if facts["results_recorded"] > len(history) else ""
    )
    if shown:
        parts.append(f"<p class='note'>Showing {esc(shown)} results.</p>")
    return "".join(parts)


def _columns_sections(latest: dict[str, Any], chart_budget: int) -> str:
    columns = sorted(latest["columns"], key=lambda c: (not c["drifted"], -(c["value"] or 0.0), c["name"]))
    rows = []
    for c in columns[:MAX_TABLE_ROWS]:
        verdict = "-" if c["drifted"] is None else ('<span class="bad">drifted</span>' if c["drifted"] else "ok")
        rows.append(
            [
                _name(c["name"]),
                esc(c["role"]),
                esc(c["type"]),
                esc(c["statistic"] or "-"),
                _fmt(c["value"]),
                _fmt(c["threshold"]),
                _fmt(c["p_adjusted"]),
                verdict,
                esc(c["note"] or ""),
            ]
        )
    current = latest["current"]
    parts = [
        "<h2>Latest drift result</h2>",
        f"<p>sha256:<code>{esc(latest['digest'][:16])}</code>, computed {esc(latest['computed_at'][:19])} UTC on "
        f"{current.get('rows', 0):,} rows of {esc(current.get('uri') or current.get('source', '-'))} against "
        f"{latest['reference_rows']:,} reference rows (alpha {latest['alpha']:g}"
        f"{', calibrated' if latest['calibrated'] else ''}).</p>",
        _table(["column", "role", "type", "statistic", "value", "threshold", "p adj.", "verdict", "note"], rows),
    ]
    if len(columns) > MAX_TABLE_ROWS:
        parts.append(f"<p class='note'>{len(columns) - MAX_TABLE_ROWS:,} more columns in report.json.</p>")
    parts.append("<h2>Reference and current distributions</h2><div class='grid'>")
    spent, drawn = 0, 0
    for c in columns:
        if not c["current_bins"] or not c["reference_bins"]:
            continue
        chart = paired_bars(
            c["reference_bins"], c["current_bins"], c["bin_labels"], title=f"{c['name'][:NAME_CHARS]} ({c['role']})"
        )
        if spent + len(chart) > chart_budget:
            break
        parts.append(chart)
        spent += len(chart)
        drawn += 1
    parts.append("</div>")
    charted = sum(1 for c in columns if c["current_bins"] and c["reference_bins"])
    if drawn < charted:
        parts.append(
            f"<p class='note'>Histograms of the {drawn:,} most drifted columns; {charted - drawn:,} more in "
            "report.json.</p>"
        )
    quality = []
    for c in columns[:MAX_TABLE_ROWS]:
        q = c["quality"]
        outside = None
        if q.get("below_range_share") is not None or q.get("above_range_share") is not None:
            outside = (q.get("below_range_share") or 0) + (q.get("above_range_share") or 0)
        quality.append(
            [
                _name(c["name"]),
                _pct(q.get("null_share_reference")),
                _pct(q.get("null_share_current")),
                _pct(outside),
                _pct(q.get("other_share_reference")),
                _pct(q.get("other_share_current")),
                f"{q.get('invalid_current', 0):,}",
            ]
        )
    parts += [
        "<h2>Data quality</h2>",
        _table(
            [
                "column",
                "nulls ref.",
                "nulls cur.",
                "outside ref. range",
                "other levels ref.",
                "other levels cur.",
                "invalid",
            ],
            quality,
        ),
    ]
    return "".join(parts)


def _performance_section(performance: list[dict[str, Any]]) -> str:
    if not performance:
        return "<h2>Performance</h2><p>No performance result recorded (labels not joined yet).</p>"
    names = sorted({n for p in performance for n in p["metrics"]})[:LINES]
    series = {n: [p["metrics"].get(n) for p in performance] for n in names}
    rows = [
        [esc(p["computed_at"][:19]), f"{p['rows']:,}"] + [_fmt(p["metrics"].get(n)) for n in names]
        for p in performance[-MAX_TABLE_ROWS:]
    ]
    return (
        "<h2>Performance</h2>"
        + line_chart(series, [p["computed_at"][:16] for p in performance], title="performance per recorded result")
        + _table(["computed (UTC)", "labelled rows", *names], rows)
    )


def render(facts: dict[str, Any], chart_budget: int = CHART_BUDGET) -> str:
    status = facts["status"]
    reference = facts["reference"]
    open_alerts = status["open_alerts"]
    summary = (
        f"<p class='bad'>{len(open_alerts)} open alert(s): {esc(', '.join(a['kind'] for a in open_alerts))}</p>"
        if open_alerts
        else "<p class='ok'>No open alert.</p>"
    )
    ref_line = (
        "<p>No reference profile recorded.</p>"
        if reference is None
        else f"<p>Reference profile sha256:<code>{esc(reference['digest'][:16])}</code>: {reference['rows']:,} rows "
        f"of {esc(reference['uri'] or '-')}, {reference['columns']} columns, recorded "
        f"{esc(reference['recorded_at'][:19])} UTC by {esc(reference['recorded_by'])}.</p>"
    )
    body = [
        f"<h1>Monitoring report: {esc(facts['ref'])}</h1>",
        f"<p class='note'>Generated {esc(facts['generated_at'][:19])} UTC from the scoregate registry; risk tier "
        f"{esc(status['tier'])}, monitoring policy version {status['policy_version']}.</p>",
        summary,
        ref_line,
        _alerts_section(status),
        _history_section(facts),
    ]
    if facts["latest_result"] is not None:
        body.append(_columns_sections(facts["latest_result"], chart_budget))
    body.append(_performance_section(facts["performance"]))
    head = f"<head><meta charset='utf-8'><title>{esc(facts['ref'])} monitoring</title><style>{_STYLE}</style></head>"
    page = f"<!doctype html><html>{head}<body>{''.join(body)}</body></html>"
    if len(page.encode()) > MAX_HTML_BYTES and chart_budget:  # the budgets keep below it; never past the bound
        return render(facts, chart_budget=0)
    return page


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def write_report(registry: Registry, ref: str, folder: Path) -> Written:
    facts = gather(registry, ref)
    page = render(facts).encode()
    folder.mkdir(exist_ok=True)
    html_path, json_path = folder / "report.html", folder / "report.json"
    _atomic_write(json_path, json.dumps(facts, indent=1, allow_nan=False).encode())
    _atomic_write(html_path, page)
    return Written(html_path, json_path, len(page))
