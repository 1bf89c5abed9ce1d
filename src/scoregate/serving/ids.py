"""Request ids: the server's, unique per decision, and the client's, kept beside it.

Every request gets a server id: a 64-bit random prefix drawn once per worker process
and a counter, 32 hex characters. It is what the prediction log, ``x-request-id`` in
the response and ``reproduce`` use, so one id names one decision even when clients
reuse theirs. (``uuid4()`` per request reads the OS random source each time, which
cost 15% of the event loop's time under load; a collision needs two processes to draw
the same 64-bit prefix.)

The client's id (the ``x-request-id`` header, or the ``id`` of a V2 request, which
wins as the protocol asks) is kept as ``client_request_id``: logged, echoed back in
``x-client-request-id`` and in the body, and searchable. It must be 1-128 printable
ASCII characters; anything else (control characters, which a terminal would
interpret when ``scoregate predictions`` prints them, or a 100 kB id) is refused with
400 naming the field, rather than silently altered, so that what the client logged
and what the server logged stay the same string.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Callable

from scoregate.serving.errors import HTTPError, bounded

MAX_CLIENT_ID = 128
_PRINTABLE_ASCII = re.compile(f"[ -~]{{1,{MAX_CLIENT_ID}}}")


def server_ids(prefix: str | None = None) -> tuple[str, Callable[[], str]]:
    """``(prefix, next_id)``: the worker's 16-hex-character prefix and a generator of ids."""
    prefix = prefix or secrets.token_hex(8)
    counter = itertools.count(1)
    return prefix, lambda: f"{prefix}{next(counter):016x}"


def client_request_id(value: object, field: str) -> str:
    """The client's id if it is 1-128 printable ASCII characters; else 400 naming ``field``."""
    if isinstance(value, str) and _PRINTABLE_ASCII.fullmatch(value):
        return value
    if not isinstance(value, str):
        problem = f"must be a string, got {type(value).__name__}"
    elif not value:
        problem = "is empty"
    elif len(value) > MAX_CLIENT_ID:
        problem = f"has {len(value)} characters (at most {MAX_CLIENT_ID})"
    else:
        problem = f"holds a character outside printable ASCII: {bounded(ascii(value), 80)}"
    raise HTTPError(
        400,
        "invalid_request_id",
        f"{field} {problem}; use 1-{MAX_CLIENT_ID} printable ASCII characters",
        details=[{"field": field, "rule": "request_id", "message": problem}],
    )


__all__ = ["MAX_CLIENT_ID", "client_request_id", "server_ids"]
