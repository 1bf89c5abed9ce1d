"""Where alerts read the live window history and performance results: the seams to join.

Two other parts of scoregate record these: the scoring server's live monitoring
persists each closed window (the figures behind ``scoregate_feature_drift`` and its
siblings) and the labels module records ``performance(...)`` results. Alert
evaluation takes them as plain records (:class:`~scoregate.monitoring.alerts.WindowRecord`,
:class:`~scoregate.monitoring.alerts.PerformanceRecord`), so joining them means
filling in the two readers below; until then a version has none of either, and its
alerts come from its stored drift results alone. The readers must return only what
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

    Seam: the labels module's ``performance(...)`` results are not on this branch; none yet."""
    return []


def has_records(registry: Registry, version: ModelVersion) -> bool:
    return bool(window_history(registry, version) or performance_history(registry, version))
