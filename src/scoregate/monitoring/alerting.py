"""The monitoring policy and alerts in the registry, and the monitoring status of a version.

Like profiles and drift results (:mod:`store`), nothing here has a table of its own:

- ``monitor.policy`` on ``monitoring-policy``: a new monitoring policy in force; the
  document is a content-addressed blob (re-hashed on read), the event holds its digest,
  version number, author and reason. The audit log is hash-chained, so a policy cannot
  be swapped without ``audit verify`` naming the change.
- ``monitor.alert.fire`` / ``monitor.alert.resolve`` on ``name@version``: an alert of one
  kind opening or closing, with its summary, details and the recorded result behind it.
  Every audit event goes through the webhook outbox in its own transaction, so a
  subscriber (``webhook add URL --action 'monitor.alert.*'``) gets each one, HMAC-signed.

Alerts are evaluated only from records: the stored drift results (read back and
re-hashed), the live window history and performance results (:mod:`feeds`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scoregate.errors import InvalidInputError, NotFoundError
from scoregate.governance.access import Permission
from scoregate.monitoring import feeds, store
from scoregate.monitoring.alerts import Change, Observations, Transition, Verdict, evaluate, verdicts
from scoregate.monitoring.rules import DEFAULT_MONITORING_POLICY, AlertKind, MonitoringPolicy, TierRules
from scoregate.refs import ModelRef
from scoregate.registry import Registry
from scoregate.registry.records import ModelVersion
from scoregate.registry.tables import ModelRow

POLICY_SUBJECT = "monitoring-policy"
POLICY_ACTION = "monitor.policy"
FIRE_ACTION = "monitor.alert.fire"
RESOLVE_ACTION = "monitor.alert.resolve"
#: The stored drift results an evaluation reads back (the newest), enough for any ``consecutive``.
MAX_RESULTS = 100


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    version: int  # 0: the built-in default
    document: str
    digest: str
    author: str | None = None
    reason: str | None = None
    time: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    kind: AlertKind
    opened_seq: int
    opened_at: dt.datetime
    summary: str
    details: list[str]
    evidence: str | None
    resolved_at: dt.datetime | None = None

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "opened_seq": self.opened_seq,
            "opened_at": self.opened_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "summary": self.summary,
            "details": self.details,
            "evidence": self.evidence,
        }


@dataclass(frozen=True, slots=True)
class Status:
    """What ``monitor status`` shows for a version."""

    ref: str
    tier: str
    policy_version: int
    reference_digest: str | None
    last_result: store.HistoryEntry | None
    results: int
    alerts: list[Alert]  # open and resolved, oldest first
    verdicts: dict[AlertKind, Verdict | None] = field(default_factory=dict)  # the latest of each kind

    @property
    def open_alerts(self) -> list[Alert]:
        return [a for a in self.alerts if a.open]

    def as_json(self) -> dict[str, Any]:
        last = self.last_result
        return {
            "ref": self.ref,
            "tier": self.tier,
            "policy_version": self.policy_version,
            "reference_digest": self.reference_digest,
            "results": self.results,
            "last_result": None
            if last is None
            else {
                "seq": last.seq,
                "time": last.time.isoformat(),
                "result_digest": last.result_digest,
                "rows": last.current.get("rows"),
                "columns": last.columns,
                "drifted": last.drifted,
            },
            "open_alerts": [a.as_json() for a in self.open_alerts],
            "alerts": [a.as_json() for a in self.alerts],
            "verdicts": {
                k.value: None if v is None else {"breached": v.breached, "summary": v.summary, "at": v.at.isoformat()}
                for k, v in self.verdicts.items()
            },
        }


# -- the monitoring policy --------------------------------------------------------------------------


def _events(session: Session, subject: str, *actions: str) -> list[Any]:
    from scoregate.governance.audit import iter_events

    found = [e for action in actions for e in iter_events(session, subject=subject, action=action)]
    return sorted(found, key=lambda e: e.seq)


def _policy_in(session: Session, registry: Registry) -> PolicyVersion:
    events = _events(session, POLICY_SUBJECT, POLICY_ACTION)
    if not events:
        digest = hashlib.sha256(DEFAULT_MONITORING_POLICY.encode()).hexdigest()
        return PolicyVersion(0, DEFAULT_MONITORING_POLICY, digest)
    last = events[-1]
    document = registry.artifacts.read_bytes(last.after["digest"]).decode()  # re-hashed by the store
    return PolicyVersion(len(events), document, last.after["digest"], last.actor, last.reason, last.time)


def policy_in_force(registry: Registry) -> PolicyVersion:
    with registry.reading() as session:
        return _policy_in(session, registry)


def set_policy(registry: Registry, document: str, *, reason: str) -> PolicyVersion:
    """Put a new monitoring policy in force (an admin's change, with a reason, audited)."""
    MonitoringPolicy.parse(document)  # one clear line for a bad document, before anything is written
    if not reason or not reason.strip():
        raise InvalidInputError("a monitoring policy change needs a reason (--reason)")
    registry.whoami().require(Permission.MANAGE_POLICY, subject=POLICY_SUBJECT)
    digest = registry.artifacts.put_bytes(document.encode())
    with registry.mutation(Permission.MANAGE_POLICY, POLICY_SUBJECT) as (session, actor):
        previous = _policy_in(session, registry)
        if previous.digest == digest:
            return previous
        version = previous.version + 1
        registry.record_event(
            session,
            actor,
            POLICY_ACTION,
            POLICY_SUBJECT,
            before={"version": previous.version, "digest": previous.digest},
            after={"version": version, "digest": digest},
            reason=reason.strip(),
        )
    return PolicyVersion(version, document, digest, actor.name, reason.strip())


def policy_history(registry: Registry) -> list[dict[str, Any]]:
    with registry.reading() as session:
        events = _events(session, POLICY_SUBJECT, POLICY_ACTION)
    return [
        {"version": i, "digest": e.after["digest"], "author": e.actor, "reason": e.reason, "time": e.time}
        for i, e in enumerate(events, 1)
    ]


# -- alerts -----------------------------------------------------------------------------------------


def alerts_of(session: Session, ref: str) -> list[Alert]:
    """Every alert of a version, from its fire and resolve events, oldest first."""
    alerts: list[Alert] = []
    opened: dict[AlertKind, int] = {}
    for event in _events(session, ref, FIRE_ACTION, RESOLVE_ACTION):
        try:
            kind = AlertKind(event.after["kind"])
        except (KeyError, TypeError, ValueError):
            continue  # an event this version of scoregate does not know
        if event.action == FIRE_ACTION and kind not in opened:
            opened[kind] = len(alerts)
            alerts.append(
                Alert(
                    kind=kind,
                    opened_seq=event.seq,
                    opened_at=event.time,
                    summary=str(event.after.get("summary", "")),
                    details=[str(d) for d in event.after.get("details", [])],
                    evidence=event.after.get("evidence"),
                )
            )
        elif event.action == RESOLVE_ACTION and kind in opened:
            index = opened.pop(kind)
            a = alerts[index]
            alerts[index] = Alert(a.kind, a.opened_seq, a.opened_at, a.summary, a.details, a.evidence, event.time)
    return alerts


def _tier(session: Session, registry: Registry, version: ModelVersion) -> tuple[str | None, int]:
    model, _ = registry.find(session, ModelRef(version.name, version=version.version))
    return model.risk_tier, model.id


def observations(registry: Registry, version: ModelVersion) -> Observations:
    """What scoregate recorded about ``version``: its newest stored drift results, read back and
    re-hashed, its live window history and its performance results."""
    try:
        bound = store.bound_reference(registry, version).digest
    except NotFoundError:
        bound = None
    # only results against the version's own reference profile: a result computed against another
    # reference (``drift --reference FILE``, even the current data itself) must not resolve an alert
    entries = [e for e in store.history(registry, version) if e.profile_digest == bound][-MAX_RESULTS:]
    drift = [(e.result_digest, store.load_result(registry, e.result_digest)) for e in entries]
    return Observations(
        drift=drift,
        windows=feeds.window_history(registry, version),
        performance=feeds.performance_history(registry, version),
    )


def rules_for(registry: Registry, version: ModelVersion) -> tuple[TierRules, str, int]:
    with registry.reading() as session:
        tier, _ = _tier(session, registry, version)
        policy = _policy_in(session, registry)
    parsed = MonitoringPolicy.parse(policy.document)
    key = tier if tier in parsed.tiers else parsed.default_tier
    return parsed.rules_for(version.ref, tier), key, policy.version


def evaluate_version(registry: Registry, ref: str | ModelVersion) -> list[Change]:
    """Evaluate the version's alerts from its records and write each fire or resolve as an audit
    event (and so a signed webhook); the changes made."""
    version = registry.resolve(ref) if isinstance(ref, str) else ref
    registry.whoami().require(Permission.REGISTER, subject=version.ref)
    rules, _, policy_version = rules_for(registry, version)
    seen = observations(registry, version)
    with registry.mutation(Permission.REGISTER, version.ref) as (session, actor):
        _, model_id = _tier(session, registry, version)
        # one evaluation per model at a time: two racing ones must not both fire an alert
        session.execute(select(ModelRow.id).where(ModelRow.id == model_id).with_for_update())
        open_kinds = {a.kind for a in alerts_of(session, version.ref) if a.open}
        changes = evaluate(seen, rules, open_kinds)
        for change in changes:
            v = change.verdict
            registry.record_event(
                session,
                actor,
                FIRE_ACTION if change.transition is Transition.FIRE else RESOLVE_ACTION,
                version.ref,
                after={
                    "kind": change.kind.value,
                    "summary": v.summary,
                    "details": list(v.details),
                    "evidence": v.evidence,
                    "observed_at": v.at.isoformat(),
                    "policy_version": policy_version,
                },
            )
    return changes


def status(registry: Registry, ref: str | ModelVersion) -> Status:
    """The monitoring status of a version: its reference, last result, alerts and latest verdicts."""
    version = registry.resolve(ref) if isinstance(ref, str) else ref
    rules, tier, policy_version = rules_for(registry, version)
    entries = store.history(registry, version)
    with registry.reading() as session:
        alerts = alerts_of(session, version.ref)
        reference = _events(session, version.ref, store.REFERENCE_ACTION)
    latest: dict[AlertKind, Verdict | None] = {}
    if entries or feeds.has_records(registry, version):
        seen = observations(registry, version)
        for kind, judged in verdicts(seen, rules).items():
            latest[kind] = judged[-1] if judged else None
    return Status(
        ref=version.ref,
        tier=tier,
        policy_version=policy_version,
        reference_digest=reference[-1].after["profile_digest"] if reference else None,
        last_result=entries[-1] if entries else None,
        results=len(entries),
        alerts=alerts,
        verdicts=latest,
    )


def brief(registry: Registry, ref: str) -> dict[str, Any]:
    """The monitoring summary of a version for the inventory and the model card (no result is loaded)."""
    with registry.reading() as session:
        alerts = [a for a in alerts_of(session, ref) if a.open]
        drift = _events(session, ref, store.DRIFT_ACTION)
        reference = _events(session, ref, store.REFERENCE_ACTION)
    last = drift[-1] if drift else None
    return {
        "ref": ref,
        "reference_digest": reference[-1].after["profile_digest"] if reference else None,
        "results": len(drift),
        "last_drift": None
        if last is None
        else {
            "time": last.time.isoformat(),
            "result_digest": last.after["result_digest"],
            "drifted": list(last.after.get("drifted", [])),
            "columns": int(last.after.get("columns", 0)),
        },
        "open_alerts": [a.kind.value for a in alerts],
        "open_alert_details": [a.as_json() for a in alerts],
    }


def model_brief(registry: Registry, summary: Any) -> dict[str, Any]:
    """The monitoring summary of a model's watched version: its production alias's, else its latest."""
    number = summary.aliases.get("production") or summary.latest_version
    if number is None:
        return {"ref": None, "results": 0, "last_drift": None, "open_alerts": []}
    found = brief(registry, f"{summary.name}@{number}")
    found.pop("open_alert_details")
    return found


def inventory_line(found: dict[str, Any]) -> str:
    if found.get("ref") is None:
        return "-"
    last = found["last_drift"]
    drift = (
        "no drift result" if last is None else f"{len(last['drifted'])}/{last['columns']} drifted {last['time'][:10]}"
    )
    alerts = found["open_alerts"]
    shown = f"{len(alerts)} open alert{'s' if len(alerts) != 1 else ''} ({', '.join(alerts)})" if alerts else "no alert"
    return f"@{found['ref'].split('@')[1]}: {drift}; {shown}"
