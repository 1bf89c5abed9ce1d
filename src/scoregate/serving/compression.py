"""Request bodies sent compressed (``Content-Encoding: gzip`` or ``deflate``), as Triton's
clients send them with ``request_compression_algorithm``.

Decompressed in bounded steps: a body may not grow past the server's body limit once
inflated (413, as for a plain body that large), so a small "zip bomb" costs the server
at most that limit, never its memory.
"""

from __future__ import annotations

import zlib

from scoregate.serving.errors import HTTPError

__all__ = ["ENCODINGS", "decode"]

#: Content-Encoding -> zlib's wbits for it (gzip header, zlib header).
ENCODINGS = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
_STEP = 1 << 16


def decode(body: bytes, encoding: bytes, limit: int) -> bytes:
    """``body`` inflated, at most ``limit`` bytes; 415 for an encoding not in :data:`ENCODINGS`,
    400 for a corrupt or truncated stream, 413 past the limit."""
    name = encoding.strip().lower()
    if name in (b"", b"identity"):
        return body
    wbits = ENCODINGS.get(name)
    if wbits is None:
        shown = name.decode("latin-1")[:40]
        raise HTTPError(
            415, "unsupported_media_type", f"Content-Encoding {shown!r} is not accepted: send gzip, deflate or none"
        )
    inflater = zlib.decompressobj(wbits)
    parts: list[bytes] = []
    size = 0
    data = body
    try:
        while data:
            chunk = inflater.decompress(data, _STEP)
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
            data = inflater.unconsumed_tail
        tail = inflater.flush()
    except zlib.error as exc:
        raise HTTPError(400, "bad_request", f"the {name.decode()} body cannot be decompressed: {exc}") from None
    size += len(tail)
    if size > limit:
        raise _too_large(limit)
    if not inflater.eof:
        raise HTTPError(400, "bad_request", f"the {name.decode()} body is truncated")
    parts.append(tail)
    return b"".join(parts)


def _too_large(limit: int) -> HTTPError:
    return HTTPError(
        413,
        "payload_too_large",
        f"the decompressed request body exceeds the limit of {limit} bytes (--max-body-mb)",
    )
