"""Governance operations over the registry: identity, evidence, lifecycle decisions,
policy, exceptions, retention and legal holds.

Every operation is one registry transaction that checks the caller's role, makes the
change and appends its audit event, so a change never exists without its record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from scoregate.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PolicyViolationError,
)
from scoregate.governance.access import Permission, Principal, Role, hash_token, new_token, parse_roles
from scoregate.governance.audit_checks import check_gone, check_rows
from scoregate.governance.policy import Policy, is_overdue, missing_items, next_review
from scoregate.governance.tables import (
    DecisionRow,
    EvidenceRow,
    LegalHoldRow,
    PolicyExceptionRow,
    PolicyRow,
    TokenRow,
    UserRow,
)
from scoregate.refs import ModelRef, validate_model_name
from scoregate.registry import Registry
from scoregate.registry.tables import ModelRow, VersionRow, utcnow

EVIDENCE_KINDS = ("validation", "loadtest", "profile", "document", "image", "parity")


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

    def attach_evidence(
        self,
        ref: str | ModelRef,
        kind: str,
        content: bytes | Path,
        *,
        name: str | None = None,
        summary: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Attach an immutable document to a version.

        A JSON report may say ``passed``, ``artifact_digest`` (what it was computed on) and
        ``within_budget``; those facts are what the policy gates read.
        """
        if kind not in EVIDENCE_KINDS:
            raise InvalidInputError(f"invalid evidence kind {kind!r}: choose one of {', '.join(EVIDENCE_KINDS)}")
        if isinstance(content, Path):
            name = name or content.name
            try:
                content = content.read_bytes()
            except OSError as exc:
                raise InvalidInputError(f"cannot read evidence file {content}: {exc.strerror}") from None
        facts = dict(summary or {})
        if not facts:
            try:
                parsed = json.loads(content)
                if isinstance(parsed, dict):
                    facts = {k: parsed[k] for k in ("passed", "artifact_digest", "within_budget") if k in parsed}
            except (ValueError, UnicodeDecodeError):
                pass
        digest = self.registry.artifacts.put_bytes(content)
        parsed_ref = _ref(ref)
        with self.registry.mutation(Permission.REGISTER, str(parsed_ref)) as (session, actor):
            model, row = self.registry.find(session, parsed_ref)
            if session.scalars(
                select(EvidenceRow).where(EvidenceRow.version_id == row.id, EvidenceRow.digest == digest)
            ).first():
                raise ConflictError(f"this {kind} document (sha256:{digest[:12]}) is already attached")
            evidence = EvidenceRow(
                version_id=row.id,
                kind=kind,
                name=name or f"{kind}.json",
                digest=digest,
                size=len(content),
                bound_digest=facts.get("artifact_digest"),
                passed=facts.get("passed"),
                summary=facts,
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
                after={
                    "id": evidence.id,
                    "kind": kind,
                    "digest": digest,
                    "passed": evidence.passed,
                    "bound_digest": evidence.bound_digest,
                },
            )
            return _evidence_dict(evidence)

    def evidence(self, ref: str | ModelRef) -> list[dict[str, Any]]:
        with self.registry.reading() as session:
            _, row = self.registry.find(session, _ref(ref))
            return [
                _evidence_dict(e)
                for e in session.scalars(
                    select(EvidenceRow).where(EvidenceRow.version_id == row.id).order_by(EvidenceRow.id)
                )
            ]

    def read_evidence(self, digest: str) -> bytes:
        return self.registry.artifacts.read_bytes(digest)

    # -- lifecycle -----------------------------------------------------------------------------

    def validate(self, ref: str | ModelRef, *, reason: str | None = None) -> str:
        """Mark a version validated on a passing validation report bound to its artifact."""
        parsed = _ref(ref)
        with self.registry.mutation(Permission.VALIDATE, str(parsed)) as (session, actor):
            _model, row = self.registry.find(session, parsed)
            if row.status in ("retired", "deleted"):
                raise ConflictError(f"{parsed} is {row.status}")
            attached = session.scalars(select(EvidenceRow).where(EvidenceRow.version_id == row.id)).all()
            check_rows(session, attached)
            reports = [
                e for e in attached if e.kind == "validation" and e.passed and e.bound_digest == row.artifact_digest
            ]
            if not reports:
                raise PolicyViolationError(
                    f"{parsed} cannot be marked validated: no passing validation report bound to its artifact "
                    f"sha256:{row.artifact_digest[:12]} (run `scoregate validate {parsed}`)",
                    details=[{"rule": "evidence:validation", "message": "missing passing validation report"}],
                )
            to_status = "validated" if row.status == "registered" else row.status
            self.registry.decide(session, actor, row, "validate", to_status, reason, [e.id for e in reports])
            self.registry.record_event(
                session, actor, "validate", str(parsed), after={"status": to_status}, reason=reason
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
        with self.registry.reading() as session:
            model, row = self.registry.find(session, _ref(ref))
            policy = self.registry.policy_in_force(session)
            if alias not in policy.protected_aliases:
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

    def set_policy(self, document: str, *, reason: str) -> int:
        Policy.parse(document)  # refuse a policy that would not load
        if not reason or not reason.strip():
            raise InvalidInputError("a policy change needs a reason (--reason)")
        digest = hashlib.sha256(document.encode()).hexdigest()
        with self.registry.mutation(Permission.MANAGE_POLICY, "policy") as (session, actor):
            previous = session.scalars(select(PolicyRow).order_by(PolicyRow.id.desc()).limit(1)).one_or_none()
            row = PolicyRow(
                document=document, digest=digest, author=actor.name, reason=reason.strip(), created_at=utcnow()
            )
            session.add(row)
            session.flush()
            self.registry.record_event(
                session,
                actor,
                "policy.set",
                "policy",
                before={"digest": previous.digest} if previous else None,
                after={"version": row.id, "digest": digest},
                reason=reason.strip(),
            )
            return row.id

    def grant_exception(self, ref: str | ModelRef, rule: str, *, reason: str, expires_at: dt.datetime) -> None:
        parsed = _ref(ref)
        expires_at = _aware(expires_at)
        if expires_at <= utcnow():
            raise InvalidInputError("an exception's expiry must be in the future")
        if not reason or not reason.strip():
            raise InvalidInputError("an exception needs a reason (--reason)")
        if not (rule.startswith("evidence:") or rule in ("approvals", "revalidation")):
            raise InvalidInputError(f"invalid rule {rule!r}: use evidence:<kind>, approvals or revalidation")
        with self.registry.mutation(Permission.GRANT_EXCEPTION, str(parsed)) as (session, actor):
            _model, row = self.registry.find(session, parsed)
            session.add(
                PolicyExceptionRow(
                    version_id=row.id,
                    rule=rule,
                    reason=reason.strip(),
                    approver=actor.name,
                    created_at=utcnow(),
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
        """One row per model with what regulators ask for; ``at`` gives the state as it was then."""
        moment = _aware(at) if at else utcnow()
        with self.registry.reading() as session:
            policy = self.registry.policy_in_force(session)
            result = []
            for model in session.scalars(select(ModelRow).where(ModelRow.created_at <= moment).order_by(ModelRow.name)):
                versions = [
                    v
                    for v in session.scalars(
                        select(VersionRow).where(VersionRow.model_id == model.id).order_by(VersionRow.version)
                    )
                    if _aware(v.created_at) <= moment
                ]
                if not versions:
                    continue
                decisions = [
                    d
                    for d in session.scalars(
                        select(DecisionRow)
                        .where(DecisionRow.version_id.in_([v.id for v in versions]))
                        .order_by(DecisionRow.id)
                    )
                    if _aware(d.at) <= moment
                ]
                status_of = {v.id: "registered" for v in versions}
                for d in decisions:
                    status_of[d.version_id] = d.to_status
                production = self.registry.alias_at(model.name, "production", moment)
                latest = versions[-1]
                tier = policy.tier(model.risk_tier)
                validations = [d for d in decisions if d.action == "validate"]
                last_validated = _aware(validations[-1].at) if validations else None
                approvers = sorted({d.actor for d in decisions if d.action == "approve"})
                developers = sorted({v.created_by for v in versions if v.created_by})
                exceptions = [
                    f"{e.rule} until {_aware(e.expires_at):%Y-%m-%d} ({e.approver})"
                    for e in session.scalars(
                        select(PolicyExceptionRow).where(PolicyExceptionRow.version_id.in_([v.id for v in versions]))
                    )
                    if _aware(e.created_at) <= moment < _aware(e.expires_at)
                ]
                in_use = production is not None
                any_live = any(status_of[v.id] not in ("retired", "deleted") for v in versions)
                row = {
                    "model": model.name,
                    "purpose": model.description,
                    "restrictions": _tag(latest, "restrictions"),
                    "inputs": ", ".join(f["name"] for f in latest.input_schema.get("features", [])),
                    "upstream_models": _tag(latest, "upstream_models"),
                    "owner": model.owner,
                    "developers": ", ".join(developers),
                    "validator": ", ".join(approvers),
                    "risk_tier": model.risk_tier,
                    "status": "in use" if in_use else ("in development" if any_live else "retired"),
                    "production_version": production,
                    "latest_version": latest.version,
                    "last_validated": last_validated.date().isoformat() if last_validated else None,
                    "validation_findings": _tag(latest, "findings"),
                    "next_review": (d.date().isoformat() if (d := next_review(tier, last_validated)) else None),
                    "overdue": is_overdue(tier, last_validated, moment),
                    "limitations": _tag(latest, "limitations"),
                    "exceptions": "; ".join(exceptions),
                }
                filled = [k for k in COMPLETENESS_FIELDS if row.get(k) not in (None, "", [])]
                row["completeness"] = round(len(filled) / len(COMPLETENESS_FIELDS), 2)
                result.append(row)
            return result


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


def _tag(version: VersionRow, key: str) -> str | None:
    for tag in version.tags:
        if tag.key == key:
            return tag.value
    return None


def _expiry(days: int | None) -> dt.datetime | None:
    if days is None:
        return None
    if days <= 0:
        raise InvalidInputError("a token's lifetime must be a positive number of days")
    return utcnow() + dt.timedelta(days=days)


def _evidence_dict(e: EvidenceRow) -> dict[str, Any]:
    return {
        "id": e.id,
        "kind": e.kind,
        "name": e.name,
        "digest": e.digest,
        "size": e.size,
        "bound_digest": e.bound_digest,
        "passed": e.passed,
        "summary": e.summary,
        "author": e.author,
        "created_at": _aware(e.created_at),
    }


__all__ = ["EVIDENCE_KINDS", "Governance"]
