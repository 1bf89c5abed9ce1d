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
    ]
    if report.stopped:
        parts.append(f"<p class='fail'>Stopped early: {_e(report.stopped)}</p>")
    parts += [
        "<h2>Summary</h2><table>",
        f"<tr><th>model</th><td>{_e(report.model)}</td></tr>",
        f"<tr><th>artifact digest</th><td><code>{_e(report.artifact_digest)}</code></td></tr>",
        f"<tr><th>contract digest</th><td><code>{_e(report.schema_digest)}</code></td></tr>",
        f"<tr><th>target</th><td>{_e(report.target)}</td></tr>",
        f"<tr><th>started</th><td>{_e(report.started_at)}</td></tr>",
        f"<tr><th>duration</th><td>{report.duration_s:.2f} s</td></tr>",
        f"<tr><th>cases</th><td><span class='pass'>{counts['pass']} passed</span>, "
        f"<span class='fail'>{counts['fail']} failed</span>, "
        f"<span class='skip'>{counts['skip']} skipped</span></td></tr>",
        f"<tr><th>case set</th><td>{report.case_set.get('cases', 0)} generated cases, digest "
        f"<code>{_e(report.case_set.get('digest', '-'))}</code></td></tr>",
        "</table>",
        "<h2>Settings</h2><table>",
    ]
    for key, value in report.settings_dict().items():
        parts.append(f"<tr><th>{_e(key)}</th><td>{_e(_fmt(value) if value is not None else '-')}</td></tr>")
    parts.append("</table>")
    parts += _checks(report.checks)
    parts += _parity(report.parity)
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


def _checks(checks: list[Any]) -> list[str]:
    parts = ["<h2>Checks</h2><table><tr><th>check</th><th>result</th><th>expected</th><th>reason</th></tr>"]
    for c in checks:
        parts.append(
            f"<tr><td>{_e(c.id)}</td><td class='{c.status}'>{c.status}</td><td>{_e(c.expect)}</td>"
            f"<td>{_e(c.reason)}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _parity(p: Any) -> list[str]:
    kind = p.reference.value + (" (independent)" if p.reference.independent else "")
    parts = [
        "<h2>Parity</h2><table>",
        f"<tr><th>reference</th><td>{_e(kind)}</td></tr>",
        f"<tr><th>outcome</th><td class='{'pass' if p.passed else 'fail'}'>{_e(p.outcome)}</td></tr>",
        f"<tr><th>tolerance</th><td>|target - reference| &le; {p.atol:g} + {p.rtol:g}&middot;|reference|</td></tr>",
        f"<tr><th>rows compared</th><td>{p.rows_compared} ({p.comparison.values_compared} values)"
        + (f"; {p.rows_not_compared} rows the reference could not score" if p.rows_not_compared else "")
        + "</td></tr>",
        f"<tr><th>mismatches</th><td class='{'pass' if p.mismatches == 0 else 'fail'}'>{p.mismatches}</td></tr>",
        f"<tr><th>largest difference beyond tolerance</th><td>{_fmt(p.max_difference)}</td></tr>",
        f"<tr><th>largest difference observed</th><td>{_fmt(p.comparison.max_observed)}</td></tr>",
    ]
    for key, value in p.details.items():
        parts.append(f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>")
    if p.error:
        parts.append(f"<tr><th>error</th><td class='{'fail' if p.failed else 'skip'}'>{_e(p.error)}</td></tr>")
    parts.append("</table>")
    parts += _worst("Worst differences from the reference", p.comparison.worst)
    if p.golden is not None:
        g = p.golden
        parts += [
            "<h3>Golden file</h3><table>",
            f"<tr><th>tolerance</th><td>|target - expected| &le; {g.atol:g} + {g.rtol:g}&middot;|expected|</td></tr>",
            f"<tr><th>rows compared</th><td>{g.rows_compared} ({g.values_compared} values)</td></tr>",
            f"<tr><th>mismatches</th><td class='{'pass' if g.mismatches == 0 else 'fail'}'>{g.mismatches}</td></tr>",
            "</table>",
        ]
        parts += _worst("Worst differences from the golden file", g.worst)
    return parts


def _worst(title: str, worst: list[Any]) -> list[str]:
    if not worst:
        return []
    parts = [
        f"<h3>{_e(title)}</h3><table><tr><th>case</th><th>row</th><th>output</th>"
        "<th>target</th><th>reference</th><th>difference</th></tr>"
    ]
    for d in worst:
        parts.append(
            f"<tr><td>{_e(d.case_id)}</td><td>{d.row}</td><td>{_e(d.output)}</td><td>{_e(_fmt(d.target))}</td>"
            f"<td>{_e(_fmt(d.reference))}</td><td>{_e(_fmt(d.size))}</td></tr>"
        )
    parts.append("</table>")
    return parts
