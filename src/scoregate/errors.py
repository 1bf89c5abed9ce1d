"""One error hierarchy for the whole platform.

Every error a user can cause carries the HTTP status it maps to, so the CLI, the
server and the Python API report the same failure the same way: one line, no
traceback, the right exit or status code.
"""

from __future__ import annotations

from typing import Any


class ScoregateError(Exception):
    """Base of every error scoregate raises on purpose."""

    status_code: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class NotFoundError(ScoregateError):
    status_code = 404
    code = "not_found"


class UnauthorizedError(ScoregateError):
    """No valid API token: missing, unknown, expired or revoked."""

    status_code = 401
    code = "unauthorized"


class ForbiddenError(ScoregateError):
    """A valid identity without the role a rule requires; the message names the rule."""

    status_code = 403
    code = "forbidden"


class PolicyViolationError(ScoregateError):
    """A move that the governance policy refuses; ``details`` lists every missing item."""

    status_code = 409
    code = "policy_violation"


class ConflictError(ScoregateError):
    status_code = 409
    code = "conflict"


class InvalidReferenceError(ScoregateError):
    status_code = 400
    code = "invalid_reference"


class InvalidInputError(ScoregateError):
    """Data that does not satisfy a contract (schema, file format, argument rule)."""

    status_code = 422
    code = "invalid_input"


class SchemaViolationError(InvalidInputError):
    """Rows that break the model's input schema; ``details`` names each field and rule."""

    code = "schema_violation"


class FlavorError(InvalidInputError):
    """An artifact that the named flavor cannot load or score."""

    code = "flavor_mismatch"


class IntegrityError(ScoregateError):
    """Stored bytes whose digest no longer matches the recorded one."""

    status_code = 409
    code = "integrity_error"


class TamperedError(IntegrityError):
    """A stored row, or the audit log itself, differs from what the platform recorded: it was
    changed behind the platform's back. The message names the table, row, field and event."""

    code = "tampered"


class ConfigurationError(ScoregateError):
    status_code = 400
    code = "configuration_error"


class ModelTimeoutError(ScoregateError):
    """A model that did not load or answer within its bound. The work was stopped (its process
    killed), not left running; ``partial`` is what it handed back before it stopped, if anything."""

    status_code = 504
    code = "model_timeout"

    def __init__(
        self,
        message: str,
        *,
        ticks: int = 0,
        partial: Any = None,
        seconds: float = 0.0,
        stalled: bool = False,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.ticks = ticks
        self.partial = partial
        self.seconds = seconds
        self.stalled = stalled


class StoreUnavailableError(ScoregateError):
    """The metadata database or artifact store cannot be reached."""

    status_code = 503
    code = "store_unavailable"
