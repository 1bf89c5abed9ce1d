"""Who a request acts as: its bearer token and its request id, bound to a per-request view of
the one registry the service holds (the engine and artifact store are shared)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from starlette.requests import Request

from scoregate.errors import InvalidInputError, UnauthorizedError
from scoregate.governance.access import Principal
from scoregate.governance.service import Governance
from scoregate.registry import Registry

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID = 128


def request_id_of(request: Request) -> str:
    """The client's id (the CLI sends its ``cli-...`` one, so one command's changes are found
    together in the audit log), bounded and printable, or a fresh ``api-...`` one."""
    given = request.headers.get(REQUEST_ID_HEADER)
    if given is None or given == "":
        return f"api-{uuid.uuid4().hex[:16]}"
    if len(given) > MAX_REQUEST_ID or not given.isprintable():
        raise InvalidInputError(f"invalid {REQUEST_ID_HEADER} header: expected 1-{MAX_REQUEST_ID} printable characters")
    return given


def bearer_token(request: Request) -> str:
    """The token of ``Authorization: Bearer ...``. The service never falls back on a local
    identity: every request names its caller."""
    header = request.headers.get("authorization")
    if not header:
        raise UnauthorizedError("an API token is required: send Authorization: Bearer <token> (SCOREGATE_TOKEN)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("the Authorization header must be 'Bearer <token>'")
    return token.strip()


@dataclass(frozen=True, slots=True)
class Caller:
    """The services on behalf of one request's caller."""

    registry: Registry
    request_id: str
    principal: Principal

    @property
    def governance(self) -> Governance:
        return Governance(self.registry)


def caller_of(request: Request) -> Caller:
    shared: Registry = request.app.state.registry
    request_id = request.state.request_id
    registry = shared.acting_as(bearer_token(request), request_id=request_id)
    return Caller(registry, request_id, registry.whoami())  # every request is authenticated, reads too
