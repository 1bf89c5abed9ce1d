"""Monitoring use cases: record a version's reference profile, compute and record drift.

The I/O edge of the package: reads files (and the prediction log), loads the version's
model when its outputs must be scored, and stores through :mod:`store`; the counting and
the statistics are the pure core in :mod:`counts`, :mod:`profile` and :mod:`drift`.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scoregate.errors import InvalidInputError, ModelTimeoutError, SchemaViolationError
from scoregate.governance.access import Permission
from scoregate.monitoring import store
from scoregate.monitoring.counts import Accumulator, Kind
from scoregate.monitoring.drift import CurrentData, DriftResult, DriftSettings, compare
from scoregate.monitoring.logsource import LogColumn, LogSource
from scoregate.monitoring.profile import (
    ProfileSettings,
    ReferenceProfile,
    Role,
    SourceInfo,
    Subject,
    build_profile,
    input_columns,
    output_columns,
)
from scoregate.monitoring.sources import FORMATS, Column, FileSource, worker_pool
from scoregate.monitoring.statistics import ks_exact
from scoregate.registry import Registry
from scoregate.registry.records import ModelVersion
from scoregate.schema import Feature, FeatureType, ModelSchema, prepare_frame

Batches = Callable[[], Iterator[pa.RecordBatch]]
log = logging.getLogger("scoregate.monitoring")
#: Seconds profiling the full training data may take at registration (every pass, scoring included).
REGISTRATION_PROFILE_TIMEOUT_S = 900.0


@dataclass(frozen=True, slots=True)
class DriftRun:
    result: DriftResult
    digest: str | None  # the stored result's, when recorded
    profile_digest: str
    notes: list[str]


def subject_of(version: ModelVersion) -> Subject:
    return Subject(
        model=version.name,
        version=version.version,
        artifact_digest=version.artifact_digest,
        schema_digest=version.input_schema.digest(),
    )


# -- scoring -------------------------------------------------------------------------------------------


class _Scorer:
    """The version's model as ``batch -> output columns``, loaded on first use."""

    def __init__(self, registry: Registry, version: ModelVersion) -> None:
        self.registry, self.version = registry, version
        self.names = [o.name for o in version.output_schema]
        # Ranges and levels seen in training are no reason to refuse a row here: monitoring
        # exists to see values outside them (a category's new level is scored as the text it
        # is, as the model would be given it). Types and nullability still hold.
        features = [_relaxed(f) for f in version.input_schema.features]
        self.schema = ModelSchema(features=features, target=version.input_schema.target)
        self._model = None

    def __call__(self, batch: pa.RecordBatch, where: str) -> pa.RecordBatch:
        if self._model is None:
            self._model = self.registry.load(self.version.ref).scorer
        frame = batch.to_pandas()
        try:
            inputs = prepare_frame(self.schema, frame)
        except SchemaViolationError as exc:
            raise InvalidInputError(
                f"cannot score {where} to compare the model's outputs: {exc.message}; "
                "give --no-score to compare the inputs only"
            ) from None
        outputs = self._model.predict(inputs)
        missing = [n for n in self.names if n not in outputs.columns]
        if missing:
            raise InvalidInputError(f"the model did not return its output(s) {', '.join(missing)}")
        return pa.RecordBatch.from_pandas(outputs[self.names], preserve_index=False)


def _relaxed(feature: Feature) -> Feature:
    if feature.type is FeatureType.CATEGORY:
        return Feature(name=feature.name, type=FeatureType.STRING, nullable=feature.nullable)
    return feature.model_copy(update={"minimum": None, "maximum": None})


def _with(batch: pa.RecordBatch, extra: pa.RecordBatch) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [*batch.columns, *extra.columns], names=[*batch.schema.names, *extra.schema.names]
    )


class _Scored:
    """Batches of a file with the model's outputs added, read once per profiling pass, scored once.

    The first read scores each batch and keeps its outputs in a temporary Parquet file,
    one row group per batch; later reads put them back beside the same batches, so
    memory stays flat and the model runs once.
    """

    def __init__(self, source: FileSource, scorer: _Scorer, folder: Path) -> None:
        self.source, self.scorer = source, scorer
        self.path = folder / "outputs.parquet"
        self.reads = 0

    def __call__(self) -> Iterator[pa.RecordBatch]:
        self.reads += 1
        if self.reads == 1:
            writer = None
            try:
                for batch in self.source.batches():
                    outputs = self.scorer(batch, str(self.source.path))
                    if writer is None:
                        writer = pq.ParquetWriter(self.path, outputs.schema)
                    writer.write_table(pa.Table.from_batches([outputs]), row_group_size=outputs.num_rows)
                    yield _with(batch, outputs)
            finally:
                if writer is not None:
                    writer.close()
            return
        kept = pq.ParquetFile(self.path)
        for i, batch in enumerate(self.source.batches()):
            outputs = kept.read_row_group(i).combine_chunks().to_batches()[0]
            yield _with(batch, outputs)


