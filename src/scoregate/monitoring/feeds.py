"""Where alerts read the live window history and performance results.

Two other parts of scoregate record these: the scoring server's live monitoring
persists each closed window (the figures behind ``scoregate_feature_drift`` and its
siblings, :mod:`scoregate.monitoring.live`) and ``monitor performance``
records ``performance(...)`` results (:mod:`scoregate.monitoring.measure`). Alert
evaluation takes them as plain records (:class:`~scoregate.monitoring.alerts.WindowRecord`,
:class:`~scoregate.monitoring.alerts.PerformanceRecord`). The readers return only what
scoregate itself recorded (never a file a user can edit), oldest first, bounded.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from scoregate.monitoring.alerts import PerformanceRecord, WindowRecord
from scoregate.registry import Registry
from scoregate.registry.records import ModelVersion

#: The newest live windows an evaluation reads (they close every few minutes; enough for any
#: ``live.consecutive`` in a policy, each costing one comparison).
LIVE_WINDOWS = 24
MAX_PERFORMANCE = 100


def window_history(registry: Registry, version: ModelVersion) -> list[WindowRecord]:
    """The version's newest persisted live windows, oldest first (at most ``LIVE_WINDOWS``).

    Read with :func:`~scoregate.monitoring.live.read_windows` against the version's bound
    reference profile, so a window counted over other bins (an edited file) is left out;
    each window's figures are ``monitor drift``'s computation (``live.figures``) and its
    quality shares the ones the server exports."""
    from scoregate.errors import NotFoundError
    from scoregate.monitoring import live, store
    from scoregate.monitoring.profile import Role

    try:
        bound = store.bound_reference(registry, version)
    except NotFoundError:
        return []
    folder = live.live_folder(Path(registry.settings.home))
    files = live.list_windows(folder, version.name, version.version)
    if not files:
        return []
    since = files[-1].start - LIVE_WINDOWS * max(f.length for f in files)  # read only the newest few
    windows = live.read_windows(folder, version.name, version.version, since=since, profile=bound.profile)
    records = []
    for window in windows[-LIVE_WINDOWS:]:
        result = live.figures(bound.profile, window, profile_digest=bound.digest)
        drift: dict[Role, dict[tuple[str, str], float]] = {Role.INPUT: {}, Role.OUTPUT: {}}
        for column in result.columns:
            for statistic, value in column.statistics.items():
                if value is not None:
                    drift[column.role][(column.name, statistic)] = value
        quality = {
            (feature, kind.value): share
            for feature, shares in window.quality(bound.profile).items()
            for kind, share in shares.items()
            if share is not None
        }
        records.append(
            WindowRecord(
                end=dt.datetime.fromtimestamp(window.end, dt.UTC),
                window=f"{window.length // 60}m",
                rows=window.rows,
                feature_drift=drift[Role.INPUT],
                quality_ratio=quality,
                output_drift=drift[Role.OUTPUT],
            )
        )
    return records


def performance_history(registry: Registry, version: ModelVersion) -> list[PerformanceRecord]:
    """The version's recorded performance results, oldest first (at most ``MAX_PERFORMANCE``).

    Each comes from a ``monitor.performance`` audit event and its result blob, re-hashed on
    read. ``metrics`` holds the whole window's realized metrics under their names
    (``roc_auc``, ``rmse``, ...), the label-free estimate as ``estimated_<name>``, and
    ``matched_share``; ``rows`` is the number of labelled predictions."""
    from scoregate.monitoring import store

    records = []
    for entry in store.performance_history(registry, version)[-MAX_PERFORMANCE:]:
        result = store.load_performance(registry, entry.result_digest)
        overall = result.overall
        metrics = {name: value for name, value in overall.realized.items() if value is not None}
        metrics |= {f"estimated_{n}": e.value for n, e in overall.estimated.items() if e.value is not None}
        metrics["matched_share"] = overall.matched_share
        records.append(
            PerformanceRecord(
                computed_at=result.computed_at, rows=overall.labelled, metrics=metrics, digest=entry.result_digest
            )
        )
    return records


def has_records(registry: Registry, version: ModelVersion) -> bool:
    return bool(window_history(registry, version) or performance_history(registry, version))
