"""The monitoring policy: when a version's monitoring raises an alert, per risk tier or version.

A reviewable YAML document kept in the registry, versioned and audited like the
governance policy (``scoregate monitor policy set FILE --reason ...``). Parsing and
resolving the thresholds for one version are pure; storing is :mod:`alerting`'s job.

Default thresholds are effect sizes, not p-values: a stored drift result already
decides each column by an effect size (0.1) *and* a multiple-testing-adjusted test,
so the alert asks for that verdict on a material share of the columns, and on
``consecutive`` evaluations in a row before it fires (and as many clean ones before it
resolves), which keeps a single unlucky comparison from paging anyone. The live
thresholds (for Prometheus) are higher, 0.25 (PSI's "significant shift" band), since
a live window is compared far more often than a daily batch.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scoregate.documents import parse_yaml, where
from scoregate.errors import InvalidInputError, InvalidReferenceError

DEFAULT_MONITORING_POLICY = """\
# scoregate monitoring policy. Change it with `scoregate monitor policy set FILE --reason ...`
# (admin); every change is versioned and audited. Alerts are evaluated from what scoregate
# recorded: stored drift results, the live window history and performance results.
default_tier: high          # a model without a risk tier is held to this tier
tiers:
  high:
    drift:
      max_drifted_share: 0.0      # alert when a larger share of the judged columns drifted
      min_effect: 0.1             # ...and their deciding statistic reached this effect size
      alpha: 0.01                 # ...with a BH-adjusted p-value at most this (whatever the run's own alpha)
      consecutive: 2              # results in a row before it fires; clean ones before it resolves
      outputs: true               # a drifted model output alone raises the alert too
    quality:
      max_null_share_increase: 0.05   # current null share minus the reference's
      max_out_of_range_share: 0.05    # values outside the reference range (numeric)
      max_new_level_share: 0.05       # levels the reference did not have (categorical)
      max_invalid: 0                  # values of the wrong type
      consecutive: 2
    performance:
      minimum: {}                 # e.g. {roc_auc: 0.70}: alert below
      maximum: {}                 # e.g. {brier: 0.20}: alert above
      consecutive: 1
    live:
      window: 15m                 # the live window the gauges describe (the server exports 15m and 24h)
      for: 15m                    # how long a breach must last before Prometheus fires
      feature_drift: {psi: 0.25, jensen_shannon: 0.25, ks: 0.25}
      output_drift: {psi: 0.25, jensen_shannon: 0.25, ks: 0.25}
      quality_ratio: {missing: 0.05, out_of_range: 0.05, unseen_category: 0.05, invalid: 0.01, refused: 0.01}
      consecutive: 3              # stored live windows in a row before the recorded alert fires
      min_rows: 100               # a window with fewer rows is not judged
  medium:
    drift: {max_drifted_share: 0.1, min_effect: 0.1, consecutive: 2}
    live: {window: 15m, for: 30m}
  low:
    drift: {max_drifted_share: 0.25, min_effect: 0.25, consecutive: 3}
    quality: {max_null_share_increase: 0.1, max_out_of_range_share: 0.1, max_new_level_share: 0.1,
              max_invalid: 100, consecutive: 3}
    live: {window: 24h, for: 1h}
