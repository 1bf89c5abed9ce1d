"""Model monitoring: reference profiles, binned counters and drift statistics.

The core (``statistics``, ``counts``, ``profile``, ``drift``) is pure and shared by batch
monitoring (files, the prediction log) and, later, the scoring server's live windows;
``sources`` reads files in record batches, ``store`` keeps profiles and results in the
registry, ``service`` ties them together for the CLI.
"""

from scoregate.monitoring.counts import Accumulator, Bins, ColumnCounts, Kind
from scoregate.monitoring.drift import ColumnDrift, CurrentData, DriftResult, DriftSettings, compare
from scoregate.monitoring.profile import ProfileSettings, ReferenceProfile, Role, build_profile
from scoregate.monitoring.statistics import DEFINITIONS, STATISTICS_VERSION, Definition, Statistic

__all__ = [
    "DEFINITIONS",
    "STATISTICS_VERSION",
    "Accumulator",
    "Bins",
    "ColumnCounts",
    "ColumnDrift",
    "CurrentData",
    "Definition",
    "DriftResult",
    "DriftSettings",
    "Kind",
    "ProfileSettings",
    "ReferenceProfile",
    "Role",
    "Statistic",
    "build_profile",
    "compare",
]
