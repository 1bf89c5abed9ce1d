"""Governance endpoints: users and tokens, evidence, validation and approval, policy,
exceptions, inventory, the audit chain, and the scoring nodes' credentials."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from scoregate.errors import InvalidInputError
from scoregate.governance.access import Permission
from scoregate.refs import MAX_VERSION, ModelRef
from scoregate.server.context import Caller, caller_of
from scoregate.server.models import (
    AuditVerification,
    Checkpoints,
    Decision,
    EvidenceAccept,
    EvidenceAttach,
    EvidenceRun,
    ExceptionGrant,
    IssuedToken,
    NewToken,
    NewUser,
    Page,
    PolicyDocument,
    PolicySet,
    Reason,
    RequiredReason,
)
from scoregate.server.routes_registry import Limit, Offset, page
from scoregate.server.uploads import Uploads

router = APIRouter()
CallerDep = Annotated[Caller, Depends(caller_of)]
Version = Annotated[int, Query(ge=1, le=MAX_VERSION)]


def _ref(name: str, version: int) -> ModelRef:
    if not 1 <= version <= MAX_VERSION:
        raise InvalidInputError(f"invalid version {version}: expected 1-{MAX_VERSION}")
    return ModelRef(name, version=version)


@router.get("/users", response_model=Page[dict], tags=["access"])
def users(caller: CallerDep, limit: Limit = 100, offset: Offset = 0) -> Page[dict]:
    return page(caller.governance.list_users(), limit, offset)


@router.post("/users", response_model=IssuedToken, status_code=201, tags=["access"])
def add_user(body: NewUser, caller: CallerDep) -> IssuedToken:
    return IssuedToken(token=caller.governance.add_user(body.name, body.roles, expires_in_days=body.expires_in_days))


@router.post("/users/{name}/tokens", response_model=IssuedToken, status_code=201, tags=["access"])
def issue_token(name: str, body: NewToken, caller: CallerDep) -> IssuedToken:
    token = caller.governance.issue_token(name, expires_in_days=body.expires_in_days, description=body.description)
    return IssuedToken(token=token)


@router.get("/tokens", response_model=Page[dict], tags=["access"])
def tokens(caller: CallerDep, limit: Limit = 100, offset: Offset = 0) -> Page[dict]:
    caller.principal.require(Permission.MANAGE_ACCESS, subject="tokens")
    return page(caller.governance.list_tokens(), limit, offset)


@router.delete("/tokens/{prefix}", status_code=204, tags=["access"])
def revoke_token(prefix: str, caller: CallerDep) -> Response:
    caller.governance.revoke_token(prefix)
    return Response(status_code=204)


@router.get("/models/{name}/versions/{version}/evidence", response_model=list[dict], tags=["evidence"])
def evidence(name: str, version: int, caller: CallerDep) -> list[dict]:
    return caller.governance.evidence(_ref(name, version))


@router.post("/models/{name}/versions/{version}/evidence", response_model=dict, status_code=201, tags=["evidence"])
def attach_evidence(name: str, version: int, body: EvidenceAttach, request: Request, caller: CallerDep) -> dict:
    """Attach a staged document (a review memo, an outside report)."""
    uploads: Uploads = request.app.state.uploads
    content = uploads.path(body.document.digest).read_bytes()
    return caller.governance.attach_evidence(_ref(name, version), body.kind, content, name=body.document.name)


@router.post("/models/{name}/versions/{version}/runs", response_model=dict, status_code=201, tags=["evidence"])
def record_run(name: str, version: int, body: EvidenceRun, caller: CallerDep) -> dict:
    """Record one of scoregate's own runs (validate, loadtest, profile, image); judged again by the gates."""
    return caller.governance.record_run(_ref(name, version), body.kind, body.document, name=body.name)


@router.post("/models/{name}/versions/{version}/evidence/{evidence_id}/accept", response_model=dict, tags=["evidence"])
def accept_evidence(name: str, version: int, evidence_id: int, body: EvidenceAccept, caller: CallerDep) -> dict:
    if not 1 <= evidence_id <= MAX_VERSION:
        raise InvalidInputError(f"invalid evidence id {evidence_id}")
    return caller.governance.accept_evidence(_ref(name, version), evidence_id, reason=body.reason)


