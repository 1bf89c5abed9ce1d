"""Small builders shared by the monitoring tests."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from scoregate.monitoring.counts import Accumulator
from scoregate.monitoring.drift import CurrentData, DriftResult, DriftSettings, compare
from scoregate.monitoring.profile import ProfileSettings, ReferenceProfile, Role, build_profile, kind_of
from scoregate.monitoring.sources import Column
from scoregate.schema import FeatureType


def profile_of(
    data: Mapping[str, np.ndarray], types: Mapping[str, FeatureType] | None = None, **settings: object
) -> ReferenceProfile:
    table = pa.table(dict(data))
    kinds = {name: (types or {}).get(name, FeatureType.FLOAT) for name in data}
    columns = [(Column(name, kind_of(kind)), kind, Role.INPUT) for name, kind in kinds.items()]
    batch_rows = int(settings.pop("batch_rows", 65_536))  # type: ignore[call-overload]
    return build_profile(columns, lambda: table.to_batches(batch_rows), settings=ProfileSettings(**settings))


def counts_of(profile: ReferenceProfile, data: Mapping[str, np.ndarray]) -> Accumulator:
    acc = profile.accumulator(Role.INPUT)
    for batch in pa.table(dict(data)).to_batches(65_536):
        acc.update(batch)
    return acc


def drift_of(profile: ReferenceProfile, data: Mapping[str, np.ndarray], **settings: object) -> DriftResult:
    acc = counts_of(profile, data)
    return compare(profile, acc, current=CurrentData(source="file", rows=acc.rows), settings=DriftSettings(**settings))


def normal_features(rng: np.random.Generator, rows: int, features: int = 20) -> dict[str, np.ndarray]:
    return {f"f{i:02d}": rng.normal(size=rows) for i in range(features)}