# -- profiles ------------------------------------------------------------------------------------------


def _profile_columns(version: ModelVersion, *, outputs: bool) -> list[tuple[Column, FeatureType, Role]]:
    schema = version.input_schema
    columns = [(c, t, Role.INPUT) for c, t in input_columns(schema)]
    if outputs:
        names = set(schema.feature_names)
        columns += [(c, t, Role.OUTPUT) for c, t in output_columns(schema) if c.name not in names]
    return columns


def _within(batches: Batches, timeout: float | None) -> Batches:
    """``batches`` that stop with ModelTimeoutError once ``timeout`` seconds have passed since the first read."""
    if timeout is None:
        return batches
    deadline = time.monotonic() + timeout

    def read() -> Iterator[pa.RecordBatch]:
        for batch in batches():
            if time.monotonic() > deadline:
                raise ModelTimeoutError(f"profiling the reference data took longer than {timeout:g} s")
            yield batch

    return read


def profile_file(
    registry: Registry,
    version: ModelVersion,
    data: Path,
    *,
    score: bool = True,
    settings: ProfileSettings | None = None,
    timeout: float | None = None,
) -> ReferenceProfile:
    """Profile ``data`` (the version's training data or a stand-in) for ``version``; with ``timeout``,
    stop once the passes have taken that many seconds (checked between batches of 65,536 rows)."""
    score = score and bool(version.output_schema)
    columns = _profile_columns(version, outputs=score)
    source = FileSource(data, [c for c, _, role in columns if role is Role.INPUT])
    with tempfile.TemporaryDirectory(prefix="scoregate-profile-") as folder, worker_pool() as pool:
        batches: Batches = _Scored(source, _Scorer(registry, version), Path(folder)) if score else source.batches
        batches = _within(batches, timeout)
        return build_profile(
            columns,
            batches,
            settings=settings,
            subject=subject_of(version),
            source=lambda rows: SourceInfo(uri=source.uri, sha256=source.sha256, rows=rows),
            pool=pool,
        )


def record_reference(
    registry: Registry, ref: str, data: Path, *, score: bool = True, settings: ProfileSettings | None = None
) -> tuple[ModelVersion, ReferenceProfile, str, bool]:
    """Profile ``data`` and bind it to ``ref``: (version, profile, digest, newly recorded)."""
    version = registry.resolve(ref)
    registry.whoami().require(Permission.REGISTER, subject=version.ref)  # before the long read
    profile = profile_file(registry, version, data, score=score, settings=settings)
    digest, new = store.record_reference(registry, version, profile)
    return version, profile, digest, new


@dataclass(frozen=True, slots=True)
class RegistrationProfile:
    """What the registration hook did: the bound profile's digest, or why there is none."""

    digest: str | None
    rows: int = 0
    note: str | None = None


def profile_at_registration(
    registry: Registry,
    version: ModelVersion,
    train_data: Path | str,
    *,
    timeout: float = REGISTRATION_PROFILE_TIMEOUT_S,
) -> RegistrationProfile:
    """Profile a just-registered version's full training data (streamed) and bind it to the version.

    The registration itself is done and stays: a profile that cannot be built (a format it
    cannot stream, a model that fails on some training rows, past ``timeout``) leaves the
    version without one and says why, and ``scoregate monitor reference`` can add it later.
    """
    path = Path(train_data).expanduser()
    if path.suffix.lower() not in FORMATS:
        return RegistrationProfile(
            None, note=f"the reference profile is built from Parquet or CSV, not {path.suffix or 'this file'}"
        )
    try:
        profile = profile_file(registry, version, path, timeout=timeout)
        digest, _ = store.record_reference(registry, version, profile)
    except (InvalidInputError, ModelTimeoutError) as exc:
        log.warning("no reference profile for %s: %s", version.ref, exc.message)
        return RegistrationProfile(None, note=exc.message)
    return RegistrationProfile(digest, rows=profile.source.rows)


# -- drift -----------------------------------------------------------------------------------------------


def _count_file(
    profile: ReferenceProfile, path: Path, scorer: _Scorer | None, notes: list[str]
) -> tuple[Accumulator, Accumulator | None, FileSource]:
    inputs = profile.accumulator(Role.INPUT)
    wanted = profile.columns_to_read(Role.INPUT)
    output_bins = profile.accumulator(Role.OUTPUT).bins
    optional = profile.columns_to_read(Role.OUTPUT)
    source = FileSource(path, wanted, optional=optional)
    present = {c.name for c in source.present}
    outputs = profile.accumulator(Role.OUTPUT) if output_bins else None
    logged = bool(output_bins) and all(b.name in present for b in output_bins)
    if outputs is not None and not logged and scorer is None:
        notes.append("the model's outputs were not compared: they are not in the file and scoring is off")
        outputs = None
    with worker_pool() as pool:
        for batch in source.batches():
            inputs.update(batch, pool=pool)
            if outputs is None:
                continue
            outputs.update(batch if logged else scorer(batch, str(path)), pool=pool)
    if outputs is not None and not logged:
        notes.append("the model's outputs were scored on the current data")
    return inputs, outputs, source


