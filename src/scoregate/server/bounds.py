"""A bound on request bodies: JSON requests may carry ``max_json_bytes`` (uploads have their
own, larger, limit in ``uploads``). Counted as the bytes arrive, so a chunked body without a
Content-Length is cut off too, before it is all in memory."""

from __future__ import annotations

from typing import Any

import orjson

UPLOADS = "/api/v1/uploads/"


class BodyLimit:
    def __init__(self, app: Any, max_json_bytes: int) -> None:
        self.app = app
        self.max_json_bytes = max_json_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(UPLOADS):
            await self.app(scope, receive, send)
            return
        limit = self.max_json_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit)
            return
        seen = 0
        started = False

        async def bounded_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _refuse(send, limit)


class _TooLarge(Exception):
    pass


async def _refuse(send: Any, limit: int) -> None:
    body = orjson.dumps({"error": "too_large", "message": f"the request body is larger than {limit} bytes"})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
