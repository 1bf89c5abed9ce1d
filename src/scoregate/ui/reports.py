"""A stored evidence document as sections a page can show: what a report says, read from the
document itself (the recorded run), with the verdict the gates give it beside it.

A document of one of scoregate's runs is JSON; its known parts (cases, checks, parity,
load-test figures and intervals, profile steps) become tables, and whatever else it holds
is shown as nested fields, bounded so that a large document cannot make a page unbounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

#: Rows of one table a page shows; the whole document stays downloadable.
MAX_ROWS = 200
#: Nesting a generic view follows.
MAX_DEPTH = 4


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    total: int


@dataclass
class ReportView:
    is_json: bool
    fields: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    text: str | None = None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        text = orjson.dumps(value).decode()
        return text if len(text) <= 160 else text[:159] + "…"
    text = str(value)
    return text if len(text) <= 300 else text[:299] + "…"


def _table(title: str, items: list[Any], columns: list[str] | None = None) -> Table:
    dicts = [i for i in items if isinstance(i, dict)]
    if columns is None:
        columns = []
        for item in dicts[:50]:
            columns += [k for k in item if k not in columns]
        columns = columns[:12]
    rows = [[_cell(item.get(c)) for c in columns] for item in dicts[:MAX_ROWS]]
    return Table(title, columns, rows, len(dicts))


def report_view(document: bytes) -> ReportView:
    try:
        data = orjson.loads(document)
    except orjson.JSONDecodeError:
        return ReportView(is_json=False)
    if not isinstance(data, dict):
        return ReportView(is_json=True, text=_cell(data))
    view = ReportView(is_json=True)
    kind = str(data.get("kind", ""))
    consumed: set[str] = set()
    if kind.endswith("validation"):
        cases = data.get("cases") or []
        for case in cases:
            if isinstance(case, dict):
                status = str(case.get("status", "?"))
                view.counts[status] = view.counts.get(status, 0) + 1
        view.tables.append(_table("checks", data.get("checks") or [], ["id", "status", "expect", "reason"]))
        failing = [c for c in cases if isinstance(c, dict) and c.get("status") != "pass"]
        view.tables.append(_table("cases that did not pass", failing))
        view.tables.append(_table("cases", cases))
        consumed |= {"cases", "checks"}
    elif kind.endswith("loadtest"):
        view.tables.append(_table("intervals", data.get("intervals") or []))
        consumed.add("intervals")
    for key, value in data.items():
        if key in consumed:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            view.tables.append(_table(key, value))
        else:
            _flatten(view.fields, key, value, 0)
    view.tables = [t for t in view.tables if t.total or t.title == "checks"]
    return view


def _flatten(out: list[tuple[str, str]], prefix: str, value: Any, depth: int) -> None:
    if isinstance(value, dict) and value and depth < MAX_DEPTH:
        for key, item in list(value.items())[:MAX_ROWS]:
            _flatten(out, f"{prefix}.{key}", item, depth + 1)
    else:
        out.append((prefix, _cell(value)))