@router.post("/models/{name}/versions/{version}/mark-validated", response_model=Decision, tags=["lifecycle"])
def mark_validated(name: str, version: int, body: Reason, caller: CallerDep) -> Decision:
    return Decision(status=caller.governance.mark_validated(_ref(name, version), reason=body.reason))


@router.post("/models/{name}/versions/{version}/approve", response_model=Decision, tags=["lifecycle"])
def approve(name: str, version: int, body: RequiredReason, caller: CallerDep) -> Decision:
    return Decision(status=caller.governance.approve(_ref(name, version), reason=body.reason))


@router.get("/models/{name}/versions/{version}/decisions", response_model=list[dict], tags=["lifecycle"])
def decisions(name: str, version: int, caller: CallerDep) -> list[dict]:
    return caller.governance.decisions(_ref(name, version))


@router.get("/models/{name}/versions/{version}/check", response_model=list[dict], tags=["lifecycle"])
def check(name: str, version: int, caller: CallerDep, alias: str = "production") -> list[dict]:
    """What the policy would refuse if ``alias`` moved to this version now (empty: nothing)."""
    return caller.governance.check(_ref(name, version), alias)


@router.post("/models/{name}/versions/{version}/exceptions", status_code=204, tags=["lifecycle"])
def grant_exception(name: str, version: int, body: ExceptionGrant, caller: CallerDep) -> Response:
    expires = body.expires_at if body.expires_at.tzinfo else body.expires_at.replace(tzinfo=dt.UTC)
    caller.governance.grant_exception(_ref(name, version), body.rule, reason=body.reason, expires_at=expires)
    return Response(status_code=204)


@router.get("/policy", response_model=PolicyDocument, tags=["policy"])
def policy(caller: CallerDep) -> PolicyDocument:
    number, document = caller.governance.policy()
    return PolicyDocument(id=number, document=document)


@router.put("/policy", response_model=dict, tags=["policy"])
def set_policy(body: PolicySet, caller: CallerDep) -> dict:
    """Put a policy in force, or propose it when the policy asks for a second admin."""
    return asdict(caller.governance.set_policy(body.document, reason=body.reason))


@router.post("/policy/proposals/{proposal_id}/approve", response_model=dict, tags=["policy"])
def approve_policy(proposal_id: int, body: RequiredReason, caller: CallerDep) -> dict:
    if not 1 <= proposal_id <= MAX_VERSION:
        raise InvalidInputError(f"invalid proposal id {proposal_id}")
    return asdict(caller.governance.approve_policy(proposal_id, reason=body.reason))


@router.get("/inventory", response_model=list[dict], tags=["inventory"])
def inventory(caller: CallerDep, at: dt.datetime | None = None) -> list[dict]:
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return caller.governance.inventory(at=at)


@router.post("/audit/verify", response_model=AuditVerification, tags=["audit"])
def verify_audit(body: Checkpoints, caller: CallerDep) -> AuditVerification:
    """Recompute the chain, compare every audited row with it, check the triggers and the
    anchors given (whose signatures the client checked with its own key)."""
    from scoregate.governance.audit import verify
    from scoregate.governance.checkpoint import Checkpoint, Scheme

    try:
        anchors = [Checkpoint(**{**a, "scheme": Scheme(a.get("scheme"))}) for a in body.anchors]
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"invalid anchor: {exc}") from None
    result = verify(caller.registry.engine, anchors=anchors)
    return AuditVerification(
        ok=result.ok,
        checked=result.checked,
        first_bad_seq=result.first_bad_seq,
        reason=result.reason,
        last_hash=result.last_hash,
        rows=result.rows,
        mismatches=[m.message for m in result.mismatches],
        problems=list(result.problems),
    )


@router.get("/serving/credentials", response_model=dict[str, Any], tags=["routing"])
def credentials(caller: CallerDep) -> dict[str, Any]:
    """Token hashes a scoring server admits (``--require-token``); for a scorer or an admin."""
    caller.principal.require(Permission.SCORE, subject="scoring credentials")
    return caller.governance.scoring_credentials()
