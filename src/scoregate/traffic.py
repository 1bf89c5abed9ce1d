"""Traffic policies per alias: a canary split and a shadow challenger (the contract).

A policy belongs to one ``name@alias``: ``canary`` sends ``percent`` of its requests to
another version of the same model (with ``sticky_field``, by a stable hash of that input
field, so one customer always lands on the same version); ``shadow`` scores a copy of a
``sample`` of the traffic with another version, off the response path, and logs its
outputs beside the primary ones. The registry checks a policy against this model when
it is written (``scoregate traffic set``) and gates a canary like the alias it splits;
the server (:mod:`scoregate.serving.policy`) applies it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scoregate.errors import InvalidInputError

#: The largest version number a policy may name (the registry's integer column).
MAX_VERSION = 2**31 - 1


class CanarySplit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1, le=MAX_VERSION, description="The challenger version that receives `percent`.")
    percent: float = Field(
        gt=0, le=100, allow_inf_nan=False, description="Share of requests (0-100] routed to the challenger."
    )
    sticky_field: str | None = Field(
        default=None, min_length=1, max_length=128, description="Route by a stable hash of this input field."
    )


class ShadowTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1, le=MAX_VERSION, description="The version that scores a copy of the traffic.")
    sample: float = Field(
        default=1.0, gt=0, le=1, allow_inf_nan=False, description="Fraction of requests copied to the shadow."
    )


class TrafficPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    canary: CanarySplit | None = None
    shadow: ShadowTarget | None = None

    @property
    def empty(self) -> bool:
        return self.canary is None and self.shadow is None

    @classmethod
    def parse(cls, data: Any) -> TrafficPolicy:
        """Validate stored or submitted JSON, raising :class:`InvalidInputError` naming the rule."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "<policy>"
            raise InvalidInputError(
                f"invalid traffic policy: {where}: {first['msg']}",
                details=[
                    {"field": ".".join(str(p) for p in e["loc"]), "rule": e["type"], "message": e["msg"]}
                    for e in exc.errors()
                ],
            ) from None

    def versions(self) -> set[int]:
        out: set[int] = set()
        if self.canary is not None:
            out.add(self.canary.version)
        if self.shadow is not None:
            out.add(self.shadow.version)
        return out


__all__ = ["CanarySplit", "ShadowTarget", "TrafficPolicy"]
