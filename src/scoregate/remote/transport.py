"""HTTP to the registry service: one httpx client with the caller's token and request id,
errors turned back into the exceptions the embedded services raise (same message, same exit
code), paging, and streamed, digest-checked uploads and downloads."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from scoregate.errors import IntegrityError, ScoregateError, StoreUnavailableError
from scoregate.files import make_private, private_dir

CHUNK = 1 << 20
#: Seconds to connect and between bytes; a registration waits for the model's own timeout on top.
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0


def _error_classes() -> dict[str, type[ScoregateError]]:
    found: dict[str, type[ScoregateError]] = {}
    pending: list[type[ScoregateError]] = [ScoregateError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


class RemoteError(ScoregateError):
    """An error whose code this client does not know; it keeps the service's status."""

    def __init__(self, message: str, *, status_code: int, code: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message, details=details)
        self.status_code = status_code
        self.code = code


def segment(value: str) -> str:
    """One path segment, percent-encoded (a reference keeps its '@')."""
    return quote(value, safe="@")


def revive(value: Any) -> Any:
    """Datetimes back from the JSON of dict results (keys ``at`` or ``*_at``), so a command
    formats a remote result as it formats an embedded one."""
    if isinstance(value, list):
        return [revive(v) for v in value]
    if isinstance(value, dict):
        return {
            k: _when(v) if isinstance(v, str) and (k == "at" or k.endswith("_at")) else revive(v)
            for k, v in value.items()
        }
    return value


def _when(text: str) -> Any:
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return text


class Transport:
    def __init__(self, url: str, token: str | None, request_id: str | None) -> None:
        self.url = url.rstrip("/")
        headers = {"user-agent": "scoregate"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if request_id:
            headers["x-request-id"] = request_id
        self.http = httpx.Client(
            base_url=f"{self.url}/api/v1",
            headers=headers,
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        )

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        """One request; the parsed JSON body (None for 204), or the service's error raised."""
        extra = {"timeout": httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S)} if timeout is not None else {}
        try:
            response = self.http.request(method, path, **kwargs, **extra)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        self._raise_for(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def pages(self, path: str, params: dict[str, Any] | None = None, *, limit: int = 1000) -> list[Any]:
        """Every item of a paged list (bounded: the service caps what one list may hold)."""
        items: list[Any] = []
        offset: int | None = 0
        while offset is not None:
            body = self.call("GET", path, params={**(params or {}), "limit": limit, "offset": offset})
            items.extend(body["items"])
            offset = body["next_offset"]
        return items

    def upload(self, path: Path) -> tuple[str, int]:
        """Stream a file to ``PUT /uploads/{sha256}``; the service keeps it only if it hashes the same."""
        digest = sha256_file(path)

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as handle:
                while block := handle.read(CHUNK):
                    yield block

        body = self.call("PUT", f"/uploads/{digest}", content=chunks(), timeout=READ_TIMEOUT_S)
        return body["digest"], int(body["size"])

    def download(self, digest: str, destination: Path) -> Path:
        """Stream blob ``digest`` to ``destination`` (atomically), checking its SHA-256 here too."""
        private_dir(destination.parent)
        partial = destination.with_name(f"{destination.name}.{uuid.uuid4().hex}.partial")
        hasher = hashlib.sha256()
        try:
            with self.http.stream("GET", f"/artifacts/{digest}") as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response)
                with partial.open("wb") as handle:
                    make_private(partial)
                    for block in response.iter_bytes(CHUNK):
                        hasher.update(block)
                        handle.write(block)
            if hasher.hexdigest() != digest:
                raise IntegrityError(
                    f"artifact integrity check failed: the bytes the registry service sent for sha256:{digest} "
                    f"hash to sha256:{hasher.hexdigest()}; they will not be loaded"
                )
            os.replace(partial, destination)
            return destination
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        finally:
            partial.unlink(missing_ok=True)

    def _unreachable(self, exc: Exception) -> StoreUnavailableError:
        return StoreUnavailableError(f"the registry service at {self.url} cannot be reached: {exc}")

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        code = str(body.get("error", "http_error"))
        message = str(body.get("message") or f"the registry service answered {response.status_code}")
        details = body.get("details") if isinstance(body.get("details"), list) else None
        cls = _error_classes().get(code)
        if cls is not None and cls.status_code == response.status_code:
            raise cls(message, details=details)
        raise RemoteError(message, status_code=response.status_code, code=code, details=details)


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            hasher.update(block)
    return hasher.hexdigest()


__all__ = ["RemoteError", "Transport", "revive", "segment", "sha256_file"]
