"""Alert evaluation: recorded observations and the rules in force -> which alerts fire or resolve.

Pure: it takes what scoregate recorded (stored drift results, live window records,
performance results) and the set of alerts already open, and returns the transitions;
:mod:`alerting` reads the records and writes the transitions as audit events.

Each kind of alert has one verdict per observation (breached, clean, or not judged)
and hysteresis: it fires after ``consecutive`` breached observations in a row and
resolves after as many clean ones, so an alert does not flap on a borderline value.
Observations that could not be judged (too few rows, nothing recorded) are skipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from scoregate.monitoring.drift import DriftResult
from scoregate.monitoring.profile import Role
from scoregate.monitoring.rules import AlertKind, DriftRule, LiveRule, PerformanceRule, QualityRule, TierRules

#: Details kept per verdict (an alert names at most this many columns).
MAX_DETAILS = 20


class Transition(StrEnum):
    FIRE = "fire"
    RESOLVE = "resolve"


@dataclass(frozen=True, slots=True)
class WindowRecord:
    """One closed live window of a served version, as the server persisted it.

    As :mod:`feeds` reads it from the server's window history: ``feature_drift`` maps
    (feature, statistic) to the value exported as ``scoregate_feature_drift``,
    ``quality_ratio`` (feature, kind) to ``scoregate_feature_quality_ratio`` and
    ``output_drift`` (output, statistic) to ``scoregate_output_drift``.
    """

    end: dt.datetime
    window: str
    rows: int
    feature_drift: Mapping[tuple[str, str], float] = field(default_factory=dict)
    quality_ratio: Mapping[tuple[str, str], float] = field(default_factory=dict)
    output_drift: Mapping[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PerformanceRecord:
    """One recorded performance result (labels joined to logged predictions): the seam to
    the labels module's ``performance(...)``; ``metrics`` maps a metric name to its value."""

    computed_at: dt.datetime
    rows: int
    metrics: Mapping[str, float]
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """One observation judged for one kind of alert: None when it could not be judged."""

    breached: bool | None
    at: dt.datetime
    summary: str
    details: tuple[str, ...] = ()
    evidence: str | None = None  # the digest of the recorded result it came from


@dataclass(frozen=True, slots=True)
class Change:
    kind: AlertKind
    transition: Transition
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class Observations:
    """What one evaluation looks at, oldest first, each list from a record scoregate made."""

    drift: Sequence[tuple[str, DriftResult]] = ()  # (result digest, result)
    windows: Sequence[WindowRecord] = ()
    performance: Sequence[PerformanceRecord] = ()


# -- verdicts ---------------------------------------------------------------------------------------


def drift_verdict(result: DriftResult, rule: DriftRule, evidence: str | None = None) -> Verdict:
    # the verdict is the policy's, from the recorded figures: a run's own alpha or threshold cannot hide drift
    judged = [c for c in result.columns if c.p_adjusted is not None and c.value is not None]
    material = [c for c in judged if c.value >= rule.min_effect and c.p_adjusted <= rule.alpha]  # type: ignore[operator]
    inputs = [c for c in judged if c.role is Role.INPUT]
    drifted_inputs = [c for c in material if c.role is Role.INPUT]
    drifted_outputs = [c for c in material if c.role is Role.OUTPUT]
    at = result.computed_at
    if not judged:
        return Verdict(None, at, "no column could be judged", evidence=evidence)
    share = len(drifted_inputs) / len(inputs) if inputs else 0.0
    breached = (bool(drifted_inputs) and share > rule.max_drifted_share) or (rule.outputs and bool(drifted_outputs))
    details = tuple(
        f"{c.name} ({c.role.value}): {c.statistic.value if c.statistic else '?'} {c.value:.4f}"
        for c in sorted(material, key=lambda c: -(c.value or 0))[:MAX_DETAILS]
    )
    summary = (
        f"{len(drifted_inputs)} of {len(inputs)} inputs drifted ({share:.0%}, allowed {rule.max_drifted_share:.0%})"
        + (f", {len(drifted_outputs)} output(s)" if drifted_outputs else "")
        + f" on {result.current.rows:,} rows"
    )
    return Verdict(breached, at, summary, details, evidence)


def quality_verdict(result: DriftResult, rule: QualityRule, evidence: str | None = None) -> Verdict:
    problems: list[str] = []
    looked = 0
    for c in result.columns:
        if c.role is not Role.INPUT or c.quality.null_share_current is None:  # no current rows
            continue
        q = c.quality
        looked += 1
        if q.null_share_current is not None and q.null_share_reference is not None:
            rise = q.null_share_current - q.null_share_reference
            if rise > rule.max_null_share_increase:
                problems.append(f"{c.name}: nulls {q.null_share_current:.1%} (reference {q.null_share_reference:.1%})")
        outside = (q.below_range_share or 0) + (q.above_range_share or 0)
        if outside > rule.max_out_of_range_share:
            problems.append(f"{c.name}: {outside:.1%} outside the reference range")
        if q.other_share_current is not None:
            new = q.other_share_current - (q.other_share_reference or 0)
            if new > rule.max_new_level_share:
                problems.append(f"{c.name}: {new:.1%} more rows in levels outside the reference's")
        if q.invalid_current > rule.max_invalid:
            problems.append(f"{c.name}: {q.invalid_current:,} invalid values")
    if not looked:
        return Verdict(None, result.computed_at, "no input column had current values", evidence=evidence)
    summary = f"{len(problems)} data-quality problem(s) in {looked} inputs" if problems else f"{looked} inputs clean"
    return Verdict(bool(problems), result.computed_at, summary, tuple(problems[:MAX_DETAILS]), evidence)