def _exact_ks(profile: ReferenceProfile, reference: Path, current: Path) -> dict[str, tuple[float, float]]:
    """Exact KS per numeric input, one column at a time (memory grows with rows here)."""
    out = {}
    for column in profile.role(Role.INPUT):
        if column.kind is not Kind.NUMERIC:
            continue
        values = []
        for path in (reference, current):
            source = FileSource(path, [Column(column.name, Kind.NUMERIC)])
            chunks = [b.column(0).to_numpy(zero_copy_only=False).astype(np.float64) for b in source.batches()]
            x = np.concatenate(chunks)
            values.append(x[np.isfinite(x)])
        if len(values[0]) and len(values[1]):
            out[column.name] = ks_exact(values[0], values[1])
    return out


def drift_file(
    registry: Registry,
    ref: str,
    current: Path,
    *,
    reference: Path | None = None,
    settings: DriftSettings | None = None,
    exact_ks: bool = False,
    score: bool = True,
    record: bool = True,
    profile_settings: ProfileSettings | None = None,
) -> DriftRun:
    """Compare ``current`` with the version's reference profile (or one built from ``reference``)."""
    version = registry.resolve(ref)
    if record:
        registry.whoami().require(Permission.REGISTER, subject=version.ref)
    if exact_ks and reference is None:
        raise InvalidInputError(
            "--exact-ks needs the raw reference data: give --reference FILE (a stored profile holds counts, never rows)"
        )
    notes: list[str] = []
    profile, profile_digest = _reference(registry, version, reference, score, record, profile_settings, notes)
    scorer = _Scorer(registry, version) if score and version.output_schema else None
    inputs, outputs, source = _count_file(profile, current, scorer, notes)
    exact = _exact_ks(profile, reference, current) if exact_ks and reference is not None else None
    result = compare(
        profile,
        inputs,
        outputs,
        current=CurrentData(source="file", uri=source.uri, sha256=source.sha256, rows=source.rows or 0),
        settings=settings,
        exact_ks=exact,
        profile_digest=profile_digest,
    )
    digest = store.record_result(registry, version, result) if record else None
    return DriftRun(result=result, digest=digest, profile_digest=profile_digest, notes=notes)


def _reference(
    registry: Registry,
    version: ModelVersion,
    reference: Path | None,
    score: bool,
    record: bool,
    settings: ProfileSettings | None,
    notes: list[str],
) -> tuple[ReferenceProfile, str]:
    """The profile to compare with: built from ``reference`` when given, else the version's own."""
    if reference is None:
        stored = store.bound_reference(registry, version)
        return stored.profile, stored.digest
    profile = profile_file(registry, version, reference, score=score, settings=settings)
    digest = store.store_profile(registry, profile) if record else profile.digest()
    notes.append(f"reference profile built from {reference} (sha256:{digest[:12]}), not bound to {version.ref}")
    return profile, digest


def drift_log(
    registry: Registry,
    ref: str,
    window: tuple[dt.datetime | None, dt.datetime | None] | None = None,
    *,
    reference: Path | None = None,
    settings: DriftSettings | None = None,
    exact_ks: bool = False,
    record: bool = True,
    profile_settings: ProfileSettings | None = None,
) -> DriftRun:
    """Compare the version's logged predictions in ``window`` (since, until) with its reference."""
    if exact_ks:
        raise InvalidInputError("--exact-ks needs raw values on both sides: give --current FILE and --reference FILE")
    version = registry.resolve(ref)
    if record:
        registry.whoami().require(Permission.REGISTER, subject=version.ref)
    notes: list[str] = []
    profile, profile_digest = _reference(registry, version, reference, True, record, profile_settings, notes)
    since, until = window or (None, None)
    source = LogSource(
        home=Path(registry.settings.home),
        model=version.name,
        version=version.version,
        inputs=[LogColumn(c.name, c.kind, c.type) for c in profile.role(Role.INPUT)],
        outputs=[LogColumn(c.name, c.kind, c.type) for c in profile.role(Role.OUTPUT)],
        since=since,
        until=until,
    )
    inputs = profile.accumulator(Role.INPUT)
    outputs = profile.accumulator(Role.OUTPUT) if profile.role(Role.OUTPUT) else None
    with worker_pool() as pool:
        for input_batch, output_batch in source.batches():
            inputs.update(input_batch, pool=pool)
            if outputs is not None:
                outputs.update(output_batch, pool=pool)
    result = compare(
        profile,
        inputs,
        outputs,
        current=CurrentData(source="log", uri=source.uri, rows=source.rows, since=since, until=until),
        settings=settings,
        profile_digest=profile_digest,
    )
    digest = store.record_result(registry, version, result) if record else None
    return DriftRun(result=result, digest=digest, profile_digest=profile_digest, notes=notes)
