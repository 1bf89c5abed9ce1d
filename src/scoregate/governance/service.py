"""Governance operations over the registry: identity, evidence, lifecycle decisions,
policy, exceptions, retention and legal holds.

Every operation is one registry transaction that checks the caller's role, makes the
change and appends its audit event, so a change never exists without its record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scoregate.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PolicyViolationError,
)
from scoregate.governance.access import Permission, Principal, Role, hash_token, new_token, parse_roles
from scoregate.governance.audit_checks import check_gone, check_rows
from scoregate.governance.policy import (
    EvidenceKind,
    EvidenceOrigin,
    EvidenceRequirement,
    Policy,
    counts_for,
    is_overdue,
    missing_items,
    next_review,
)
from scoregate.governance.tables import (
    DecisionRow,
    EvidenceRow,
    LegalHoldRow,
    PolicyExceptionRow,
    PolicyProposalRow,
    PolicyRow,
    TokenRow,
    UserRow,
)
from scoregate.refs import ModelRef, validate_alias, validate_model_name
from scoregate.registry import Registry
from scoregate.registry.service import contract_digest
from scoregate.registry.tables import ModelRow, VersionRow, utcnow

EVIDENCE_KINDS = tuple(kind.value for kind in EvidenceKind)
#: The largest document ``evidence attach`` keeps.
MAX_UPLOAD_BYTES = 64 * 2**20
#: The command whose run produces each kind of evidence.
_RUN_COMMAND = {
    EvidenceKind.VALIDATION: "validate",
    EvidenceKind.LOADTEST: "loadtest",
    EvidenceKind.PROFILE: "profile",
    EvidenceKind.IMAGE: "image build",
}


@dataclass(frozen=True)
class PolicyChange:
    """What ``set_policy`` did: put a version in force, or opened a proposal for a second admin."""

    proposal: int | None
    version: int | None


def _evidence_kind(kind: EvidenceKind | str) -> EvidenceKind:
    try:
        return EvidenceKind(kind)
    except ValueError:
        raise InvalidInputError(
            f"invalid evidence kind {str(kind)[:40]!r}: choose one of {', '.join(EVIDENCE_KINDS)}"
        ) from None


def _run_summary(kind: EvidenceKind, document: Mapping[str, Any]) -> dict[str, Any]:
    """A few headline figures of a run, for listings (never read by a gate)."""
    keep = {
        EvidenceKind.VALIDATION: ("counts", "target", "duration_s"),
        EvidenceKind.LOADTEST: ("within_budget", "budget_ms", "elapsed_s", "url"),
        EvidenceKind.PROFILE: ("requests", "rate_limiting_step", "mean_request_ms"),
        EvidenceKind.IMAGE: ("image_id", "tag", "base"),
    }[kind]
    return {key: document[key] for key in keep if key in document}


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _ref(ref: str | ModelRef) -> ModelRef:
    return ref if isinstance(ref, ModelRef) else ModelRef.parse(ref, require_selector=True)


class Governance:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # -- identity ------------------------------------------------------------------------------

    def init(self, name: str) -> str:
        """Create the first user, an admin, and return its token (shown once). Refused once done."""
        validate_model_name(name)
        with self.registry.transaction() as session:
            if session.scalar(select(func.count()).select_from(UserRow)):
                raise ConflictError("scoregate is already initialised: an admin exists; ask them for a token")
            user = UserRow(name=name, roles=[Role.ADMIN.value], created_at=utcnow())
            session.add(user)
            session.flush()
            token = self._issue(session, user, expires_at=None, description="created by scoregate init")
            actor = Principal(name=name, roles=(Role.ADMIN,))
            self.registry.record_event(session, actor, "user.create", f"user:{name}", after={"roles": ["admin"]})
            return token

    def add_user(self, name: str, roles: list[str] | str, *, expires_in_days: int | None = 90) -> str:
        validate_model_name(name)
        parsed = parse_roles(roles)
        with self.registry.mutation(Permission.MANAGE_ACCESS, f"user:{name}") as (session, actor):
            if session.scalars(select(UserRow).where(UserRow.name == name)).one_or_none() is not None:
                raise ConflictError(f"user {name!r} already exists")
            user = UserRow(name=name, roles=[r.value for r in parsed], created_at=utcnow())
            session.add(user)
            session.flush()
            token = self._issue(session, user, expires_at=_expiry(expires_in_days), description="first token")
            self.registry.record_event(
                session, actor, "user.create", f"user:{name}", after={"roles": [r.value for r in parsed]}
            )
            return token

    def issue_token(self, name: str, *, expires_in_days: int | None = 90, description: str | None = None) -> str:
        with self.registry.mutation(Permission.MANAGE_ACCESS, f"user:{name}") as (session, actor):
            user = session.scalars(select(UserRow).where(UserRow.name == name)).one_or_none()
            if user is None:
                raise NotFoundError(f"user {name!r} not found")
            token = self._issue(session, user, expires_at=_expiry(expires_in_days), description=description)
            self.registry.record_event(session, actor, "token.issue", f"user:{name}", after={"prefix": token[:10]})
            return token

    def revoke_token(self, prefix: str) -> None:
        with self.registry.mutation(Permission.MANAGE_ACCESS, f"token:{prefix}") as (session, actor):
            matches = session.scalars(select(TokenRow).where(TokenRow.prefix == prefix[:10])).all()
            if not matches:
                raise NotFoundError(f"no token starts with {prefix!r}")
            for row in matches:
                if row.revoked_at is None:
                    row.revoked_at = utcnow()
            self.registry.record_event(session, actor, "token.revoke", f"token:{prefix[:10]}")

    def list_tokens(self) -> list[dict[str, Any]]:
        with self.registry.reading() as session:
            rows = session.execute(select(TokenRow, UserRow.name).join(UserRow, TokenRow.user_id == UserRow.id))
            return [
                {
                    "prefix": t.prefix,
                    "user": name,
                    "created_at": _aware(t.created_at),
                    "expires_at": _aware(t.expires_at) if t.expires_at else None,
                    "revoked_at": _aware(t.revoked_at) if t.revoked_at else None,
                    "description": t.description,
                }
                for t, name in rows
            ]

    def list_users(self) -> list[dict[str, Any]]:
        with self.registry.reading() as session:
            return [
                {"name": u.name, "roles": list(u.roles), "disabled": u.disabled, "created_at": _aware(u.created_at)}
                for u in session.scalars(select(UserRow).order_by(UserRow.name))
            ]

    def scoring_credentials(self) -> dict[str, dict[str, Any]]:
        """Token SHA-256 -> owner, roles and expiry (epoch seconds), for the scoring servers'
        ``--require-token``: tokens neither revoked nor held by a disabled user."""
        query = (
            select(TokenRow.token_hash, TokenRow.expires_at, UserRow.name, UserRow.roles)
            .join(UserRow, TokenRow.user_id == UserRow.id)
            .where(TokenRow.revoked_at.is_(None), UserRow.disabled.is_(False))
        )
        with self.registry.reading() as session:
            rows = session.execute(query).all()
        return {
            token_hash: {
                "user": user,
                "roles": sorted(str(r) for r in roles or ()),
                "expires_at": _aware(expires).timestamp() if expires is not None else None,
            }
            for token_hash, expires, user, roles in rows
        }

    @staticmethod
    def _issue(session, user: UserRow, *, expires_at: dt.datetime | None, description: str | None) -> str:  # type: ignore[no-untyped-def]
        token = new_token()
        session.add(
            TokenRow(
                user_id=user.id,
                token_hash=hash_token(token),
                prefix=token[:10],
                description=description,
                created_at=utcnow(),
                expires_at=expires_at,
            )
        )
        return token

    # -- evidence ------------------------------------------------------------------------------

    def record_run(
        self,
        ref: str | ModelRef,
        kind: EvidenceKind | str,
        document: Mapping[str, Any],
        *,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Record the result of one of scoregate's own runs (validate, loadtest, profile, image).

        Called by those commands with the document they produced; the document is kept by
        digest, and its row, bound to the version, its artifact and its contract, is written
        in the transaction of its ``evidence.record`` event. The gates later judge the run
        again under the policy in force (``governance.evidence``); its own ``passed`` is shown,
        never trusted.
        """
        kind = _evidence_kind(kind)
        if not kind.produced:
            raise InvalidInputError(f"{kind.value} evidence is a document: attach it with `scoregate evidence attach`")
        parsed_ref = _ref(ref)
        content = orjson.dumps(
            dict(document),
            default=str,
            option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
        )
        digest = self.registry.artifacts.put_bytes(content)
        settings = document.get("settings") if isinstance(document.get("settings"), Mapping) else {}
        case_set = document.get("case_set") if isinstance(document.get("case_set"), Mapping) else {}
        with self.registry.mutation(Permission.REGISTER, str(parsed_ref)) as (session, actor):
            model, row = self.registry.find(session, parsed_ref)
            if session.scalars(
                select(EvidenceRow).where(EvidenceRow.version_id == row.id, EvidenceRow.digest == digest)
            ).first():
                raise ConflictError(f"this {kind.value} run (sha256:{digest[:12]}) is already recorded")
            contract = contract_digest(row)
            ran_on = document.get("artifact_digest")
            if ran_on != row.artifact_digest:
                raise InvalidInputError(
                    f"this {kind.value} run was made on artifact sha256:{str(ran_on)[:12]}, not on the artifact "
                    f"sha256:{row.artifact_digest[:12]} of {model.name}@{row.version}"
                )
            if document.get("schema_digest") not in (None, contract):
                raise InvalidInputError(
                    f"this {kind.value} run was made against another input/output contract than "
                    f"{model.name}@{row.version}'s"
                )
            evidence = EvidenceRow(
                version_id=row.id,
                kind=kind.value,
                origin=EvidenceOrigin.RUN.value,
                name=name or f"{kind.value}.json",
                digest=digest,
                size=len(content),
                bound_digest=row.artifact_digest,
                schema_digest=contract,
                settings=dict(settings),
                case_set_digest=str(case_set["digest"]) if case_set.get("digest") else None,
                passed=document.get("passed") if isinstance(document.get("passed"), bool) else None,
                summary=_run_summary(kind, document),
                author=actor.name,
                created_at=utcnow(),
            )
            session.add(evidence)
            session.flush()
            self.registry.record_event(
                session,
                actor,
                "evidence.record",
                f"{model.name}@{row.version}",
                after={
                    "id": evidence.id,
                    "kind": kind.value,
                    "origin": evidence.origin,
                    "digest": digest,
                    "artifact_digest": row.artifact_digest,
                    "schema_digest": contract,
                    "settings": evidence.settings,
                    "case_set_digest": evidence.case_set_digest,
                },
            )
            return self._evidence_dict(session, model, row, evidence)

    def attach_evidence(
        self,
        ref: str | ModelRef,
        kind: EvidenceKind | str,
        content: bytes | Path,
        *,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Attach a document (a review memo, an external validator's report) to a version.

        It is kept by digest and shown as uploaded; it counts for a gate only where the
        policy names its kind and a validator other than the uploader has accepted it. What
        a run must prove (validation, load test, profile, image) cannot be uploaded.
        """
        kind = _evidence_kind(kind)
        if kind.produced:
            raise InvalidInputError(
                f"{kind.value} evidence is recorded by scoregate's own run (`scoregate {_RUN_COMMAND[kind]}`), "
                "not attached from a file; attach an outside report as kind 'external'"
            )
        if isinstance(content, Path):
            name = name or content.name
            try:
                content = content.read_bytes()
            except OSError as exc:
                raise InvalidInputError(f"cannot read evidence file {content}: {exc.strerror}") from None
        if not content:
            raise InvalidInputError("the evidence file is empty")
        if len(content) > MAX_UPLOAD_BYTES:
            raise InvalidInputError(f"the evidence file is larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
        name = (name or f"{kind.value}.bin")[:255]
        digest = self.registry.artifacts.put_bytes(content)
        parsed_ref = _ref(ref)
        with self.registry.mutation(Permission.REGISTER, str(parsed_ref)) as (session, actor):
            model, row = self.registry.find(session, parsed_ref)
            if session.scalars(
                select(EvidenceRow).where(EvidenceRow.version_id == row.id, EvidenceRow.digest == digest)
            ).first():
                raise ConflictError(f"this {kind.value} document (sha256:{digest[:12]}) is already attached")
            evidence = EvidenceRow(
                version_id=row.id,
                kind=kind.value,
                origin=EvidenceOrigin.UPLOAD.value,
                name=name,
                digest=digest,
                size=len(content),
                bound_digest=row.artifact_digest,
                schema_digest=contract_digest(row),
                settings={},
                passed=None,
                summary={},
                author=actor.name,
                created_at=utcnow(),
            )
            session.add(evidence)
            session.flush()
            self.registry.record_event(
                session,
                actor,
                "evidence.attach",
                f"{model.name}@{row.version}",
                after={"id": evidence.id, "kind": kind.value, "origin": evidence.origin, "digest": digest},
            )
            return self._evidence_dict(session, model, row, evidence)

    def accept_evidence(self, ref: str | ModelRef, evidence_id: int, *, reason: str) -> dict[str, Any]:
        """A validator accepts an uploaded document as evidence (not its uploader: four eyes)."""
        if not reason or not reason.strip():
            raise InvalidInputError("accepting evidence needs a reason (--reason)")
        parsed = _ref(ref)
        with self.registry.mutation(Permission.APPROVE, str(parsed)) as (session, actor):
            model, row = self.registry.find(session, parsed)
            evidence = session.get(EvidenceRow, evidence_id)
            if evidence is None or evidence.version_id != row.id:
                raise NotFoundError(f"{parsed} has no evidence #{evidence_id}")
            if evidence.origin != EvidenceOrigin.UPLOAD.value:
                raise ConflictError(f"evidence #{evidence_id} is a recorded run: the gates judge it themselves")
            if evidence.accepted_by is not None:
                raise ConflictError(f"evidence #{evidence_id} was already accepted by {evidence.accepted_by}")
            if actor.name == evidence.author:
                raise ForbiddenError(
                    f"{actor.name} may not accept evidence #{evidence_id}: four-eyes rule, not its uploader"
                )
            evidence.accepted_by = actor.name
            evidence.accepted_at = utcnow()
            evidence.accept_reason = reason.strip()
            self.registry.record_event(
                session,
                actor,
                "evidence.accept",
                f"{model.name}@{row.version}",
                after={"id": evidence.id, "accepted_by": actor.name},
                reason=reason.strip(),
            )
            return self._evidence_dict(session, model, row, evidence)

    def evidence(self, ref: str | ModelRef) -> list[dict[str, Any]]:
        """The version's evidence, each with what the policy in force finds wrong with it."""
        with self.registry.reading() as session:
            model, row = self.registry.find(session, _ref(ref))
            verdicts = self._verdicts(session, model, row)
            return [
                _evidence_dict(e, verdicts.get(e.id, []))
                for e in session.scalars(
                    select(EvidenceRow).where(EvidenceRow.version_id == row.id).order_by(EvidenceRow.id)
                )
            ]

    def _evidence_dict(
        self, session: Session, model: ModelRow, row: VersionRow, evidence: EvidenceRow
    ) -> dict[str, Any]:
        return _evidence_dict(evidence, self._verdicts(session, model, row).get(evidence.id, []))

    def _verdicts(self, session: Session, model: ModelRow, row: VersionRow) -> dict[int, list[str]]:
        """Why each piece of the version's evidence does not count, under the policy in force."""
        facts = self.registry.facts(session, model, row)
        return {
            fact.id: counts_for(EvidenceRequirement(kind=EvidenceKind(fact.kind)), fact, facts)
            for fact in facts.evidence
        }

    def read_evidence(self, digest: str) -> bytes:
        return self.registry.artifacts.read_bytes(digest)

    # -- lifecycle -----------------------------------------------------------------------------

    def mark_validated(self, ref: str | ModelRef, *, reason: str | None = None) -> str:
        """Mark a version validated on a recorded validation run that meets its tier's rules."""
        parsed = _ref(ref)
        with self.registry.mutation(Permission.VALIDATE, str(parsed)) as (session, actor):
            model, row = self.registry.find(session, parsed)
            if row.status in ("retired", "deleted"):
                raise ConflictError(f"{parsed} is {row.status}")
            facts = self.registry.facts(session, model, row)
            requirement = EvidenceRequirement(kind=EvidenceKind.VALIDATION)
            verdicts = [(e, counts_for(requirement, e, facts)) for e in facts.evidence if e.kind == "validation"]
            good = [e.id for e, problems in verdicts if not problems]
            if not good:
                why = ""
                if verdicts:
                    latest, problems = verdicts[-1]
                    why = f"; the latest, #{latest.id}: " + "; ".join(problems[:3])
                raise PolicyViolationError(
                    f"{parsed} cannot be marked validated: no recorded validation run meets the "
                    f"{model.risk_tier or self.registry.policy_in_force(session).default_tier} tier's rules{why} "
                    f"(run `scoregate validate {parsed}`)",
                    details=[{"rule": "evidence:validation", "message": "no validation run meets the tier's rules"}],
                )
            to_status = "validated" if row.status == "registered" else row.status
            self.registry.decide(session, actor, row, "validate", to_status, reason, good)
            self.registry.record_event(
                session, actor, "validate", str(parsed), after={"status": to_status, "evidence": good}, reason=reason
            )
            return to_status

    def approve(self, ref: str | ModelRef, *, reason: str) -> str:
        """Record an approval; four-eyes: not by the registrant nor an author of the validation."""
        if not reason or not reason.strip():
            raise InvalidInputError("an approval needs a reason (--reason)")
        parsed = _ref(ref)
        with self.registry.mutation(Permission.APPROVE, str(parsed)) as (session, actor):
            model, row = self.registry.find(session, parsed)
            if row.status not in ("validated", "approved", "production"):
                raise ConflictError(f"{parsed} is {row.status}; only a validated version can be approved")
            if actor.name == row.created_by:
                raise ForbiddenError(
                    f"{actor.name} may not approve {parsed}: four-eyes rule, the approver may not be its registrant"
                )
            attached = session.scalars(select(EvidenceRow).where(EvidenceRow.version_id == row.id)).all()
            check_rows(session, attached)
            authors = {e.author for e in attached if e.kind == "validation"}
            if actor.name in authors:
                raise ForbiddenError(
                    f"{actor.name} may not approve {parsed}: four-eyes rule, the approver may not be an author "
                    "of its validation evidence"
                )
            facts = self.registry.facts(session, model, row)
            if actor.name in facts.approvers:
                raise ConflictError(f"{actor.name} has already approved {parsed}")
            tier = self.registry.policy_in_force(session).tier(model.risk_tier)
            enough = len(set(facts.approvers)) + 1 >= max(tier.approvals, 1)
            to_status = "approved" if row.status == "validated" and enough else row.status
            self.registry.decide(session, actor, row, "approve", to_status, reason.strip())
            self.registry.record_event(
                session, actor, "approve", str(parsed), after={"status": to_status}, reason=reason.strip()
            )
            return to_status

    def decisions(self, ref: str | ModelRef) -> list[dict[str, Any]]:
        with self.registry.reading() as session:
            _, row = self.registry.find(session, _ref(ref))
            return [
                {
                    "action": d.action,
                    "from": d.from_status,
                    "to": d.to_status,
                    "actor": d.actor,
                    "reason": d.reason,
                    "evidence": d.evidence,
                    "at": _aware(d.at),
                }
                for d in session.scalars(
                    select(DecisionRow).where(DecisionRow.version_id == row.id).order_by(DecisionRow.id)
                )
            ]

    def check(self, ref: str | ModelRef, alias: str = "production") -> list[dict[str, str]]:
        """What the policy would refuse if ``alias`` moved to ``ref`` now (empty: nothing)."""
        validate_alias(alias)  # an alias that cannot exist must not "meet the policy"
        with self.registry.reading() as session:
            model, row = self.registry.find(session, _ref(ref))
            policy = self.registry.policy_in_force(session)
            if policy.protection(validate_alias(alias)) is None:
                return []
            return missing_items(policy.tier(model.risk_tier), self.registry.facts(session, model, row), utcnow())

    # -- policy and exceptions -----------------------------------------------------------------

    def policy(self) -> tuple[int, str]:
        """The policy in force: (its version number, 0 for the built-in default; its YAML)."""
        with self.registry.reading() as session:
            row = session.scalars(select(PolicyRow).order_by(PolicyRow.id.desc()).limit(1)).one_or_none()
            if row is None:
                from scoregate.governance.policy import DEFAULT_POLICY

                return 0, DEFAULT_POLICY
            return row.id, row.document

    def set_policy(self, document: str, *, reason: str) -> PolicyChange:
        """Put a new policy in force, or, when the policy in force asks for a second admin's
        approval, propose it (``approve_policy`` by another admin puts it in force)."""
        Policy.parse(document)  # refuse a policy that would not load
        if not reason or not reason.strip():
            raise InvalidInputError("a policy change needs a reason (--reason)")
        digest = hashlib.sha256(document.encode()).hexdigest()
        with self.registry.mutation(Permission.MANAGE_POLICY, "policy") as (session, actor):
            needed = self.registry.policy_in_force(session).policy_changes.approvals
            if needed and actor.authenticated:
                proposal = PolicyProposalRow(
                    document=document,
                    digest=digest,
                    author=actor.name,
                    reason=reason.strip(),
                    created_at=utcnow(),
                    status="pending",
                )
                session.add(proposal)
                session.flush()
                self.registry.record_event(
                    session,
                    actor,
                    "policy.propose",
                    "policy",
                    after={"proposal": proposal.id, "digest": digest},
                    reason=reason.strip(),
                )
                return PolicyChange(proposal=proposal.id, version=None)
            version = self._put_in_force(session, actor, document, digest, reason.strip())
            return PolicyChange(proposal=None, version=version)

    def approve_policy(self, proposal_id: int, *, reason: str) -> PolicyChange:
        """A second admin puts a proposed policy in force (not its author: four eyes)."""
        if not reason or not reason.strip():
            raise InvalidInputError("approving a policy change needs a reason (--reason)")
        with self.registry.mutation(Permission.MANAGE_POLICY, "policy") as (session, actor):
            proposal = self._pending_proposal(session, proposal_id)
            if actor.name == proposal.author:
                raise ForbiddenError(
                    f"{actor.name} may not approve policy proposal {proposal_id}: four-eyes rule, a second admin "
                    "approves a policy change"
                )
            Policy.parse(proposal.document)
            proposal.status = "approved"
            proposal.decided_by = actor.name
            proposal.decided_at = utcnow()
            proposal.decision_reason = reason.strip()
            version = self._put_in_force(
                session, actor, proposal.document, proposal.digest, proposal.reason, proposal=proposal
            )
            return PolicyChange(proposal=proposal.id, version=version)

    def reject_policy(self, proposal_id: int, *, reason: str) -> None:
        """Turn a proposed policy down (any admin; its author withdraws it this way)."""
        if not reason or not reason.strip():
            raise InvalidInputError("rejecting a policy change needs a reason (--reason)")
        with self.registry.mutation(Permission.MANAGE_POLICY, "policy") as (session, actor):
            proposal = self._pending_proposal(session, proposal_id)
            proposal.status = "rejected"
            proposal.decided_by = actor.name
            proposal.decided_at = utcnow()
            proposal.decision_reason = reason.strip()
            self.registry.record_event(
                session, actor, "policy.reject", "policy", after={"proposal": proposal.id}, reason=reason.strip()
            )

    def policy_proposals(self, *, pending_only: bool = True) -> list[dict[str, Any]]:
        with self.registry.reading() as session:
            query = select(PolicyProposalRow).order_by(PolicyProposalRow.id)
            if pending_only:
                query = query.where(PolicyProposalRow.status == "pending")
            return [
                {
                    "id": p.id,
                    "digest": p.digest,
                    "author": p.author,
                    "reason": p.reason,
                    "created_at": _aware(p.created_at),
                    "status": p.status,
                    "decided_by": p.decided_by,
                }
                for p in session.scalars(query)
            ]

    @staticmethod
    def _pending_proposal(session: Session, proposal_id: int) -> PolicyProposalRow:
        proposal = session.get(PolicyProposalRow, proposal_id)
        if proposal is None:
            raise NotFoundError(f"policy proposal {proposal_id} not found")
        if proposal.status != "pending":
            raise ConflictError(f"policy proposal {proposal_id} is already {proposal.status}")
        return proposal

    def _put_in_force(
        self,
        session: Session,
        actor: Principal,
        document: str,
        digest: str,
        reason: str,
        *,
        proposal: PolicyProposalRow | None = None,
    ) -> int:
        previous = session.scalars(select(PolicyRow).order_by(PolicyRow.id.desc()).limit(1)).one_or_none()
        row = PolicyRow(
            document=document,
            digest=digest,
            author=proposal.author if proposal is not None else actor.name,
            reason=reason,
            created_at=utcnow(),
            approved_by=actor.name if proposal is not None else None,
            proposal_id=proposal.id if proposal is not None else None,
        )
        session.add(row)
        session.flush()
        self.registry.record_event(
            session,
            actor,
            "policy.set",
            "policy",
            before={"digest": previous.digest} if previous else None,
            after={
                "version": row.id,
                "digest": digest,
                "proposal": row.proposal_id,
                "author": row.author,
                "approved_by": row.approved_by,
            },
            reason=reason,
        )
        return row.id

    def grant_exception(self, ref: str | ModelRef, rule: str, *, reason: str, expires_at: dt.datetime) -> None:
        """A recorded, expiring waiver of one rule the version's tier has, for at most the
        number of days the policy allows."""
        parsed = _ref(ref)
        expires_at = _aware(expires_at)
        now = utcnow()
        if expires_at <= now:
            raise InvalidInputError("an exception's expiry must be in the future")
        if not reason or not reason.strip():
            raise InvalidInputError("an exception needs a reason (--reason)")
        with self.registry.mutation(Permission.GRANT_EXCEPTION, str(parsed)) as (session, actor):
            model, row = self.registry.find(session, parsed)
            policy = self.registry.policy_in_force(session)
            tier_name = model.risk_tier or policy.default_tier
            rules = policy.tier(model.risk_tier).rules()
            if rule not in rules:
                listing = ", ".join(rules) if rules else "none"
                raise InvalidInputError(
                    f"invalid rule {rule[:64]!r}: the {tier_name} tier has no such rule to waive (its rules: {listing})"
                )
            latest = now + dt.timedelta(days=policy.exceptions.max_days)
            if expires_at > latest:
                raise InvalidInputError(
                    f"an exception may last at most {policy.exceptions.max_days} days under the policy: "
                    f"expire it by {latest:%Y-%m-%d}"
                )
            session.add(
                PolicyExceptionRow(
                    version_id=row.id,
                    rule=rule,
                    reason=reason.strip(),
                    approver=actor.name,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            self.registry.record_event(
                session,
                actor,
                "exception.grant",
                str(parsed),
                after={"rule": rule, "expires_at": expires_at.isoformat()},
                reason=reason.strip(),
            )

    # -- retention -----------------------------------------------------------------------------

    def legal_hold(self, ref: str | ModelRef, *, reason: str) -> None:
        parsed = _ref(ref)
        with self.registry.mutation(Permission.LEGAL_HOLD, str(parsed)) as (session, actor):
            _, row = self.registry.find(session, parsed)
            if session.get(LegalHoldRow, row.id) is not None:
                raise ConflictError(f"{parsed} is already under a legal hold")
            session.add(LegalHoldRow(version_id=row.id, reason=reason, actor=actor.name, at=utcnow()))
            self.registry.record_event(session, actor, "legal_hold.place", str(parsed), reason=reason)

    def release_hold(self, ref: str | ModelRef, *, reason: str) -> None:
        parsed = _ref(ref)
        with self.registry.mutation(Permission.LEGAL_HOLD, str(parsed)) as (session, actor):
            _, row = self.registry.find(session, parsed)
            hold = session.get(LegalHoldRow, row.id)
            if hold is None:
                raise NotFoundError(f"{parsed} is not under a legal hold")
            session.delete(hold)
            self.registry.record_event(session, actor, "legal_hold.release", str(parsed), reason=reason)

    def delete(self, ref: str | ModelRef, *, reason: str, now: dt.datetime | None = None) -> None:
        """Delete a retired version's artifact once its retention period is over.

        The version row stays as a tombstone (status ``deleted``) and the audit log keeps
        the deletion; the artifact blob goes unless another live version shares it.
        """
        parsed = _ref(ref)
        now = now or utcnow()
        with self.registry.mutation(Permission.DELETE, str(parsed)) as (session, actor):
            model, row = self.registry.find(session, parsed)
            if row.status != "retired" or row.retired_at is None:
                raise ConflictError(f"{parsed} is {row.status}; only a retired version can be deleted")
            hold = session.get(LegalHoldRow, row.id)
            if hold is not None:
                raise ConflictError(f"{parsed} is under a legal hold ({hold.reason}); deletion is blocked")
            check_gone(session, LegalHoldRow.__table__, [str(row.id)])  # a hold deleted in SQL still blocks
            tier = self.registry.policy_in_force(session).tier(model.risk_tier)
            keep_until = _aware(row.retired_at) + dt.timedelta(days=tier.retention_days)
            if now < keep_until:
                raise ConflictError(
                    f"{parsed} must be retained until {keep_until:%Y-%m-%d} "
                    f"({tier.retention_days} days after retirement for its risk tier)"
                )
            shared = session.scalar(
                select(func.count())
                .select_from(VersionRow)
                .where(
                    VersionRow.artifact_digest == row.artifact_digest,
                    VersionRow.id != row.id,
                    VersionRow.status != "deleted",
                )
            )
            self.registry.decide(session, actor, row, "delete", "deleted", reason)
            self.registry.record_event(
                session,
                actor,
                "delete",
                str(parsed),
                before={"artifact_digest": row.artifact_digest},
                after={"status": "deleted"},
                reason=reason,
            )
            session.flush()
            if not shared:
                self.registry.artifacts.delete(row.artifact_digest)

    # -- webhooks ------------------------------------------------------------------------------

    def add_webhook(self, url: str, secret: str, actions: list[str] | None = None) -> int:
        """Subscribe ``url`` to audit events matching ``actions`` (globs, e.g. ``alias.*``); admin."""
        from scoregate.governance.webhooks import subscribe

        with self.registry.mutation(Permission.MANAGE_ACCESS, f"webhook:{url}") as (session, actor):
            return subscribe(
                session,
                url=url,
                secret=secret,
                actor=actor.name,
                actions=actions or ["*"],
                request_id=self.registry.request_id,
            ).id

    def remove_webhook(self, subscription_id: int, *, reason: str | None = None) -> None:
        from scoregate.governance.webhooks import deactivate

        with self.registry.mutation(Permission.MANAGE_ACCESS, f"webhook:{subscription_id}") as (session, actor):
            deactivate(session, subscription_id, actor=actor.name, reason=reason, request_id=self.registry.request_id)

    def webhooks(self) -> list[Any]:
        from scoregate.governance.webhooks import subscriptions

        with self.registry.reading() as session:
            return subscriptions(session)

    def deliver_webhooks(self, *, max_attempts: int = 5) -> Any:
        """POST every due outbox item (signed); failures are retried on later calls with backoff."""
        import httpx

        from scoregate.governance.webhooks import deliver_pending

        with httpx.Client(timeout=10.0) as client:
            return deliver_pending(self.registry.engine, client=client, max_attempts=max_attempts)

    # -- inventory -----------------------------------------------------------------------------

    def inventory(self, *, at: dt.datetime | None = None) -> list[dict[str, Any]]:
        """One row per model with what regulators ask for; ``at`` gives the state as it was then.

        A fixed number of queries whatever the size of the inventory (one per table, the
        columns it needs), so a thousand models with ten versions each read in one pass."""
        from scoregate.governance.tables import AliasHistoryRow
        from scoregate.registry.tables import TagRow

        # UTC, so that SQLite (which compares the stored text) and PostgreSQL agree on "at or before"
        moment = _aware(at).astimezone(dt.UTC) if at else utcnow()
        with self.registry.reading() as session:
            policy = self.registry.policy_in_force(session)
            # column reads through the Core connection: plain rows, no ORM bookkeeping per row
            connection = session.connection()
            models = connection.execute(
                select(ModelRow.id, ModelRow.name, ModelRow.description, ModelRow.owner, ModelRow.risk_tier)
                .where(ModelRow.created_at <= moment)
                .order_by(ModelRow.name)
            ).all()
            versions: dict[int, list[Any]] = {}
            for v in connection.execute(
                select(VersionRow.id, VersionRow.model_id, VersionRow.version, VersionRow.created_by)
                .where(VersionRow.created_at <= moment)
                .order_by(VersionRow.model_id, VersionRow.version)
            ):
                versions.setdefault(v.model_id, []).append(v)
            model_of = {v.id: model_id for model_id, vs in versions.items() for v in vs}
            latest_ids = [vs[-1].id for vs in versions.values()]
            inputs: dict[int, dict[str, Any]] = {}
            tags: dict[int, dict[str, str]] = {}
            for chunk in _chunks(latest_ids):
                inputs.update(
                    (version_id, schema)
                    for version_id, schema in connection.execute(
                        select(VersionRow.id, VersionRow.input_schema).where(VersionRow.id.in_(chunk))
                    )
                )
                for version_id, key, value in connection.execute(
                    select(TagRow.version_id, TagRow.key, TagRow.value).where(
                        TagRow.version_id.in_(chunk), TagRow.key.in_(_INVENTORY_TAGS)
                    )
                ):
                    tags.setdefault(version_id, {})[key] = value
            decisions: dict[int, list[Any]] = {}
            for d in connection.execute(
                select(DecisionRow.version_id, DecisionRow.action, DecisionRow.to_status, DecisionRow.actor,
                       DecisionRow.at).where(DecisionRow.at <= moment).order_by(DecisionRow.id)
            ):  # fmt: skip
                if d.version_id in model_of:
                    decisions.setdefault(model_of[d.version_id], []).append(d)
            production: dict[int, int | None] = {}
            for model_id, version in connection.execute(
                select(AliasHistoryRow.model_id, AliasHistoryRow.version)
                .where(AliasHistoryRow.alias == "production", AliasHistoryRow.at <= moment)
                .order_by(AliasHistoryRow.id)
            ):
                production[model_id] = version
            exceptions: dict[int, list[str]] = {}
            for e in session.scalars(
                select(PolicyExceptionRow)
                .where(PolicyExceptionRow.created_at <= moment, PolicyExceptionRow.expires_at > moment)
                .order_by(PolicyExceptionRow.id)
            ):
                if e.version_id in model_of:
                    exceptions.setdefault(model_of[e.version_id], []).append(
                        f"{e.rule} until {_aware(e.expires_at):%Y-%m-%d} ({e.approver})"
                    )
            result = []
            for model in models:
                model_versions = versions.get(model.id)
                if not model_versions:
                    continue
                model_decisions = decisions.get(model.id, [])
                status_of = {v.id: "registered" for v in model_versions}
                for d in model_decisions:
                    status_of[d.version_id] = d.to_status
                latest = model_versions[-1]
                latest_tags = tags.get(latest.id, {})
                tier = policy.tier(model.risk_tier)
                validations = [d for d in model_decisions if d.action == "validate"]
                last_validated = _aware(validations[-1].at) if validations else None
                approvers = sorted({d.actor for d in model_decisions if d.action == "approve"})
                developers = sorted({v.created_by for v in model_versions if v.created_by})
                in_use = production.get(model.id) is not None
                any_live = any(status_of[v.id] not in ("retired", "deleted") for v in model_versions)
                row = {
                    "model": model.name,
                    "purpose": model.description,
                    "restrictions": latest_tags.get("restrictions"),
                    "inputs": ", ".join(f["name"] for f in (inputs.get(latest.id) or {}).get("features", [])),
                    "upstream_models": latest_tags.get("upstream_models"),
                    "owner": model.owner,
                    "developers": ", ".join(developers),
                    "validator": ", ".join(approvers),
                    "risk_tier": model.risk_tier,
                    "status": "in use" if in_use else ("in development" if any_live else "retired"),
                    "production_version": production.get(model.id),
                    "latest_version": latest.version,
                    "last_validated": last_validated.date().isoformat() if last_validated else None,
                    "validation_findings": latest_tags.get("findings"),
                    "next_review": (d.date().isoformat() if (d := next_review(tier, last_validated)) else None),
                    "overdue": is_overdue(tier, last_validated, moment),
                    "limitations": latest_tags.get("limitations"),
                    "exceptions": "; ".join(exceptions.get(model.id, [])),
                }
                filled = [k for k in COMPLETENESS_FIELDS if row.get(k) not in (None, "", [])]
                row["completeness"] = round(len(filled) / len(COMPLETENESS_FIELDS), 2)
                result.append(row)
            return result


_INVENTORY_TAGS = ("restrictions", "upstream_models", "findings", "limitations")


def _chunks(ids: list[int], size: int = 500) -> list[list[int]]:
    """Lists short enough for one ``IN (...)`` on every database."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]


COMPLETENESS_FIELDS = (
    "purpose",
    "restrictions",
    "inputs",
    "owner",
    "developers",
    "validator",
    "risk_tier",
    "last_validated",
    "next_review",
    "limitations",
)


def _expiry(days: int | None) -> dt.datetime | None:
    if days is None:
        return None
    if days <= 0:
        raise InvalidInputError("a token's lifetime must be a positive number of days")
    return utcnow() + dt.timedelta(days=days)


def _evidence_dict(e: EvidenceRow, problems: list[str]) -> dict[str, Any]:
    return {
        "id": e.id,
        "kind": e.kind,
        "origin": e.origin,
        "name": e.name,
        "digest": e.digest,
        "size": e.size,
        "bound_digest": e.bound_digest,
        "schema_digest": e.schema_digest,
        "settings": e.settings,
        "case_set_digest": e.case_set_digest,
        "passed": e.passed,
        "summary": e.summary,
        "author": e.author,
        "created_at": _aware(e.created_at),
        "accepted_by": e.accepted_by,
        "counts": not problems,
        "problems": problems,
    }


__all__ = ["EVIDENCE_KINDS", "Governance"]
