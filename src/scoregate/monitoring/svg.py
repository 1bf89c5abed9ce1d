"""Small inline SVG charts for the monitoring report, drawn on the server.

Written by hand because the report must be one self-contained file with no scripts and
no external assets, and bounded in size: a plotting library would bring fonts, scripts
or raster images. Every piece of text is escaped here (feature names are user input).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

REFERENCE_COLOUR = "#8da0cb"
CURRENT_COLOUR = "#fc8d62"


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def paired_bars(
    reference: Sequence[float], current: Sequence[float], labels: Sequence[str], *, title: str, width: int = 360
) -> str:
    """Reference and current proportions per bin, side by side (counts are normalised here)."""
    height, top, bottom, left = 150, 18, 30, 30
    ref_total, cur_total = sum(reference) or 1.0, sum(current) or 1.0
    ref = [r / ref_total for r in reference]
    cur = [c / cur_total for c in current]
    peak = max([*ref, *cur, 1e-9])
    n = max(len(ref), 1)
    slot = (width - left - 4) / n
    bar = max(slot / 2 - 1, 0.5)
    plot = height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
        f"<title>{esc(title)}</title>",
        f'<text x="{left}" y="12" font-size="11">{esc(title)}</text>',
        f'<line x1="{left}" y1="{top + plot}" x2="{width - 4}" y2="{top + plot}" stroke="#999"/>',
        f'<text x="2" y="{top + 8}" font-size="9">{peak:.0%}</text>',
    ]
    for i, (r, c) in enumerate(zip(ref, cur, strict=False)):
        x = left + i * slot
        for offset, value, colour in ((0.0, r, REFERENCE_COLOUR), (bar + 1, c, CURRENT_COLOUR)):
            h = plot * value / peak
            parts.append(
                f'<rect x="{_num(x + offset)}" y="{_num(top + plot - h)}" width="{_num(bar)}" '
                f'height="{_num(h)}" fill="{colour}"/>'
            )
    if labels and n <= 12:
        for i, label in enumerate(labels[:n]):
            x = left + i * slot + slot / 2
            parts.append(
                f'<text x="{_num(x)}" y="{height - 16}" font-size="8" text-anchor="middle">{esc(label[:10])}</text>'
            )
    parts.append(
        f'<rect x="{left}" y="{height - 10}" width="8" height="8" fill="{REFERENCE_COLOUR}"/>'
        f'<text x="{left + 11}" y="{height - 3}" font-size="9">reference</text>'
        f'<rect x="{left + 70}" y="{height - 10}" width="8" height="8" fill="{CURRENT_COLOUR}"/>'
        f'<text x="{left + 81}" y="{height - 3}" font-size="9">current</text></svg>'
    )
    return "".join(parts)


def line_chart(
    series: dict[str, Sequence[float | None]],
    x_labels: Sequence[str],
    *,
    title: str,
    threshold: float | None = None,
    width: int = 720,
) -> str:
    """One line per series over the same x positions; None leaves a gap."""
    height, top, bottom, left = 200, 18, 40, 40
    values = [v for s in series.values() for v in s if v is not None]
    peak = max([*values, threshold or 0.0, 1e-9]) * 1.1
    n = max(len(x_labels), 2)
    plot_w, plot_h = width - left - 8, height - top - bottom
    palette = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]

    def xy(i: int, v: float) -> str:
        return f"{_num(left + plot_w * i / (n - 1))},{_num(top + plot_h * (1 - v / peak))}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
        f"<title>{esc(title)}</title>",
        f'<text x="{left}" y="12" font-size="11">{esc(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}" stroke="#999"/>',
        f'<text x="2" y="{top + 8}" font-size="9">{peak:.3g}</text>',
    ]
    if threshold is not None:
        y = _num(top + plot_h * (1 - threshold / peak))
        parts.append(
            f'<line x1="{left}" y1="{y}" x2="{width - 8}" y2="{y}" stroke="#c00" stroke-dasharray="4 3"/>'
            f'<text x="{width - 8}" y="{y}" font-size="9" text-anchor="end" fill="#c00">{threshold:g}</text>'
        )
    for k, (name, points) in enumerate(series.items()):
        colour = palette[k % len(palette)]
        runs: list[list[str]] = [[]]
        for i, v in enumerate(points):
            if v is None:
                runs.append([])
            else:
                runs[-1].append(xy(i, v))
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
            elif run:
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(run)}"/>')
        parts.append(
            f'<text x="{left + 120 * (k % 5)}" y="{height - 4 - 12 * (k // 5)}" font-size="9" fill="{colour}">'
            f"{esc(name[:24])}</text>"
        )
    if x_labels:
        for i in sorted({0, len(x_labels) - 1}):
            anchor = "start" if i == 0 else "end"
            parts.append(
                f'<text x="{_num(left + plot_w * i / (n - 1))}" y="{top + plot_h + 12}" font-size="9" '
                f'text-anchor="{anchor}">{esc(x_labels[i])}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
