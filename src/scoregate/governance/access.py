"""Who may do what: roles, the permissions they grant, and API tokens.

Tokens are random (256 bits) and stored only as their SHA-256, so the database
never holds a usable secret; a token is shown once, when it is issued. A plain hash
(not a slow password hash) is right here because the secret has full entropy.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from enum import StrEnum

from scoregate.errors import ForbiddenError, InvalidInputError


class Role(StrEnum):
    VIEWER = "viewer"
    DEVELOPER = "developer"
    VALIDATOR = "validator"
    DEPLOYER = "deployer"
    ADMIN = "admin"
    SCORER = "scorer"  # a client of the scoring server (`scoregate serve --require-token`)


class Permission(StrEnum):
    REGISTER = "register"  # new versions, tags, evidence of one's own work
    VALIDATE = "validate"  # mark a version validated on passing evidence
    APPROVE = "approve"
    MOVE_ALIAS = "move alias"  # non-protected aliases (staging, challenger, ...)
    MOVE_PROTECTED_ALIAS = "move protected alias"  # production and the like
    RETIRE = "retire"
    MANAGE_ACCESS = "manage users and tokens"
    MANAGE_POLICY = "change the governance policy"
    GRANT_EXCEPTION = "grant a policy exception"
    LEGAL_HOLD = "place or lift a legal hold"
    DELETE = "delete a version"
    SCORE = "score with and read the metadata of served models"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset(),
    Role.DEVELOPER: frozenset({Permission.REGISTER, Permission.VALIDATE, Permission.MOVE_ALIAS, Permission.RETIRE}),
    Role.VALIDATOR: frozenset({Permission.REGISTER, Permission.VALIDATE, Permission.APPROVE}),
    Role.DEPLOYER: frozenset({Permission.MOVE_ALIAS, Permission.MOVE_PROTECTED_ALIAS, Permission.RETIRE}),
    Role.ADMIN: frozenset(Permission),
    Role.SCORER: frozenset({Permission.SCORE}),
}


def parse_roles(values: list[str] | tuple[str, ...] | str) -> tuple[Role, ...]:
    items = values.split(",") if isinstance(values, str) else list(values)
    roles = []
    for item in items:
        try:
            roles.append(Role(item.strip()))
        except ValueError:
            raise InvalidInputError(
                f"invalid role {item.strip()!r}: choose from {', '.join(r.value for r in Role)}"
            ) from None
    if not roles:
        raise InvalidInputError("at least one role is required")
    return tuple(dict.fromkeys(roles))


@dataclass(frozen=True)
class Principal:
    """The identity a request acts as.

    ``authenticated`` is False only in bootstrap mode: before ``scoregate init`` has
    created the first user, the local operating-system user acts as admin, so a
    single-user embedded setup needs no token.
    """

    name: str
    roles: tuple[Role, ...] = field(default_factory=tuple)
    authenticated: bool = True
    token_id: int | None = None

    def can(self, permission: Permission) -> bool:
        return any(permission in ROLE_PERMISSIONS[role] for role in self.roles)

    def require(self, permission: Permission, *, subject: str | None = None) -> None:
        if self.can(permission):
            return
        holders = sorted(r.value for r, perms in ROLE_PERMISSIONS.items() if permission in perms)
        on = f" ({subject})" if subject else ""
        raise ForbiddenError(
            f"{self.name} (roles: {', '.join(r.value for r in self.roles) or 'none'}) may not {permission.value}{on}: "
            f"rule requires one of the roles {', '.join(holders)}"
        )


TOKEN_PREFIX = "sg_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
