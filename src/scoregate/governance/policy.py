"""The governance policy: what a version needs before a protected alias may point at it.

The policy is a reviewable YAML document kept in the registry, versioned, and every
change is audited. Evaluation is a pure function of the policy and the facts about
a version, so each gate is testable without a database.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scoregate.errors import InvalidInputError
from scoregate.governance.access import Role

DEFAULT_POLICY = """\
# scoregate governance policy. Change it with `scoregate policy set FILE --reason ...` (admin);
# every change is versioned and audited.
protected_aliases: [production]
default_tier: high          # a model without a risk tier is held to this tier
tiers:
  high:
    evidence:
      - {kind: validation, passed: true}
      - {kind: loadtest, within_budget: true}
    approvals: 1
    protected_alias_role: deployer
    revalidate_months: 12
    block_when_overdue: true
    retention_days: 2555    # seven years
  medium:
    evidence:
      - {kind: validation, passed: true}
    approvals: 1
    protected_alias_role: deployer
    revalidate_months: 24
    block_when_overdue: false
    retention_days: 1825
  low:
    evidence: []
    approvals: 0
    protected_alias_role: developer
    revalidate_months: 36
    block_when_overdue: false
    retention_days: 365
"""


class EvidenceRequirement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1)
    passed: bool = True
    within_budget: bool = False

    @property
    def rule(self) -> str:
        return f"evidence:{self.kind}"


class TierPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    evidence: list[EvidenceRequirement] = Field(default_factory=list)
    approvals: int = Field(default=0, ge=0)
    protected_alias_role: Role = Role.DEPLOYER
    revalidate_months: int | None = Field(default=None, ge=1)
    block_when_overdue: bool = False
    retention_days: int = Field(default=0, ge=0)


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    protected_aliases: list[str] = Field(default_factory=lambda: ["production"])
    default_tier: str = "high"
    tiers: dict[str, TierPolicy]

    def tier(self, name: str | None) -> TierPolicy:
        key = name or self.default_tier
        if key not in self.tiers:
            raise InvalidInputError(f"risk tier {key!r} has no entry in the governance policy")
        return self.tiers[key]

    @classmethod
    def parse(cls, text: str) -> Policy:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"governance policy is not valid YAML: {exc}".splitlines()[0]) from None
        try:
            policy = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidInputError(f"invalid governance policy at {where}: {first['msg']}") from None
        if policy.default_tier not in policy.tiers:
            raise InvalidInputError(f"invalid governance policy: default_tier {policy.default_tier!r} is not a tier")
        return policy


@dataclass(frozen=True)
class EvidenceFact:
    id: int
    kind: str
    bound_digest: str | None
    passed: bool | None
    within_budget: bool | None
    author: str
    created_at: dt.datetime


@dataclass(frozen=True)
class VersionFacts:
    """What the gates look at, gathered by the registry in the move's transaction."""

    ref: str
    artifact_digest: str
    registrant: str | None
    evidence: list[EvidenceFact] = field(default_factory=list)
    approvers: list[str] = field(default_factory=list)
    last_validated: dt.datetime | None = None
    waived_rules: frozenset[str] = frozenset()


def add_months(moment: dt.datetime, months: int) -> dt.datetime:
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    day = min(
        moment.day,
        [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][
            month - 1
        ],
    )
    return moment.replace(year=year, month=month, day=day)


def next_review(tier: TierPolicy, last_validated: dt.datetime | None) -> dt.datetime | None:
    if tier.revalidate_months is None or last_validated is None:
        return None
    return add_months(last_validated, tier.revalidate_months)


def is_overdue(tier: TierPolicy, last_validated: dt.datetime | None, now: dt.datetime) -> bool:
    due = next_review(tier, last_validated)
    return due is not None and now > due


def missing_items(tier: TierPolicy, facts: VersionFacts, now: dt.datetime) -> list[dict[str, str]]:
    """Every requirement of ``tier`` that ``facts`` do not meet (waived rules excepted)."""
    missing: list[dict[str, str]] = []
    for requirement in tier.evidence:
        if requirement.rule in facts.waived_rules:
            continue
        bound = [e for e in facts.evidence if e.kind == requirement.kind and e.bound_digest == facts.artifact_digest]
        good = [
            e
            for e in bound
            if (not requirement.passed or e.passed) and (not requirement.within_budget or e.within_budget)
        ]
        if good:
            continue
        wanted = "a passing" if requirement.passed else "a"
        if requirement.within_budget:
            wanted += " within-latency-budget"
        detail = f"{wanted} {requirement.kind} report bound to artifact sha256:{facts.artifact_digest[:12]}"
        if bound:
            detail += f" (found {len(bound)} {requirement.kind} report(s), none meeting the rule)"
        missing.append({"rule": requirement.rule, "message": f"missing {detail}"})
    if "approvals" not in facts.waived_rules and len(set(facts.approvers)) < tier.approvals:
        missing.append(
            {
                "rule": "approvals",
                "message": f"needs {tier.approvals} approval(s) by a validator, has {len(set(facts.approvers))}",
            }
        )
    if tier.block_when_overdue and "revalidation" not in facts.waived_rules:
        if facts.last_validated is None and tier.revalidate_months is not None:
            missing.append({"rule": "revalidation", "message": "the version has never been validated"})
        elif is_overdue(tier, facts.last_validated, now):
            due = next_review(tier, facts.last_validated)
            missing.append({"rule": "revalidation", "message": f"re-validation was due on {due:%Y-%m-%d}"})
    return missing
