"""One object for every setting of the scoring server, validated once.

``scoregate serve`` builds it from its options, :func:`~scoregate.serving.run` hands it
to each worker, and :func:`~scoregate.serving.create_app` takes its fields as keyword
arguments, so a limit has one name, one default and one rule everywhere.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scoregate.errors import InvalidInputError
from scoregate.governance.access import Role
from scoregate.registry.predictions import Durability

DEFAULT_MAX_BODY = 10 * 1024 * 1024
#: Requests waiting for one model version before new ones get 503 (load shedding): past
#: this a client is better served by a quick "retry later" than by a queue it cannot see.
DEFAULT_MAX_QUEUED = 1000
#: Seconds under which a model's lone requests may be scored on the event loop (the direct path).
DEFAULT_DIRECT_BELOW = 0.002
#: ``token_role`` that accepts a valid token whatever its roles.
ANY_ROLE = "any"


class ScoringMode(StrEnum):
    THREAD = "thread"  # each model version on its own scoring thread
    INLINE = "inline"  # on the event loop


class ServeOptions(BaseModel):
    """The scoring server's settings (see ``scoregate serve --help`` for each)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[str] | None = None
    # bounded work per request
    max_body_bytes: int = Field(DEFAULT_MAX_BODY, ge=1)
    max_request_rows: int = Field(10_000, ge=1, description="Rows one request may carry (413 above).")
    max_batch_rows: int = Field(256, ge=1, description="Rows per framework call; larger requests are sliced.")
    max_queued_requests: int = Field(DEFAULT_MAX_QUEUED, ge=1)
    shadow_max_pending: int = Field(1000, ge=1)
    # connections
    header_timeout: float = Field(10.0, gt=0, description="Seconds to send a request's headers.")
    body_timeout: float = Field(30.0, gt=0, description="Seconds to send a request's body.")
    keep_alive_timeout: float = Field(5.0, gt=0, description="Seconds an idle connection is kept.")
    max_connections: int = Field(1000, ge=1, description="Open connections per worker; more get 503.")
    graceful_timeout: float = Field(30.0, ge=0)
    # scoring
    scoring: ScoringMode = ScoringMode.THREAD
    direct_below: float = Field(DEFAULT_DIRECT_BELOW, ge=0)
    scorer_threads: int | None = Field(None, ge=1)
    switch_interval: float | None = Field(None, gt=0)
    poll_interval: float = Field(0.5, gt=0)
    # the prediction log
    log_predictions: bool = True
    log_durability: Durability = Durability.SYNC
    log_flush_interval: float = Field(1.0, gt=0)
    log_flush_rows: int = Field(50_000, ge=1)
    # live monitoring (:mod:`scoregate.serving.monitoring`)
    monitoring: bool = Field(True, description="Count scored rows into live windows and export their drift.")
    monitoring_window: int = Field(300, ge=1, le=86_400, description="Seconds per live monitoring window.")
    monitoring_max_features: int = Field(50, ge=1, le=1000, description="Features (and outputs) with gauges.")
    monitoring_max_versions: int = Field(20, ge=1, le=1000, description="Versions monitored live per worker.")
    monitoring_retention_days: float = Field(35.0, ge=0, description="Days live windows are kept (0: forever).")
    # access
    require_token: bool = False
    token_role: str = Role.SCORER.value
    require_token_for_metrics: bool = False

    @field_validator("token_role")
    @classmethod
    def _known_role(cls, value: str) -> str:
        if value != ANY_ROLE and value not in {r.value for r in Role}:
            raise ValueError(f"must be {ANY_ROLE} or one of the roles {', '.join(r.value for r in Role)}")
        return value

    @classmethod
    def parse(cls, **values: Any) -> ServeOptions:
        """Validate, raising :class:`InvalidInputError` naming the option (as ``scoregate serve``
        spells it), the value and the rule."""
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(p) for p in first["loc"]) or "options"
            rule = first["msg"].replace("Input should be", "must be").replace("Value error, ", "")
            raise InvalidInputError(
                f"invalid --{name.replace('_', '-')} {first.get('input')!r}: {rule}",
                details=[
                    {"field": ".".join(str(p) for p in e["loc"]), "rule": e["type"], "message": e["msg"]}
                    for e in exc.errors()
                ],
            ) from None


__all__ = ["ANY_ROLE", "DEFAULT_DIRECT_BELOW", "DEFAULT_MAX_BODY", "DEFAULT_MAX_QUEUED", "ScoringMode", "ServeOptions"]
