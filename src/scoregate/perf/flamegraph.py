"""An interactive-enough flame graph (icicle, hover for details) as one HTML page, from pstats.

pstats keeps caller -> callee totals, not whole stacks, so a callee's time under a
caller that is itself reached along several paths is split in proportion; the
widths are exact for the top levels and an estimate deeper down.
"""

from __future__ import annotations

import hashlib
import html
import pstats
from pathlib import Path
from typing import Any


def label(func: tuple[str, int, str]) -> str:
    """``file.py:line(name)`` with the path shortened to its package-relative part."""
    filename, line, name = func
    if filename == "~":
        return name
    path = Path(filename)
    parts = path.parts
    for anchor in ("site-packages", "src", "lib"):
        if anchor in parts:
            index = len(parts) - 1 - parts[::-1].index(anchor)
            rest = parts[index + 1 :]
            if rest:
                return f"{'/'.join(rest)}:{line}({name})"
    return f"{path.name}:{line}({name})"


WIDTH = 1200
ROW = 18
MAX_DEPTH = 40
MIN_SHARE = 0.002


def _tree(stats: pstats.Stats) -> tuple[dict[str, Any] | None, float]:
    raw: dict = stats.stats  # type: ignore[attr-defined]
    children: dict[tuple, list[tuple[tuple, float]]] = {}
    for func, (_cc, _nc, _tt, _ct, callers) in raw.items():
        for caller, edge in callers.items():
            children.setdefault(caller, []).append((func, edge[3]))
    root = next((f for f in raw if f[2] == "score_request"), None)
    if root is None:
        roots = [f for f, v in raw.items() if not v[4]]
        if not roots:
            return None, 0.0
        root = max(roots, key=lambda f: raw[f][3])
    total = raw[root][3] or 1e-12

    def build(func: tuple, time: float, path: frozenset, depth: int) -> dict[str, Any]:
        node: dict[str, Any] = {"name": label(func), "time": time, "children": []}
        if depth >= MAX_DEPTH:
            return node
        full = raw[func][3] or 1e-12
        scale = min(time / full, 1.0)
        for child, edge_ct in sorted(children.get(func, []), key=lambda c: -c[1]):
            t = edge_ct * scale
            if child in path or t < total * MIN_SHARE:
                continue
            node["children"].append(build(child, t, path | {child}, depth + 1))
        return node

    return build(root, total, frozenset({root}), 0), total


def _color(name: str) -> str:
    h = int(hashlib.md5(name.encode()).hexdigest()[:6], 16)
    return f"hsl({20 + h % 40},{70 + h % 25}%,{55 + (h >> 8) % 15}%)"


def render_flamegraph(stats: pstats.Stats, title: str = "profile") -> str:
    tree, total = _tree(stats)
    rects: list[str] = []
    depth_max = 0

    def draw(node: dict[str, Any], x: float, depth: int) -> None:
        nonlocal depth_max
        depth_max = max(depth_max, depth)
        w = WIDTH * node["time"] / total
        share = node["time"] / total
        name = html.escape(node["name"])
        y = depth * ROW
        text = ""
        if w > 40:
            chars = int(w / 7)
            shown = node["name"] if len(node["name"]) <= chars else node["name"][: max(chars - 1, 1)] + "…"
            text = f"<text x='{x + 3:.1f}' y='{y + 13}'>{html.escape(shown)}</text>"
        rects.append(
            f"<g><title>{name}\n{node['time']:.4f} s ({share:.1%})</title>"
            f"<rect x='{x:.1f}' y='{y}' width='{max(w - 0.5, 0.5):.1f}' height='{ROW - 1}' "
            f"fill='{_color(node['name'])}'/>{text}</g>"
        )
        cx = x
        for child in node["children"]:
            draw(child, cx, depth + 1)
            cx += WIDTH * child["time"] / total

    if tree is not None:
        draw(tree, 0.0, 0)
    height = (depth_max + 1) * ROW
    svg = (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
        f"font-family='monospace' font-size='11'>{''.join(rects)}</svg>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>flame graph</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:1.5em}rect:hover{stroke:#000}</style></head><body>"
        f"<h1>Flame graph</h1><p>{html.escape(title)}</p><p>Top: the request; below: what each function called. "
        "Width is time; hover for the function and its share.</p>"
        f"{svg}</body></html>"
    )
