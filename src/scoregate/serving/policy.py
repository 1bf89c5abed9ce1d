"""Traffic policies per alias: a canary split and a shadow challenger.

The registry stores a policy as opaque JSON (``Registry.set_traffic_policy``); this
module owns its shape and its rules. Example::

    {"canary": {"version": 4, "percent": 10, "sticky_field": "customer_id"},
     "shadow": {"version": 5, "sample": 1.0}}

``canary`` sends ``percent`` of the alias's requests to ``version`` (the rest to the
version the alias points to); with ``sticky_field`` the choice is a stable hash of
that field's value in the request's first row, so a given key always lands on the
same version. ``shadow`` scores a copy of (a ``sample`` fraction of) the traffic with
``version`` off the response path and logs its outputs with ``shadow=true``.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scoregate.errors import InvalidInputError


class CanarySplit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1, description="The challenger version that receives `percent` of the traffic.")
    percent: float = Field(gt=0, le=100, description="Share of requests (0-100] routed to the challenger.")
    sticky_field: str | None = Field(default=None, description="Route by a stable hash of this input field.")


class ShadowTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1, description="The version that scores a copy of the traffic.")
    sample: float = Field(default=1.0, gt=0, le=1, description="Fraction of requests copied to the shadow.")


class TrafficPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    canary: CanarySplit | None = None
    shadow: ShadowTarget | None = None

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


def sticky_bucket(value: Any) -> float:
    """A stable position in [0, 100) for a key value (same on every worker and restart)."""
    return (zlib.crc32(str(value).encode()) % 10_000) / 100.0


def choose_canary(split: CanarySplit, first_row: Any, rand: Any = random.random) -> bool:
    """True when this request goes to the canary version."""
    if split.sticky_field is not None and isinstance(first_row, dict):
        key = first_row.get(split.sticky_field)
        if key is not None:
            return sticky_bucket(key) < split.percent
    return rand() * 100.0 < split.percent
