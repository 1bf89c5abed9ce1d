"""Charts drawn on the server as SVG: no script, no library in the browser, printable.

Pure functions from numbers to markup; colours come from CSS classes (the page's
Content-Security-Policy allows no inline style), so a chart prints and themes like text.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH = 640
HEIGHT = 180
PAD_LEFT = 56
PAD_RIGHT = 16
PAD_TOP = 16
PAD_BOTTOM = 34


@dataclass(frozen=True)
class Point:
    at: dt.datetime
    value: float
    flagged: bool = False


@dataclass(frozen=True)
class Series:
    label: str
    points: tuple[Point, ...]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100 or abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:.3g}"


def _time_label(t: float, span_s: float) -> str:
    """An axis label precise enough to tell the ends of the axis apart."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S" if span_s < 3600 else "%Y-%m-%d %H:%M")


def line_chart(series: Sequence[Series], *, title: str, threshold: float | None = None, unit: str = "") -> Markup:
    """One or more series over time, with an optional threshold line; flagged points are marked."""
    points = [p for s in series for p in s.points if math.isfinite(p.value)]
    if not points:
        return Markup("")
    times = [p.at.timestamp() for p in points]
    t0, t1 = min(times), max(times)
    if t1 == t0:
        t0, t1 = t0 - 1, t1 + 1
    values = [p.value for p in points] + ([threshold] if threshold is not None else [])
    lo, hi = min(0.0, *values), max(values)
    if hi == lo:
        hi = lo + 1
    hi += (hi - lo) * 0.08
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def x(t: float) -> float:
        return PAD_LEFT + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return PAD_TOP + (1 - (v - lo) / (hi - lo)) * plot_h

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<rect class="plot" x="{PAD_LEFT}" y="{PAD_TOP}" width="{plot_w}" height="{plot_h}"/>',
    ]
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        parts.append(f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>')
        parts.append(
            f'<text class="tick" x="{PAD_LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{_fmt(v)}{escape(unit)}</text>'
        )
    for t, anchor in ((t0, "start"), (t1, "end")):
        label = _time_label(t, t1 - t0)
        parts.append(f'<text class="tick" x="{x(t):.1f}" y="{HEIGHT - 12}" text-anchor="{anchor}">{label}</text>')
    if threshold is not None:
        parts.append(
            f'<line class="threshold" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" '
            f'y1="{y(threshold):.1f}" y2="{y(threshold):.1f}"><title>threshold {_fmt(threshold)}</title></line>'
        )
    for index, s in enumerate(series):
        good = [p for p in s.points if math.isfinite(p.value)]
        if not good:
            continue
        path = " ".join(f"{x(p.at.timestamp()):.1f},{y(p.value):.1f}" for p in good)
        parts.append(
            f'<polyline class="series s{index % 6}" points="{path}"><title>{escape(s.label)}</title></polyline>'
        )
        for p in good:
            css = "point flagged" if p.flagged else f"point s{index % 6}"
            parts.append(
                f'<circle class="{css}" cx="{x(p.at.timestamp()):.1f}" cy="{y(p.value):.1f}" r="3.5">'
                f"<title>{escape(s.label)} {p.at:%Y-%m-%d %H:%M} UTC: {_fmt(p.value)}{escape(unit)}"
                f"{' (drifted)' if p.flagged else ''}</title></circle>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class Span:
    """One holder of an alias: ``version`` (None: the alias did not exist) from ``start`` to ``end``."""

    version: int | None
    start: dt.datetime
    end: dt.datetime
    actor: str | None = None
    reason: str | None = None


def alias_spans(history: Sequence[dict], now: dt.datetime) -> list[Span]:
    """The alias history (each move: version, at, actor, reason) as consecutive spans up to ``now``."""
    spans = []
    for entry, following in zip(history, [*history[1:], None], strict=True):
        end = following["at"] if following else now
        spans.append(Span(entry["version"], entry["at"], end, entry.get("actor"), entry.get("reason")))
    return spans


def alias_timeline(histories: dict[str, list[Span]]) -> Markup:
    """One row per alias, one bar per holder: which version held each alias when."""
    rows = [(alias, spans) for alias, spans in histories.items() if spans]
    if not rows:
        return Markup("")
    t0 = min(s.start for _, spans in rows for s in spans).timestamp()
    t1 = max(s.end for _, spans in rows for s in spans).timestamp()
    if t1 <= t0:
        t1 = t0 + 1
    row_h, label_w = 28, 110
    height = PAD_TOP + row_h * len(rows) + PAD_BOTTOM
    plot_w = WIDTH - label_w - PAD_RIGHT

    def x(t: float) -> float:
        return label_w + (t - t0) / (t1 - t0) * plot_w

    parts = [
        f'<svg class="chart timeline" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>alias timeline</title>'
    ]
    for i, (alias, spans) in enumerate(rows):
        top = PAD_TOP + i * row_h
        parts.append(f'<text class="label" x="{label_w - 8}" y="{top + 17}" text-anchor="end">{escape(alias)}</text>')
        for span in spans:
            left, right = x(span.start.timestamp()), x(span.end.timestamp())
            width = max(right - left, 2.0)
            if span.version is None:
                css, text = "gap", "none"
            else:
                css, text = f"bar v{span.version % 6}", f"v{span.version}"
            tip = (
                f"{alias}: {text} from {span.start:%Y-%m-%d %H:%M} to {span.end:%Y-%m-%d %H:%M} UTC"
                f"{' by ' + span.actor if span.actor else ''}{' (' + span.reason + ')' if span.reason else ''}"
            )
            parts.append(
                f'<rect class="{css}" x="{left:.1f}" y="{top + 3}" width="{width:.1f}" height="{row_h - 8}">'
                f"<title>{escape(tip)}</title></rect>"
            )
            if width > 28 and span.version is not None:
                parts.append(f'<text class="barlabel" x="{left + 4:.1f}" y="{top + 17}">{text}</text>')
    for t, anchor in ((t0, "start"), (t1, "end")):
        label = _time_label(t, t1 - t0)
        parts.append(f'<text class="tick" x="{x(t):.1f}" y="{height - 12}" text-anchor="{anchor}">{label}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
