"""What the version page shows of monitoring: drift per column over time, data quality, alerts.

It reads what the monitoring services stored (``monitoring.store``: drift results bound
by ``monitor.drift`` audit events) and draws it. Seams for what other parts add: live
windows arrive as more stored drift results and show up here unchanged; performance
results (realized with labels, estimated before) are read by ``performance`` below,
which shows whatever the monitoring store offers for them, and nothing when it has none.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from scoregate.errors import ScoregateError
from scoregate.registry import Registry
from scoregate.registry.records import ModelVersion
from scoregate.ui.charts import Point, Series, line_chart

#: The newest results a page draws (each is a blob read from the artifact store).
MAX_RESULTS = 60


@dataclass
class ColumnChart:
    name: str
    role: str
    statistic: str | None
    threshold: float | None
    latest_value: float | None
    drifted: bool
    svg: Markup
    quality_svg: Markup


@dataclass
class MonitoringView:
    results: int = 0
    shown: int = 0
    profile: dict[str, Any] | None = None
    columns: list[ColumnChart] = field(default_factory=list)
    #: columns that drifted in the latest stored result
    alerts: list[dict[str, Any]] = field(default_factory=list)
    #: the alerting service's alerts of the version (``monitoring.alerting.Alert``), open and resolved
    alert_history: list[Any] = field(default_factory=list)
    performance: list[dict[str, Any]] = field(default_factory=list)
    performance_svg: Markup = field(default_factory=Markup)
    problems: list[str] = field(default_factory=list)


def monitoring_view(registry: Registry, version: ModelVersion) -> MonitoringView:
    from scoregate.monitoring import store

    view = MonitoringView()
    try:
        stored = store.bound_reference(registry, version)
        view.profile = {
            "digest": stored.digest,
            "recorded_at": stored.recorded_at,
            "recorded_by": stored.recorded_by,
            "rows": stored.profile.source.rows,
            "columns": [_profile_column(c) for c in stored.profile.columns],
        }
    except ScoregateError as exc:
        if exc.status_code != 404:
            view.problems.append(exc.message)
    entries = store.history(registry, version)
    view.results = len(entries)
    results = []
    for entry in entries[-MAX_RESULTS:]:
        try:
            results.append((entry, store.load_result(registry, entry.result_digest)))
        except ScoregateError as exc:  # a blob missing or altered: say so, draw the rest
            view.problems.append(f"drift result sha256:{entry.result_digest[:12]} (event {entry.seq}): {exc.message}")
    view.shown = len(results)
    if not results:
        return view
    by_column: dict[str, list[tuple[dt.datetime, Any]]] = {}
    for entry, result in results:
        for column in result.columns:
            by_column.setdefault(column.name, []).append((entry.time, column))
    for name, items in by_column.items():
        latest = items[-1][1]
        drift = Series(
            f"{name} {latest.statistic or ''}".strip(),
            tuple(Point(at, c.value, bool(c.drifted)) for at, c in items if c.value is not None),
        )
        quality = [
            Series(
                "null share",
                tuple(
                    Point(at, c.quality.null_share_current)
                    for at, c in items
                    if c.quality.null_share_current is not None
                ),
            ),
            Series(
                "out of range",
                tuple(
                    Point(at, (c.quality.below_range_share or 0) + (c.quality.above_range_share or 0))
                    for at, c in items
                    if c.quality.below_range_share is not None or c.quality.above_range_share is not None
                ),
            ),
            Series(
                "unseen categories",
                tuple(
                    Point(at, c.quality.other_share_current)
                    for at, c in items
                    if c.quality.other_share_current is not None
                ),
            ),
        ]
        view.columns.append(
            ColumnChart(
                name=name,
                role=str(latest.role),
                statistic=str(latest.statistic) if latest.statistic else None,
                threshold=latest.threshold,
                latest_value=latest.value,
                drifted=bool(latest.drifted),
                svg=line_chart([drift], title=f"drift of {name}", threshold=latest.threshold),
                quality_svg=line_chart([s for s in quality if s.points], title=f"data quality of {name}"),
            )
        )
    last_entry, last = results[-1]
    view.alerts = [
        {
            "column": c.name,
            "statistic": str(c.statistic),
            "value": c.value,
            "threshold": c.threshold,
            "at": last_entry.time,
            "result": last_entry.result_digest,
        }
        for c in last.columns
        if c.drifted
    ]
    view.alert_history = version_alerts(registry, version)
    view.performance = performance(registry, version)
    view.performance_svg = performance_chart(view.performance)
    return view


def performance(registry: Registry, version: ModelVersion) -> list[dict[str, Any]]:
    """Realized and estimated performance results, when the monitoring store records them.

    The store of this release keeps drift results only; a store that adds performance
    results exposes ``performance_history(registry, version)`` and they appear here.
    """
    import dataclasses

    from scoregate.monitoring import store

    reader = getattr(store, "performance_history", None)
    if reader is None:
        return []
    entries = list(reader(registry, version))[-MAX_RESULTS:]
    return [dataclasses.asdict(e) if dataclasses.is_dataclass(e) else dict(e) for e in entries]


def performance_chart(entries: list[dict[str, Any]]) -> Markup:
    """The recorded performance figure over time, one series per source (realized, estimated)."""
    series: dict[str, list[Point]] = {}
    for entry in entries:
        figure, at = entry.get("figure"), entry.get("time")
        if isinstance(figure, int | float) and isinstance(at, dt.datetime):
            series.setdefault(str(entry.get("source", "")), []).append(Point(at, float(figure)))
    return line_chart([Series(k, tuple(v)) for k, v in series.items()], title="performance over time")


def _profile_column(column: Any) -> dict[str, Any]:
    data = column.model_dump(mode="json") if hasattr(column, "model_dump") else dict(column)
    keep = ("name", "role", "type", "kind", "rows", "nulls", "invalid", "minimum", "maximum", "mean", "std", "levels")
    return {k: data[k] for k in keep if k in data}


def open_alerts(registry: Registry) -> dict[str, int]:
    """Open monitoring alerts by model name, from the alerts' fire and resolve events (one scan
    of those actions, indexed), with the rule ``monitoring.alerting.alerts_of`` applies to one
    version: a fire opens its kind unless open, a resolve closes it."""
    import orjson
    from sqlalchemy import select

    from scoregate.monitoring.alerting import FIRE_ACTION, RESOLVE_ACTION
    from scoregate.refs import ModelRef
    from scoregate.registry.tables import AuditEventRow

    opened: set[tuple[str, str]] = set()
    with registry.reading() as session:
        rows = session.execute(
            select(AuditEventRow.subject, AuditEventRow.action, AuditEventRow.after)
            .where(AuditEventRow.action.in_((FIRE_ACTION, RESOLVE_ACTION)))
            .order_by(AuditEventRow.seq)
        )
        for subject, action, after in rows:
            try:
                kind = str(orjson.loads(after or "{}")["kind"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            if action == FIRE_ACTION:
                opened.add((subject, kind))
            else:
                opened.discard((subject, kind))
    counts: dict[str, int] = {}
    for subject, _ in opened:
        try:
            name = ModelRef.parse(subject).name
        except ScoregateError:
            continue
        counts[name] = counts.get(name, 0) + 1
    return counts


def version_alerts(registry: Registry, version: ModelVersion) -> list[Any]:
    """The version's alerts, open and resolved, oldest first (``monitoring.alerting``)."""
    from scoregate.monitoring.alerting import alerts_of

    with registry.reading() as session:
        return alerts_of(session, version.ref)
