"""Routing by traffic policy: which version a request goes to, and whether it is shadowed.

The policy's shape and its rules live in :mod:`scoregate.traffic` (the registry checks a
policy there when it is written); this module applies one to requests. Example::

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

from scoregate.traffic import CanarySplit, ShadowTarget, TrafficPolicy

__all__ = ["CanarySplit", "ShadowTarget", "TrafficPolicy", "choose_canary", "sticky_bucket"]


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
