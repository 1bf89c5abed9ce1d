"""The load-test report page: summary, per-interval table, latency over time as inline SVG."""

from __future__ import annotations

import html
import math
from typing import Any

W, H, PAD = 900, 320, 50
SERIES = (("p50_ms", "#1f77b4"), ("p95_ms", "#ff7f0e"), ("p99_ms", "#d62728"), ("max_ms", "#999999"))


def latency_svg(report: Any) -> str:
    windows = [w for w in report.intervals if w.requests]
    if not windows:
        return "<p>no completed requests to plot</p>"

    def value(w: Any, key: str) -> float:
        return w.max_ms if key == "max_ms" else w.percentiles.get(key, math.nan)

    top = max([report.budget_ms] + [value(w, k) for w in windows for k, _ in SERIES if math.isfinite(value(w, k))])
    top = top * 1.1 or 1.0
    span = max(report.intervals[-1].start_s + report.interval_s, 1e-9)

    def x(t: float) -> float:
        return PAD + (W - 2 * PAD) * t / span

    def y(v: float) -> float:
        return H - PAD - (H - 2 * PAD) * v / top

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' font-family='sans-serif' font-size='11'>"
    ]
    parts.append(f"<line x1='{PAD}' y1='{H - PAD}' x2='{W - PAD}' y2='{H - PAD}' stroke='#333'/>")
    parts.append(f"<line x1='{PAD}' y1='{PAD}' x2='{PAD}' y2='{H - PAD}' stroke='#333'/>")
    for i in range(5):
        v = top * i / 4
        parts.append(f"<text x='{PAD - 5}' y='{y(v) + 4:.1f}' text-anchor='end'>{v:.0f}</text>")
        parts.append(f"<line x1='{PAD}' y1='{y(v):.1f}' x2='{W - PAD}' y2='{y(v):.1f}' stroke='#eee'/>")
    parts.append(f"<text x='{W / 2}' y='{H - 12}' text-anchor='middle'>seconds into the run</text>")
    parts.append(f"<text x='12' y='{H / 2}' transform='rotate(-90 12 {H / 2})' text-anchor='middle'>latency ms</text>")
    for i in range(5):
        t = span * i / 4
        parts.append(f"<text x='{x(t):.1f}' y='{H - PAD + 15}' text-anchor='middle'>{t:.0f}</text>")
    by = y(report.budget_ms)
    parts.append(
        f"<line x1='{PAD}' y1='{by:.1f}' x2='{W - PAD}' y2='{by:.1f}' stroke='#b00020' stroke-dasharray='6,4'/>"
    )
    parts.append(
        f"<text x='{W - PAD}' y='{by - 4:.1f}' text-anchor='end' fill='#b00020'>budget {report.budget_ms:g} ms</text>"
    )
    for n, (key, color) in enumerate(SERIES):
        points = [
            f"{x(w.start_s + report.interval_s / 2):.1f},{y(value(w, key)):.1f}"
            for w in windows
            if math.isfinite(value(w, key))
        ]
        if points:
            parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='2' points='{' '.join(points)}'/>")
        parts.append(f"<rect x='{PAD + 10 + n * 80}' y='{PAD - 30}' width='12' height='4' fill='{color}'/>")
        parts.append(f"<text x='{PAD + 26 + n * 80}' y='{PAD - 25}'>{key[:-3]}</text>")
    parts.append("</svg>")
    return "".join(parts)


def render_loadtest_html(report: Any) -> str:
    e = html.escape
    o = report.overall
    verdict = "PASSED" if report.passed else "FAILED"
    rows = "".join(
        f"<tr><td>{w.start_s:g}</td><td>{w.requests}</td><td>{w.failures}</td><td>{w.throughput:.2f}</td>"
        + "".join(f"<td>{v:.1f}</td>" for v in w.percentiles.values())
        + f"<td>{w.max_ms:.1f}</td></tr>"
        for w in report.intervals
    )
    problems = "".join(f"<li>{e(p)}</li>" for p in report.problems)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Load test of {e(report.model)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#f3f3f3}</style></head><body>"
        f"<h1>Load test of {e(report.model)}: {verdict}</h1>"
        f"<ul>{problems}</ul>"
        "<table>"
        f"<tr><th>url</th><td>{e(report.url)}</td></tr>"
        f"<tr><th>started</th><td>{e(report.started_at)}</td></tr>"
        f"<tr><th>users / target rate</th><td>{report.users} / {report.target_rps:g} rps</td></tr>"
        f"<tr><th>duration</th><td>{report.elapsed_s:.1f} s</td></tr>"
        f"<tr><th>requests / failures</th><td>{o.requests} / {o.failures}</td></tr>"
        f"<tr><th>throughput</th><td>{o.throughput:.2f} rps</td></tr>"
        + "".join(f"<tr><th>{k[:-3]}</th><td>{v:.1f} ms</td></tr>" for k, v in o.percentiles.items())
        + f"<tr><th>max</th><td>{o.max_ms:.1f} ms</td></tr>"
        f"<tr><th>latency budget</th><td>{report.budget_ms:g} ms</td></tr>"
        f"<tr><th>correctness</th><td>{report.checked_responses - report.mismatched_responses} of "
        f"{report.checked_responses} sampled responses match the reference</td></tr>"
        "</table><h2>Latency over time</h2>"
        f"{latency_svg(report)}"
        f"<h2>Per interval ({report.interval_s:g} s)</h2><table><tr><th>start s</th><th>requests</th><th>failures</th>"
        "<th>rps</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>max</th></tr>"
        f"{rows}</table></body></html>"
    )
