"""Bearer tokens on the scoring routes (``scoregate serve --require-token``).

The tokens are the registry's own (``scoregate users add svc --role scorer`` prints one);
the server never sees a secret it could leak, only their SHA-256, as the registry stores
them. A database query per request would cost more than scoring, so each worker keeps
the valid tokens (hash, user, roles, expiry) in memory and reloads them with every poll
of the registry: a revoked token stops working within ``--poll-interval`` seconds, an
expired one at once.

``--token-role scorer`` (the default) admits tokens of users with the scorer role (or
admin), another role name that role, ``any`` every valid token. Health (``/v2/health/*``)
stays open for orchestrators' probes; ``/metrics`` is open unless
``--require-token-for-metrics``, for scrapers without a scorer token.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from scoregate.governance.access import Role
from scoregate.serving.errors import HTTPError
from scoregate.serving.options import ANY_ROLE

_CHALLENGE = ((b"www-authenticate", b'Bearer realm="scoregate"'),)


@dataclass(frozen=True, slots=True)
class Credential:
    """A valid token's owner, as the server needs it."""

    user: str
    roles: frozenset[str]
    expires_at: float | None = None  # seconds since the epoch


class TokenCheck:
    def __init__(self, role: str = Role.SCORER.value) -> None:
        self.role = role
        self._tokens: dict[str, Credential] = {}

    def update(self, tokens: dict[str, Credential]) -> None:
        """Replace the known tokens (keyed by the SHA-256 hex of the token) in one assignment."""
        self._tokens = dict(tokens)

    def check(self, authorization: bytes | None) -> str:
        """The user a request's ``Authorization`` header authenticates; 401/403 naming the rule."""
        if not authorization:
            raise HTTPError(
                401, "unauthorized", "this server requires a token: send Authorization: Bearer <token>", _CHALLENGE
            )
        scheme, _, token = authorization.strip().partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            raise HTTPError(401, "unauthorized", "the Authorization header must be: Bearer <token>", _CHALLENGE)
        credential = self._tokens.get(hashlib.sha256(token).hexdigest())
        if credential is None or (credential.expires_at is not None and credential.expires_at <= time.time()):
            raise HTTPError(401, "unauthorized", "the token is not valid (unknown, revoked or expired)", _CHALLENGE)
        if self.role != ANY_ROLE and self.role not in credential.roles and Role.ADMIN.value not in credential.roles:
            roles = ", ".join(sorted(credential.roles)) or "none"
            raise HTTPError(
                403,
                "forbidden",
                f"{credential.user} (roles: {roles}) may not use this server: it requires the role {self.role}",
            )
        return credential.user


__all__ = ["Credential", "TokenCheck"]
