"""The governance policy: what a version needs before a protected alias may point at it.

The policy is a reviewable YAML document kept in the registry, versioned, and every
change is audited (and, where the policy in force says so, approved by a second
admin). Evaluation is a pure function of the policy and the facts about a version, so
each gate is testable without a database.

The policy also fixes how the checks behind the evidence must have been run (the
parity reference, tolerances, timeouts, latency budget, the checks required, the
load a load test must have carried): a run with weaker settings is recorded as it was
and simply does not satisfy the gate.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from pydantic import BaseModel, ConfigDict, Field

from scoregate.errors import InvalidInputError
from scoregate.governance.access import Role

DEFAULT_POLICY = """\
# scoregate governance policy. Change it with `scoregate policy set FILE --reason ...` (admin);
# every change is versioned and audited, and needs a second admin's approval when
# policy_changes.approvals says so (`scoregate policy approve N`).
protected_aliases: [production]
default_tier: high          # a model without a risk tier is held to this tier
policy_changes:
  approvals: 1              # admins other than the author who must approve a new policy
exceptions:
  max_days: 90              # an exception expires at most this many days after it is granted
tiers:
  high:
    evidence:               # produced by scoregate's own runs (validate, loadtest, profile)
      - {kind: validation}
      - {kind: loadtest}
    validation:
      reference: subprocess # weakest parity reference accepted: subprocess or independent (scorer, onnx)
      max_atol: 1.0e-6
      max_rtol: 1.0e-6
      max_independent_atol: 1.0e-4
      max_independent_rtol: 1.0e-4
      max_timeout_s: 10
      latency_budget_ms: 300  # per case; a version's own budget may be tighter, never looser
      min_reference_rows: 100
      max_memory_growth_mb: 64
      min_memory_calls: 20
      checks: [output_contract, probabilities, label_consistency, batch_invariance, determinism, sensitivity,
               latency, memory, reference_performance]
    loadtest:
      min_duration_s: 5
      min_requests: 100
      max_failure_ratio: 0.0
      min_checked_responses: 1
    approvals: 1
    protected_alias_role: deployer
    revalidate_months: 12
    block_when_overdue: true
    retention_days: 2555    # seven years
  medium:
    evidence:
      - {kind: validation}
    validation:
      reference: subprocess
      max_atol: 1.0e-6
      max_rtol: 1.0e-6
      max_timeout_s: 10
      latency_budget_ms: 500
      min_reference_rows: 100
      checks: [output_contract, probabilities, label_consistency, batch_invariance, determinism, latency]
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


class EvidenceKind(StrEnum):
    """What a piece of evidence is. Run kinds are produced by scoregate's own commands."""

    VALIDATION = "validation"
    LOADTEST = "loadtest"
    PROFILE = "profile"
    IMAGE = "image"
    DOCUMENT = "document"
    EXTERNAL = "external"

    @property
    def produced(self) -> bool:
        """True when only a scoregate run can produce it (a file of this kind is never accepted)."""
        return self in RUN_KINDS


RUN_KINDS = frozenset({EvidenceKind.VALIDATION, EvidenceKind.LOADTEST, EvidenceKind.PROFILE, EvidenceKind.IMAGE})


class EvidenceOrigin(StrEnum):
    RUN = "run"  # written by scoregate's own run, in the transaction of its audit event
    UPLOAD = "upload"  # a file somebody attached; counts only where the policy names it and once accepted


class ParityReference(IntEnum):
    """How independent the parity reference of a validation run is, weakest first."""

    NONE = 0
    SUBPROCESS = 1  # the same artifact, loaded in a separate process
    INDEPENDENT = 2  # a validator's own scorer, or a second runtime (ONNX)

    @classmethod
    def of_run(cls, name: str | None) -> ParityReference:
        return {"subprocess": cls.SUBPROCESS, "scorer": cls.INDEPENDENT, "onnx": cls.INDEPENDENT}.get(
            name or "none", cls.NONE
        )


class ReferenceRequirement(StrEnum):
    NONE = "none"
    SUBPROCESS = "subprocess"
    INDEPENDENT = "independent"

    @property
    def rank(self) -> ParityReference:
        return ParityReference[self.name]


