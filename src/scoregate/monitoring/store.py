"""Profiles and drift results in the registry: content-addressed blobs, indexed by audit events.

A profile or a result is canonical JSON stored in the artifact store under its SHA-256
(re-hashed on every read, so an edited blob is refused). What binds it to a version is
an audit event, written in the same transaction as the check that allows it:

- ``monitor.reference`` on ``name@version``: the version's reference profile. A version
  has one; recording a different one is refused (profiles are immutable), the same one
  again is a no-op.
- ``monitor.drift`` on ``name@version``: one stored result, with its profile digest, the
  data it was computed on and the columns that drifted. ``monitor history`` lists them.
- ``monitor.performance`` on ``name@version``: one performance result (realized metrics
  and the estimate), with the label batches it was computed from.

The audit log is append-only and hash-chained, so this index cannot be edited without
``audit verify`` naming the change; no table of its own is needed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scoregate.errors import ConflictError, IntegrityError, NotFoundError
from scoregate.governance.access import Permission
from scoregate.monitoring.drift import DriftResult
from scoregate.monitoring.performance import PerformanceResult
from scoregate.monitoring.profile import ReferenceProfile
from scoregate.refs import ModelRef
from scoregate.registry import Registry
from scoregate.registry.records import ModelVersion
from scoregate.registry.tables import ModelRow

REFERENCE_ACTION = "monitor.reference"
DRIFT_ACTION = "monitor.drift"
PERFORMANCE_ACTION = "monitor.performance"


@dataclass(frozen=True, slots=True)
class StoredProfile:
    digest: str
    profile: ReferenceProfile
    recorded_at: dt.datetime
    recorded_by: str


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    seq: int
    time: dt.datetime
    actor: str
    result_digest: str
    profile_digest: str
    current: dict[str, Any]
    columns: int
    drifted: list[str]
    calibrated: bool


def _events(session: Session, subject: str, action: str) -> list[Any]:
    from scoregate.governance.audit import iter_events

    return list(iter_events(session, subject=subject, action=action))


def store_profile(registry: Registry, profile: ReferenceProfile) -> str:
    """Write the profile blob (idempotent); returns its digest."""
    return registry.artifacts.put_bytes(profile.canonical_json())


def record_reference(registry: Registry, version: ModelVersion, profile: ReferenceProfile) -> tuple[str, bool]:
    """Bind ``profile`` to ``version``; returns (digest, whether it was newly recorded)."""
    subject = profile.subject
    if subject is None or (subject.model, subject.version) != (version.name, version.version):
        raise ConflictError(f"this profile does not describe {version.ref}")
    digest = store_profile(registry, profile)
    with registry.mutation(Permission.REGISTER, version.ref) as (session, actor):
        model, _ = registry.find(session, ModelRef(version.name, version=version.version))
        # serialise concurrent recordings for one model (SQLite already holds its write lock)
        session.execute(select(ModelRow.id).where(ModelRow.id == model.id).with_for_update())
        existing = _events(session, version.ref, REFERENCE_ACTION)
        if existing:
            bound = existing[-1].after["profile_digest"]
            if bound == digest:
                return digest, False
            raise ConflictError(
                f"{version.ref} already has the reference profile sha256:{bound[:12]}; a profile is immutable "
                "(register a new version to monitor against other data)"
            )
        registry.record_event(
            session,
            actor,
            REFERENCE_ACTION,
            version.ref,
            after={
                "profile_digest": digest,
                "rows": profile.source.rows,
                "source_sha256": profile.source.sha256,
                "columns": len(profile.columns),
                "statistics": profile.statistics,
            },
        )
    return digest, True


def load_profile(registry: Registry, digest: str) -> ReferenceProfile:
    return ReferenceProfile.from_json(registry.artifacts.read_bytes(digest))


def bound_reference(registry: Registry, version: ModelVersion) -> StoredProfile:
    """The reference profile recorded for ``version``, checked against it."""
    with registry.reading() as session:
        events = _events(session, version.ref, REFERENCE_ACTION)
    if not events:
        raise NotFoundError(
            f"{version.ref} has no reference profile: record one with `scoregate monitor reference {version.ref} DATA`"
            " or give --reference FILE"
        )
    event = events[-1]
    digest = event.after["profile_digest"]
    profile = load_profile(registry, digest)
    subject = profile.subject
    if subject is None or (subject.model, subject.version, subject.artifact_digest) != (
        version.name,
        version.version,
        version.artifact_digest,
    ):
        raise IntegrityError(
            f"the reference profile sha256:{digest[:12]} recorded for {version.ref} describes another version"
        )
    return StoredProfile(digest=digest, profile=profile, recorded_at=event.time, recorded_by=event.actor)


def record_result(registry: Registry, version: ModelVersion, result: DriftResult) -> str:
    """Store ``result`` and link it to ``version`` in the audit log; returns its digest."""
    digest = registry.artifacts.put_bytes(result.canonical_json())
    current = result.current.model_dump(mode="json", exclude_none=True)
    with registry.mutation(Permission.REGISTER, version.ref) as (session, actor):
        registry.find(session, ModelRef(version.name, version=version.version))
        registry.record_event(
            session,
            actor,
            DRIFT_ACTION,
            version.ref,
            after={
                "result_digest": digest,
                "profile_digest": result.profile_digest,
                "current": current,
                "columns": len(result.columns),
                "drifted": [c.name for c in result.drifted],
                "calibrated": result.settings.calibrated,
                "alpha": result.settings.alpha,
            },
        )
    return digest


def load_result(registry: Registry, digest: str) -> DriftResult:
    return DriftResult.model_validate_json(registry.artifacts.read_bytes(digest))


def history(registry: Registry, version: ModelVersion) -> list[HistoryEntry]:
    """Every drift result recorded for ``version``, oldest first."""
    with registry.reading() as session:
        events = _events(session, version.ref, DRIFT_ACTION)
    return [
        HistoryEntry(
            seq=e.seq,
            time=e.time,
            actor=e.actor,
            result_digest=e.after["result_digest"],
            profile_digest=e.after["profile_digest"],
            current=e.after.get("current", {}),
            columns=int(e.after.get("columns", 0)),
            drifted=list(e.after.get("drifted", [])),
            calibrated=bool(e.after.get("calibrated", False)),
        )
        for e in events
    ]


# -- performance results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PerformanceEntry:
    seq: int
    time: dt.datetime
    actor: str
    result_digest: str
    by: str
    predictions: int
    labelled: int
    figure: float | None
    source: str


def record_performance(registry: Registry, version: ModelVersion, result: PerformanceResult) -> str:
    """Store a performance result and link it to ``version`` (``monitor.performance``); its digest."""
    subject = result.subject
    if (subject.model, subject.version) != (version.name, version.version):
        raise ConflictError(f"this performance result does not describe {version.ref}")
    digest = registry.artifacts.put_bytes(result.canonical_json())
    overall = result.overall
    with registry.mutation(Permission.REGISTER, version.ref) as (session, actor):
        registry.find(session, ModelRef(version.name, version=version.version))
        registry.record_event(
            session,
            actor,
            PERFORMANCE_ACTION,
            version.ref,
            after={
                "result_digest": digest,
                "by": result.by.value,
                "headline": result.headline,
                "predictions": overall.predictions,
                "labelled": overall.labelled,
                "figure": overall.figure,
                "source": overall.source.value,
                "label_batches": result.labels.batches,
                "since": result.since.isoformat() if result.since else None,
                "until": result.until.isoformat() if result.until else None,
            },
        )
    return digest


def load_performance(registry: Registry, digest: str) -> PerformanceResult:
    return PerformanceResult.model_validate_json(registry.artifacts.read_bytes(digest))


def performance_history(registry: Registry, version: ModelVersion) -> list[PerformanceEntry]:
    """Every performance result recorded for ``version``, oldest first."""
    with registry.reading() as session:
        events = _events(session, version.ref, PERFORMANCE_ACTION)
    return [
        PerformanceEntry(
            seq=e.seq,
            time=e.time,
            actor=e.actor,
            result_digest=e.after["result_digest"],
            by=e.after.get("by", ""),
            predictions=int(e.after.get("predictions", 0)),
            labelled=int(e.after.get("labelled", 0)),
            figure=e.after.get("figure"),
            source=e.after.get("source", ""),
        )
        for e in events
    ]
