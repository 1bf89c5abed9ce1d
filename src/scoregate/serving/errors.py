"""HTTP errors of the scoring server and their bodies, which never echo more than a bound.

A message may quote what the client sent (a category value, an input's name); quoted
whole, a 1 MB value came back at twice its size, once in the message and once in the
details. Every string of an error body is cut to ``MAX_ECHO`` characters and the
details to ``MAX_DETAILS`` entries, so an error costs the server little whatever the
request held.
"""

from __future__ import annotations

from typing import Any

import orjson

from scoregate.errors import ScoregateError

MAX_ECHO = 300
MAX_DETAILS = 50


class HTTPError(ScoregateError):
    """An error with its own status and code (routing, limits, access, overload)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        *,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.status_code = status
        self.code = code
        self.headers = headers


def bounded(text: Any, limit: int = MAX_ECHO) -> str:
    text = text if isinstance(text, str) else str(text)
    return text if len(text) <= limit else f"{text[: limit - 30]}... ({len(text)} characters in all)"


def _details(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in details[:MAX_DETAILS]:
        out.append({k: (bounded(v) if isinstance(v, str) else v) for k, v in item.items()})
    return out


def error_body(exc: ScoregateError, request_id: str, client_request_id: str | None, *, v2_style: bool) -> bytes:
    """The JSON body of an error response; V2 routes carry the message in ``error``, as the protocol does."""
    message = bounded(exc.message)
    # V2 routes carry the message in "error", as the protocol does
    body: dict[str, Any] = {"error": message, "code": exc.code} if v2_style else {"error": exc.code, "message": message}
    if exc.details:
        body["details"] = _details(exc.details)
    body["request_id"] = request_id
    if client_request_id is not None:
        body["client_request_id"] = client_request_id
    return orjson.dumps(body)


__all__ = ["MAX_ECHO", "HTTPError", "bounded", "error_body"]
