"""Streamed uploads, checked against the digest the client announced.

A client uploads a file (an artifact, a training file, an evidence document) before the
request that uses it; the bytes are hashed as they arrive and kept under their SHA-256 only
if it is the one named in the URL, so a truncated or altered upload is refused (422) and
never reaches a registration. Staged files older than ``STAGED_TTL_S`` are removed.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from scoregate.errors import InvalidInputError, NotFoundError
from scoregate.files import make_private, private_dir

DIGEST = re.compile(r"[0-9a-f]{64}")
STAGED_TTL_S = 3600.0


class UploadTooLargeError(InvalidInputError):
    status_code = 413
    code = "too_large"


def checked_digest(digest: str) -> str:
    if not DIGEST.fullmatch(digest):
        raise InvalidInputError(f"invalid digest {digest[:80]!r}: expected 64 lowercase hex characters (SHA-256)")
    return digest


class Uploads:
    """Staged uploads under one private folder, named by their digest."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        private_dir(folder)

    def path(self, digest: str) -> Path:
        """The staged file of ``digest``, or NotFoundError naming the upload to make first."""
        staged = self.folder / checked_digest(digest)
        if not staged.is_file():
            raise NotFoundError(f"no upload sha256:{digest[:12]}…: PUT /api/v1/uploads/{digest} first")
        return staged

    async def receive(self, digest: str, chunks: AsyncIterator[bytes]) -> int:
        """Stream ``chunks`` to disk, hashing them; keep the file only if it hashes to ``digest``."""
        checked_digest(digest)
        self._expire()
        partial = self.folder / f".{uuid.uuid4().hex}.partial"
        hasher = hashlib.sha256()
        size = 0
        try:
            with partial.open("wb") as handle:
                make_private(partial)
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise UploadTooLargeError(
                            f"the upload is larger than {self.max_bytes} bytes (the service's limit)"
                        )
                    hasher.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            actual = hasher.hexdigest()
            if actual != digest:
                raise InvalidInputError(
                    f"upload digest mismatch: the {size} bytes received hash to sha256:{actual[:12]}…, "
                    f"not sha256:{digest[:12]}… (truncated or altered on the way)"
                )
            os.replace(partial, self.folder / digest)
            return size
        finally:
            partial.unlink(missing_ok=True)

    def discard(self, digest: str) -> None:
        (self.folder / checked_digest(digest)).unlink(missing_ok=True)

    def _expire(self) -> None:
        cutoff = time.time() - STAGED_TTL_S
        for entry in self.folder.iterdir():
            try:
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
            except OSError:
                continue