def live_drift_verdict(window: WindowRecord, rule: LiveRule) -> Verdict:
    problems = [
        f"{name} ({kind}): {statistic} {value:.4f}"
        for kind, values in (("input", window.feature_drift), ("output", window.output_drift))
        for (name, statistic), value in sorted(values.items())
        if statistic in (rule.feature_drift if kind == "input" else rule.output_drift)
        and value >= (rule.feature_drift if kind == "input" else rule.output_drift)[statistic]
    ]
    if not window.feature_drift and not window.output_drift:
        return Verdict(None, window.end, f"window {window.window} had no drift figures")
    if window.rows < rule.min_rows:
        return Verdict(None, window.end, f"window {window.window} had {window.rows} rows (< {rule.min_rows})")
    summary = f"{len(problems)} live drift breach(es) in the {window.window} window ending {window.end:%Y-%m-%d %H:%M}"
    return Verdict(bool(problems), window.end, summary, tuple(problems[:MAX_DETAILS]))


def live_quality_verdict(window: WindowRecord, rule: LiveRule) -> Verdict:
    problems = [
        f"{feature}: {kind} {ratio:.1%}"
        for (feature, kind), ratio in sorted(window.quality_ratio.items())
        if kind in rule.quality_ratio and ratio > rule.quality_ratio[kind]
    ]
    if not window.quality_ratio or window.rows < rule.min_rows:
        return Verdict(None, window.end, f"window {window.window} had no quality figures or too few rows")
    summary = f"{len(problems)} live quality breach(es) in the {window.window} window"
    return Verdict(bool(problems), window.end, summary, tuple(problems[:MAX_DETAILS]))


def performance_verdict(record: PerformanceRecord, rule: PerformanceRule) -> Verdict:
    problems = [
        f"{name} {record.metrics[name]:.4f} < {bound:g}"
        for name, bound in sorted(rule.minimum.items())
        if name in record.metrics and record.metrics[name] < bound
    ] + [
        f"{name} {record.metrics[name]:.4f} > {bound:g}"
        for name, bound in sorted(rule.maximum.items())
        if name in record.metrics and record.metrics[name] > bound
    ]
    watched = [n for n in (*rule.minimum, *rule.maximum) if n in record.metrics]
    if not watched:
        return Verdict(None, record.computed_at, "no watched metric in the result", evidence=record.digest)
    summary = f"{len(problems)} of {len(watched)} watched metric(s) out of bounds on {record.rows:,} labelled rows"
    return Verdict(bool(problems), record.computed_at, summary, tuple(problems), record.digest)


def verdicts(observations: Observations, rules: TierRules) -> dict[AlertKind, list[Verdict]]:
    """Every observation judged, per kind of alert, oldest first."""
    return {
        AlertKind.DRIFT: [drift_verdict(r, rules.drift, d) for d, r in observations.drift],
        AlertKind.QUALITY: [quality_verdict(r, rules.quality, d) for d, r in observations.drift],
        AlertKind.LIVE_DRIFT: [live_drift_verdict(w, rules.live) for w in observations.windows],
        AlertKind.LIVE_QUALITY: [live_quality_verdict(w, rules.live) for w in observations.windows],
        AlertKind.PERFORMANCE: [performance_verdict(p, rules.performance) for p in observations.performance],
    }


def consecutive_needed(kind: AlertKind, rules: TierRules) -> int:
    return {
        AlertKind.DRIFT: rules.drift.consecutive,
        AlertKind.QUALITY: rules.quality.consecutive,
        AlertKind.PERFORMANCE: rules.performance.consecutive,
        AlertKind.LIVE_DRIFT: rules.live.consecutive,
        AlertKind.LIVE_QUALITY: rules.live.consecutive,
    }[kind]


# -- transitions ------------------------------------------------------------------------------------


def decide(judged: Sequence[Verdict], needed: int, is_open: bool) -> Transition | None:
    """Fire after ``needed`` breaches in a row, resolve after as many clean verdicts."""
    recent = [v for v in judged if v.breached is not None][-needed:]
    if len(recent) < needed:
        return None
    if not is_open and all(v.breached for v in recent):
        return Transition.FIRE
    if is_open and not any(v.breached for v in recent):
        return Transition.RESOLVE
    return None


def evaluate(observations: Observations, rules: TierRules, open_kinds: set[AlertKind]) -> list[Change]:
    """The alerts to fire and to resolve, given those already open."""
    changes = []
    for kind, judged in verdicts(observations, rules).items():
        transition = decide(judged, consecutive_needed(kind, rules), kind in open_kinds)
        if transition is not None:
            latest = [v for v in judged if v.breached is not None][-1]
            changes.append(Change(kind, transition, latest))
    return changes


def replay(history: Sequence[Observations], rules: TierRules) -> list[Change]:
    """Evaluate after each step of ``history`` (cumulative observations), as a scheduler would;
    the changes in order. The false-alarm test runs 30 simulated days through this."""
    open_kinds: set[AlertKind] = set()
    changes: list[Change] = []
    for step in history:
        for change in evaluate(step, rules, open_kinds):
            changes.append(change)
            if change.transition is Transition.FIRE:
                open_kinds.add(change.kind)
            else:
                open_kinds.discard(change.kind)
    return changes
