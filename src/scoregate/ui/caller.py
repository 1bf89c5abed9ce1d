"""The registry and governance services acting for one request's caller.

The UI holds one registry (one engine, one artifact store) and, for each request, a
shallow copy of it carrying the caller's token and the request's id: every check a
service makes (authentication, roles, four-eyes, policy gates) runs exactly as for the
CLI, and every audit event names the UI request that caused it.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass

from scoregate.governance.access import Permission, Principal
from scoregate.governance.service import Governance
from scoregate.registry import Registry


@dataclass(frozen=True)
class Caller:
    registry: Registry
    governance: Governance
    principal: Principal
    request_id: str

    @property
    def signed_in(self) -> bool:
        return self.principal.authenticated

    def can(self, permission: Permission) -> bool:
        return self.principal.can(permission)

    @property
    def can_act(self) -> bool:
        """Whether a version page offers this caller any action at all."""
        return self.can_move_alias or any(
            self.can(p) for p in (Permission.APPROVE, Permission.VALIDATE, Permission.REGISTER, Permission.LEGAL_HOLD)
        )

    @property
    def can_move_alias(self) -> bool:
        return self.can(Permission.MOVE_ALIAS) or self.can(Permission.MOVE_PROTECTED_ALIAS)


def new_request_id() -> str:
    return f"ui-{uuid.uuid4().hex[:16]}"


def acting_as(base: Registry, token: str | None, request_id: str) -> Registry:
    """``base`` with the caller's token and request id; the engine and the store are shared."""
    registry = copy.copy(base)
    registry.token = token or ""
    registry.request_id = request_id
    return registry


def caller_for(base: Registry, token: str | None, request_id: str | None = None) -> Caller:
    """Authenticate ``token`` as the services do; raises ``UnauthorizedError`` when it is not valid
    (before ``scoregate init`` every caller is the local admin, as on the CLI)."""
    rid = request_id or new_request_id()
    registry = acting_as(base, token, rid)
    principal = registry.whoami()
    return Caller(registry=registry, governance=Governance(registry), principal=principal, request_id=rid)
