"""Performance use cases: a version's realized and estimated performance, period by period.

The I/O edge of performance monitoring: reads the label store (:mod:`labels`), joins it
with the prediction log (:mod:`outcomes`), scores the reference when the estimate needs
calibrating, and stores results through :mod:`store`. The metrics are the pure core in
:mod:`performance`.

``performance(registry, version, by=...)`` is the one entry point other services (alerts,
reports) call; it returns a :class:`PerformanceResult` (``to_json()``), stored only by
:func:`record`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa

from scoregate.errors import InvalidInputError, NotFoundError
from scoregate.governance.access import Permission
from scoregate.monitoring import labels as label_store
from scoregate.monitoring import outcomes, store
from scoregate.monitoring.performance import (
    DEFINITIONS,
    HEADLINE,
    Calibrator,
    LabelsUsed,
    PerformanceResult,
    PerformanceSettings,
    Period,
    PeriodPerformance,
    Source,
    Target,
    Task,
    day_to_date,
    estimate,
    fit_calibrator,
    lag_of,
    period_starts,
    predicted_binary,
    realized,
    target_of,
)
from scoregate.registry import Registry
from scoregate.registry.records import ModelVersion

#: Rows of a --reference file the calibration reads at most (a bound on its memory).
MAX_REFERENCE_ROWS = 2_000_000


def _version(registry: Registry, version: ModelVersion | str) -> ModelVersion:
    return version if isinstance(version, ModelVersion) else registry.resolve(version)


# -- the reference the estimate is calibrated on ----------------------------------------------------------------


def calibrator_for(
    registry: Registry,
    version: ModelVersion,
    target: Target,
    settings: PerformanceSettings,
    *,
    reference: Path | None = None,
    label: str | None = None,
    notes: list[str],
) -> Calibrator | None:
    """Isotonic calibration on reference scores and labels: from ``reference`` (its ``label``
    column) when given, else the registration's training sample and target; None (with a
    note) when there are no reference labels."""
    from scoregate.monitoring.service import _Scorer

    if target.task is not Task.BINARY:
        return None
    scorer = _Scorer(registry, version)
    features = version.input_schema.feature_names
    if reference is not None:
        if label is None:
            raise InvalidInputError("--reference FILE needs --label COLUMN (the reference's labels)")
        from scoregate.monitoring.counts import Kind
        from scoregate.monitoring.profile import input_columns
        from scoregate.monitoring.sources import Column, FileSource

        if label in features:
            raise InvalidInputError(f"--label {label!r} is an input of {version.ref}, not its labels")
        columns = [c for c, _ in input_columns(version.input_schema)]
        source = FileSource(reference, [*columns, Column(label, Kind.UNTRACKED)])
        scores, positives = [], []
        rows = 0
        for batch in source.batches():
            rows += batch.num_rows
            if rows > MAX_REFERENCE_ROWS:
                raise InvalidInputError(
                    f"{reference} has more than {MAX_REFERENCE_ROWS:,} rows; calibrate on a sample of it"
                )
            names = label_store._class_labels(reference, label, pa.chunked_array([batch.column(label)]), target.classes)
            inputs = batch.select(features)
            scores.append(_positive_score(scorer(inputs, str(reference)), target))
            positives.append(names == target.positive)
        return fit_calibrator(
            np.concatenate(scores),
            np.concatenate(positives),
            uri=source.uri,
            sha256=source.sha256,
            settings=settings,
        )
    column = version.input_schema.target
    try:
        frame = registry.reference_data(version.ref)
    except NotFoundError:
        frame = None
    if frame is None or column is None or column not in frame.columns:
        notes.append(
            "no estimate: the registration kept no labelled training sample; give --reference FILE --label COLUMN"
        )
        return None
    batch = pa.RecordBatch.from_pandas(frame[features], preserve_index=False)
    names = label_store._class_labels(
        Path("the training sample"), column, pa.chunked_array([pa.array(frame[column])]), target.classes
    )
    return fit_calibrator(
        _positive_score(scorer(batch, "the training sample"), target),
        names == target.positive,
        uri=f"training sample of {version.ref} ({version.training_data_uri or 'training data'})",
        sha256=version.reference_digest,
        settings=settings,
    )


def _positive_score(outputs: pa.RecordBatch, target: Target) -> np.ndarray:
    return outputs.column(target.scores[1]).to_numpy(zero_copy_only=False).astype(np.float64)


# -- measuring ---------------------------------------------------------------------------------------------------


def _period(
    target: Target,
    joined: outcomes.Joined,
    rows: np.ndarray,
    calibrator: Calibrator | None,
    settings: PerformanceSettings,
    start: int | None,
    end: int | None,
) -> PeriodPerformance:
    labelled = rows[joined.labelled[rows]]
    usable = labelled
    if joined.scores is not None:
        usable = labelled[np.isfinite(joined.scores[labelled]).all(axis=1)]
    elif joined.predicted is not None:
        usable = labelled[np.isfinite(joined.predicted[labelled])]
    figures = realized(
        target,
        joined.label[usable],
        joined.scores[usable] if joined.scores is not None else None,
        joined.predicted[usable] if joined.predicted is not None else None,
        settings,
    )
    estimated = {}
    if calibrator is not None and joined.scores is not None:
        scored = rows[np.isfinite(joined.scores[rows, 1])]
        score = joined.scores[scored, 1]
        predicted = joined.predicted[scored] if joined.predicted is not None else None
        decisions = predicted_binary(target, score, predicted, settings.threshold)
        estimated = estimate(calibrator, score, decisions, settings, seed=start if start is not None else 0)
    share = len(labelled) / len(rows) if len(rows) else 0.0
    headline = HEADLINE[target.task]
    source, figure = Source.NONE, None
    if figures and share >= settings.complete_share and figures.get(headline) is not None:
        source, figure = Source.REALIZED, figures[headline]
    elif headline in estimated and estimated[headline].value is not None:
        source, figure = Source.ESTIMATED, estimated[headline].value
    elif figures.get(headline) is not None and calibrator is None:
        source, figure = Source.REALIZED, figures[headline]  # partial labels, and nothing better
    return PeriodPerformance(
        start=day_to_date(start) if start is not None else None,
        end=day_to_date(end) if end is not None else None,
        predictions=len(rows),
        labelled=len(labelled),
        matched_share=round(share, 6),
        lag=lag_of(joined.timestamp_us[labelled], joined.label_at_us[labelled]),
        realized=figures,
        estimated=estimated,
        source=source,
        figure=figure,
    )


def summarize(
    target: Target,
    joined: outcomes.Joined,
    calibrator: Calibrator | None,
    settings: PerformanceSettings,
    by: Period,
) -> tuple[list[PeriodPerformance], PeriodPerformance]:
    """Each period's figures, and the whole window's (pure: the joined rows in, figures out)."""
    starts = period_starts(joined.timestamp_us, by)
    order = np.argsort(starts, kind="stable")
    bounds = np.flatnonzero(np.diff(starts[order])) + 1
    step = 7 if by is Period.WEEK else 1
    periods = [
        _period(target, joined, rows, calibrator, settings, int(starts[rows[0]]), int(starts[rows[0]]) + step)
        for rows in np.split(order, bounds)
    ]
    return periods, _period(target, joined, np.arange(joined.rows), calibrator, settings, None, None)


def performance(
    registry: Registry,
    version: ModelVersion | str,
    *,
    by: Period | str = Period.DAY,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    reference: Path | None = None,
    label: str | None = None,
    settings: PerformanceSettings | None = None,
    now: dt.datetime | None = None,
) -> PerformanceResult:
    """Realized metrics (where labels have landed) and the label-free estimate of ``version``,
    per UTC day or ISO week of prediction, over its logged predictions in [since, until)."""
    from scoregate.monitoring.service import subject_of

    version = _version(registry, version)
    by = Period(by)
    settings = settings or PerformanceSettings()
    target = target_of(version.output_schema, version.ref)
    notes: list[str] = []
    batches, paths = label_store.stored_labels(registry, version.name)
    key = batches[0].key if batches else None
    folder = Path(registry.settings.home) / "predictions" / f"model={version.name}" / f"version={version.version}"
    joined = outcomes.join(
        folder,
        target,
        key,
        paths,
        since=since,
        until=until,
        logged={o.name for o in version.output_schema},
    )
    if not batches:
        notes.append(f"no labels stored for {version.name}: `scoregate labels ingest {version.ref} FILE ...`")
    if joined.reused_labels:
        notes.append(f"{joined.reused_labels:,} label(s) matched more than one prediction (a reused id)")
    calibrator = calibrator_for(registry, version, target, settings, reference=reference, label=label, notes=notes)
    if joined.scores is not None:
        missing = int((~np.isfinite(joined.scores).all(axis=1)).sum())
        if missing:
            notes.append(f"{missing:,} prediction(s) have no logged score and are left out")
    periods, overall = summarize(target, joined, calibrator, settings, by)
    stored = sum(b.rows for b in batches)
    return PerformanceResult(
        subject=subject_of(version),
        task=target.task,
        classes=list(target.classes),
        positive_class=target.positive,
        headline=HEADLINE[target.task],
        by=by,
        since=since,
        until=until,
        computed_at=now or dt.datetime.now(dt.UTC),
        settings=settings,
        labels=LabelsUsed(key=key, batches=[b.digest for b in batches], stored=stored, matched=joined.matched_labels),
        overall=overall,
        periods=periods,
        calibration=calibrator.calibration if calibrator is not None else None,
        definitions={k: v for k, v in DEFINITIONS.items() if k in _used(overall)},
        notes=notes,
    )


def _used(period: PeriodPerformance) -> set[str]:
    return {*period.realized, *period.estimated, "matched_share", "label_lag"}


def record(registry: Registry, version: ModelVersion | str, result: PerformanceResult) -> str:
    """Store ``result`` and link it to the version (a ``monitor.performance`` audit event)."""
    version = _version(registry, version)
    return store.record_performance(registry, version, result)


def measure(
    registry: Registry,
    ref: str,
    *,
    record_result: bool = True,
    **options: object,
) -> tuple[PerformanceResult, str | None]:
    """``monitor performance``: compute, and store unless told not to; (result, its digest)."""
    version = registry.resolve(ref)
    if record_result:
        registry.whoami().require(Permission.REGISTER, subject=version.ref)  # before the long join
    result = performance(registry, version, **options)  # type: ignore[arg-type]
    digest = record(registry, version, result) if record_result else None
    return result, digest
