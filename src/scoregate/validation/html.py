"""The validation report as one self-contained HTML page (no external assets)."""

from __future__ import annotations

import html
import math
from typing import Any

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:13px}
th{background:#f3f3f3}.pass{color:#176f2c;font-weight:600}.fail{color:#b00020;font-weight:600}.skip{color:#888}
.verdict{font-size:1.4em;padding:.4em .8em;display:inline-block;border-radius:4px}
.ok{background:#e3f5e7}.bad{background:#fde7ea}code{font-size:12px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def render_html(report: Any) -> str:
    counts = report.counts()
    verdict = "PASSED" if report.passed else "FAILED"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Validation of {_e(report.model)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Validation of {_e(report.model)}</h1>",
        f"<div class='verdict {'ok' if report.passed else 'bad'}'>{verdict}</div>",
        "<h2>Summary</h2><table>",
        f"<tr><th>model</th><td>{_e(report.model)}</td></tr>",
        f"<tr><th>artifact digest</th><td><code>{_e(report.artifact_digest)}</code></td></tr>",
        f"<tr><th>target</th><td>{_e(report.target)}</td></tr>",
        f"<tr><th>seed</th><td>{report.seed}</td></tr>",
        f"<tr><th>timeout per case</th><td>{report.timeout_s:g} s</td></tr>",
        f"<tr><th>started</th><td>{_e(report.started_at)}</td></tr>",
        f"<tr><th>duration</th><td>{report.duration_s:.2f} s</td></tr>",
        f"<tr><th>cases</th><td><span class='pass'>{counts['pass']} passed</span>, "
        f"<span class='fail'>{counts['fail']} failed</span>, "
        f"<span class='skip'>{counts['skip']} skipped</span></td></tr>",
        "</table>",
    ]
    p = report.parity
    parts += [
        "<h2>Parity</h2><table>",
        f"<tr><th>reference</th><td>{_e(p.reference)}</td></tr>",
        f"<tr><th>tolerance</th><td>|target - reference| &le; {p.atol:g} + {p.rtol:g}&middot;|reference|</td></tr>",
        f"<tr><th>rows compared</th><td>{p.rows_compared} ({p.values_compared} values)</td></tr>",
        f"<tr><th>mismatches</th><td class='{'pass' if p.passed else 'fail'}'>{p.mismatches}</td></tr>",
        f"<tr><th>largest difference</th><td>{_fmt(p.max_difference)}</td></tr>",
    ]
    if p.error:
        parts.append(f"<tr><th>error</th><td class='fail'>{_e(p.error)}</td></tr>")
    parts.append("</table>")
    if p.worst:
        parts.append(
            "<h3>Worst differences</h3><table><tr><th>case</th><th>row</th><th>output</th>"
            "<th>target</th><th>reference</th><th>difference</th></tr>"
        )
        for d in p.worst:
            parts.append(
                f"<tr><td>{_e(d.case_id)}</td><td>{d.row}</td><td>{_e(d.output)}</td><td>{_e(_fmt(d.target))}</td>"
                f"<td>{_e(_fmt(d.reference))}</td><td>{_e(_fmt(d.size))}</td></tr>"
            )
        parts.append("</table>")
    parts.append(
        "<h2>Cases</h2><table><tr><th>case</th><th>feature</th><th>expected</th><th>outcome</th>"
        "<th>result</th><th>reason</th><th>rows</th><th>ms</th></tr>"
    )
    ordered = sorted(report.cases, key=lambda c: {"fail": 0, "pass": 1, "skip": 2}[c.status])
    for c in ordered:
        expected = c.case.expect + (
            f" ({c.case.field}: {c.case.rule})" if c.case.field and c.case.expect == "refuse" else ""
        )
        parts.append(
            f"<tr><td>{_e(c.case.id)}</td><td>{_e(c.case.feature or '')}</td><td>{_e(expected)}</td>"
            f"<td>{_e(c.outcome)}</td><td class='{c.status}'>{c.status}</td><td>{_e(c.reason)}</td>"
            f"<td>{len(c.case.rows)}</td><td>{c.elapsed_ms:.1f}</td></tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts)