class EvidenceRequirement(BaseModel):
    """One kind of evidence a tier requires. ``passed``/``within_budget`` are accepted for
    policies written before runs were recorded; the verdict now always comes from the run."""

    model_config = ConfigDict(extra="forbid")

    kind: EvidenceKind
    passed: bool = True
    within_budget: bool = False

    @property
    def rule(self) -> str:
        return f"evidence:{self.kind.value}"


class ValidationRequirements(BaseModel):
    """The weakest validation settings whose run still counts for the tier."""

    model_config = ConfigDict(extra="forbid")

    reference: ReferenceRequirement = ReferenceRequirement.SUBPROCESS
    max_atol: float = Field(default=1e-6, ge=0)
    max_rtol: float = Field(default=1e-6, ge=0)
    max_independent_atol: float = Field(default=1e-4, ge=0)
    max_independent_rtol: float = Field(default=1e-4, ge=0)
    max_timeout_s: float = Field(default=10.0, gt=0)
    latency_budget_ms: float | None = Field(default=None, gt=0)
    min_reference_rows: int = Field(default=100, ge=0)
    max_memory_growth_mb: float | None = Field(default=None, gt=0)
    min_memory_calls: int = Field(default=0, ge=0)
    checks: list[str] = Field(default_factory=list)


class LoadtestRequirements(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_duration_s: float = Field(default=5.0, ge=0)
    min_requests: int = Field(default=100, ge=0)
    max_failure_ratio: float = Field(default=0.0, ge=0, le=1)
    min_checked_responses: int = Field(default=1, ge=0)
    latency_budget_ms: float | None = Field(default=None, gt=0)


class ProfileRequirements(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_requests: int = Field(default=50, ge=1)


class TierPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    evidence: list[EvidenceRequirement] = Field(default_factory=list)
    validation: ValidationRequirements = Field(default_factory=ValidationRequirements)
    loadtest: LoadtestRequirements = Field(default_factory=LoadtestRequirements)
    profile: ProfileRequirements = Field(default_factory=ProfileRequirements)
    approvals: int = Field(default=0, ge=0)
    protected_alias_role: Role = Role.DEPLOYER
    revalidate_months: int | None = Field(default=None, ge=1)
    block_when_overdue: bool = False
    retention_days: int = Field(default=0, ge=0)
    #: Batch jobs of this tier's models may only score with a version that holds a protected alias.
    batch_requires_protected_alias: bool = False

    def rules(self) -> list[str]:
        """The rules of this tier that an exception could waive."""
        found = [requirement.rule for requirement in self.evidence]
        if self.approvals:
            found.append("approvals")
        if self.block_when_overdue and self.revalidate_months is not None:
            found.append("revalidation")
        return found


class PolicyChangeRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approvals: int = Field(default=0, ge=0, le=5)


class ExceptionRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_days: int = Field(default=90, ge=1, le=3650)


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    protected_aliases: list[str] = Field(default_factory=lambda: ["production"], min_length=1)
    default_tier: str = "high"
    policy_changes: PolicyChangeRules = Field(default_factory=PolicyChangeRules)
    exceptions: ExceptionRules = Field(default_factory=ExceptionRules)
    tiers: dict[str, TierPolicy]

    def tier(self, name: str | None) -> TierPolicy:
        key = name or self.default_tier
        if key not in self.tiers:
            raise InvalidInputError(f"risk tier {key!r} has no entry in the governance policy")
        return self.tiers[key]

    def protection(self, alias: str) -> str | None:
        """The protected alias ``alias`` is, or looks like (``Production``, ``prod``, ``pr0duction``)."""
        for protected in self.protected_aliases:
            if alias == protected or looks_like(alias, protected):
                return protected
        return None

    @classmethod
    def parse(cls, text: str) -> Policy:
        from scoregate.documents import parse_yaml

        policy = parse_yaml(cls, text, "governance policy")
        if policy.default_tier not in policy.tiers:
            raise InvalidInputError(f"invalid governance policy: default_tier {policy.default_tier!r} is not a tier")
        from scoregate.refs import validate_alias

        for alias in policy.protected_aliases:
            validate_alias(alias)
        return policy


# -- look-alike aliases --------------------------------------------------------------------------

#: Digits and symbols people type for letters, so ``pr0duct1on`` reads as ``production``.
_LOOKALIKE = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "$": "s", "@": "a"})