versions: {}                # per version, overriding its tier: {"credit-risk@3": {drift: {min_effect: 0.2}}}
"""

_DURATION = re.compile(r"^([1-9][0-9]{0,5})(s|m|h|d)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int:
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 1h or 7d")
    return int(match.group(1)) * _SECONDS[match.group(2)]


class AlertKind(StrEnum):
    """What an alert is about; one alert of each kind at most is open per version."""

    DRIFT = "drift"
    QUALITY = "quality"
    PERFORMANCE = "performance"
    LIVE_DRIFT = "live_drift"
    LIVE_QUALITY = "live_quality"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DriftRule(_Strict):
    max_drifted_share: float = Field(default=0.0, ge=0, lt=1)
    min_effect: float = Field(default=0.1, gt=0)
    alpha: float = Field(default=0.01, gt=0, lt=1)
    consecutive: int = Field(default=2, ge=1, le=100)
    outputs: bool = True


class QualityRule(_Strict):
    max_null_share_increase: float = Field(default=0.05, ge=0, le=1)
    max_out_of_range_share: float = Field(default=0.05, ge=0, le=1)
    max_new_level_share: float = Field(default=0.05, ge=0, le=1)
    max_invalid: int = Field(default=0, ge=0)
    consecutive: int = Field(default=2, ge=1, le=100)


class PerformanceRule(_Strict):
    minimum: dict[str, float] = Field(default_factory=dict)
    maximum: dict[str, float] = Field(default_factory=dict)
    consecutive: int = Field(default=1, ge=1, le=100)


def _effect_sizes(value: dict[str, float]) -> dict[str, float]:
    from scoregate.monitoring.drift import DECIDING

    allowed = {s.value for s in DECIDING}
    for name, threshold in value.items():
        if name not in allowed:
            raise ValueError(f"{name!r} is not an effect-size statistic (choose from {', '.join(sorted(allowed))})")
        if not threshold > 0:
            raise ValueError(f"the threshold of {name} must be positive")
    return value


class LiveRule(_Strict):
    window: str = "15m"
    for_: str = Field(default="15m", alias="for")
    feature_drift: dict[str, float] = Field(default_factory=lambda: {"psi": 0.25, "jensen_shannon": 0.25, "ks": 0.25})
    output_drift: dict[str, float] = Field(default_factory=lambda: {"psi": 0.25, "jensen_shannon": 0.25, "ks": 0.25})
    quality_ratio: dict[str, float] = Field(
        default_factory=lambda: {
            "missing": 0.05,
            "out_of_range": 0.05,
            "unseen_category": 0.05,
            "invalid": 0.01,
            "refused": 0.01,
        }
    )
    consecutive: int = Field(default=3, ge=1, le=24)
    min_rows: int = Field(default=100, ge=1)  # a window with fewer rows is not judged (its figures are noise)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("window", "for_")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_seconds(value)
        return value

    @field_validator("feature_drift", "output_drift")
    @classmethod
    def _statistics(cls, value: dict[str, float]) -> dict[str, float]:
        return _effect_sizes(value)

    @field_validator("quality_ratio")
    @classmethod
    def _ratios(cls, value: dict[str, float]) -> dict[str, float]:
        for kind, ratio in value.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", kind):
                raise ValueError(f"quality kind {kind!r} must be lower-case letters, digits and '_'")
            if not 0 <= ratio <= 1:
                raise ValueError(f"the ratio of {kind} must be between 0 and 1")
        return value


class TierRules(_Strict):
    drift: DriftRule = Field(default_factory=DriftRule)
    quality: QualityRule = Field(default_factory=QualityRule)
    performance: PerformanceRule = Field(default_factory=PerformanceRule)
    live: LiveRule = Field(default_factory=LiveRule)


class MonitoringPolicy(_Strict):
    default_tier: str = "high"
    tiers: dict[str, TierRules] = Field(min_length=1)
    versions: dict[str, dict[str, dict[str, object]]] = Field(default_factory=dict)

    def rules_for(self, ref: str, tier: str | None) -> TierRules:
        """The rules a version is held to: its tier's, with the version's own overrides on top."""
        key = tier if tier in self.tiers else self.default_tier
        base = self.tiers[key]
        override = self.versions.get(ref)
        if not override:
            return base
        merged = base.model_dump(by_alias=True)
        for section, values in override.items():
            merged[section] = {**merged[section], **values}
        return TierRules.model_validate(merged)

    @classmethod
    def parse(cls, text: str) -> MonitoringPolicy:
        """The policy in ``text``, or one line naming the field and the rule it breaks."""
        policy = parse_yaml(cls, text, "monitoring policy")
        if policy.default_tier not in policy.tiers:
            raise InvalidInputError(f"invalid monitoring policy: default_tier {policy.default_tier!r} is not a tier")
        from scoregate.refs import ModelRef

        for ref, override in policy.versions.items():
            try:
                parsed = ModelRef.parse(ref)
            except InvalidReferenceError:
                parsed = None
            if parsed is None or parsed.version is None:
                raise InvalidInputError(f"invalid monitoring policy at versions.{ref}: expected NAME@VERSION")
            unknown = set(override) - set(TierRules.model_fields)
            if unknown:
                raise InvalidInputError(
                    f"invalid monitoring policy at versions.{ref}.{sorted(unknown)[0]}: not a section "
                    f"(choose from {', '.join(TierRules.model_fields)})"
                )
            try:
                policy.rules_for(ref, None)
            except (ValidationError, TypeError) as exc:
                detail = where(exc) if isinstance(exc, ValidationError) else "each section must be a mapping"
                raise InvalidInputError(f"invalid monitoring policy at versions.{ref}.{detail}") from None
        return policy
