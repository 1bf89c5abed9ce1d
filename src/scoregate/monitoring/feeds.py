"""Where alerts read the live window history and performance results.

Two other parts of scoregate record these: the scoring server's live monitoring
persists each closed window (the figures behind ``scoregate_feature_drift`` and its
siblings; its reader is still a seam here, returning none) and ``monitor performance``
records ``performance(...)`` results (:mod:`scoregate.monitoring.measure`). Alert
evaluation takes them as plain records (:class:`~scoregate.monitoring.alerts.WindowRecord`,
:class:`~scoregate.monitoring.alerts.PerformanceRecord`). The readers return only what
scoregate itself recorded (never a file a user can edit), oldest first, bounded.
"""

from __future__ import annotations

from scoregate.monitoring.alerts import PerformanceRecord, WindowRecord
from scoregate.registry import Registry
from scoregate.registry.records import ModelVersion

#: The newest records an evaluation reads (windows are closed every few minutes).
MAX_WINDOWS = 1_000
MAX_PERFORMANCE = 100


def window_history(registry: Registry, version: ModelVersion) -> list[WindowRecord]:
    """The version's persisted live windows, oldest first (at most ``MAX_WINDOWS``).

    Seam: the server's window history reader is not on this branch; none are recorded yet."""
    return []


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