def _skeleton(alias: str) -> str:
    return re.sub(r"[^a-z0-9]", "", alias.casefold().translate(_LOOKALIKE)).replace("l", "i")


def _is_subsequence(short: str, long: str) -> bool:
    letters = iter(long)
    return all(char in letters for char in short)


def _edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def looks_like(alias: str, protected: str) -> bool:
    """Whether ``alias`` could be read as ``protected`` without being it.

    Compared without case, separators or digit look-alikes; an abbreviation (a prefix of
    three letters or more, or a three- or four-letter contraction such as ``prd``), the
    protected name with something appended (``production2``) and a near miss (at most
    two edits in a name of six letters or more) all count.
    """
    if alias == protected:
        return False
    a, p = _skeleton(alias), _skeleton(protected)
    if not a or not p:
        return False
    if a == p or a.startswith(p):
        return True
    if len(a) >= 3 and p.startswith(a):
        return True
    if 3 <= len(a) <= 4 and a[0] == p[0] and _is_subsequence(a, p):
        return True
    return len(p) >= 6 and abs(len(a) - len(p)) <= 2 and _edit_distance(a, p) <= 2


# -- facts and evaluation ------------------------------------------------------------------------


@dataclass(frozen=True)
class EvidenceFact:
    """One piece of evidence as the gates see it: where it came from, what it is bound to,
    and what the gate found wrong with it under the tier (``problems``; empty: it counts)."""

    id: int
    kind: str
    origin: str
    bound_digest: str | None
    schema_digest: str | None
    author: str
    created_at: dt.datetime
    problems: tuple[str, ...] = ()
    accepted_by: str | None = None


@dataclass(frozen=True)
class VersionFacts:
    """What the gates look at, gathered by the registry in the move's transaction."""

    ref: str
    artifact_digest: str
    registrant: str | None
    schema_digest: str | None = None
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


def binding_problems(fact: EvidenceFact, facts: VersionFacts) -> list[str]:
    """Why ``fact`` is not evidence about exactly this version's artifact and contract."""
    problems = []
    if fact.bound_digest != facts.artifact_digest:
        bound = (fact.bound_digest or "nothing")[:12]
        problems.append(f"it is bound to artifact sha256:{bound}, not sha256:{facts.artifact_digest[:12]}")
    if fact.origin == EvidenceOrigin.RUN and fact.schema_digest != facts.schema_digest:
        problems.append("it was recorded against a different input/output contract")
    return problems


def counts_for(requirement: EvidenceRequirement, fact: EvidenceFact, facts: VersionFacts) -> list[str]:
    """Every reason ``fact`` does not satisfy ``requirement`` (empty: it does)."""
    if fact.kind != requirement.kind:
        return [f"it is {fact.kind} evidence"]
    problems = binding_problems(fact, facts)
    if requirement.kind.produced:
        if fact.origin != EvidenceOrigin.RUN:
            problems.append("it was uploaded, and only a run scoregate recorded counts for this kind")
    elif fact.accepted_by is None:
        problems.append("no validator has accepted it (`scoregate evidence accept`)")
    return problems + list(fact.problems)


def missing_items(tier: TierPolicy, facts: VersionFacts, now: dt.datetime) -> list[dict[str, str]]:
    """Every requirement of ``tier`` that ``facts`` do not meet (waived rules excepted)."""
    missing: list[dict[str, str]] = []
    for requirement in tier.evidence:
        if requirement.rule in facts.waived_rules:
            continue
        candidates = [e for e in facts.evidence if e.kind == requirement.kind]
        verdicts = [(e, counts_for(requirement, e, facts)) for e in candidates]
        if any(not problems for _, problems in verdicts):
            continue
        kind = requirement.kind.value
        wanted = "a recorded" if requirement.kind.produced else "an accepted"
        detail = (
            f"missing {wanted} {kind} run that meets the {kind} rules"
            if requirement.kind.produced
            else (f"missing {wanted} {kind} document")
        )
        if verdicts:
            latest, problems = verdicts[-1]
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            detail += f" (latest, #{latest.id}: {shown})"
        missing.append({"rule": requirement.rule, "message": detail})
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
