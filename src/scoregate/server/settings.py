"""The registry service's own options, in one frozen object."""

from __future__ import annotations

from dataclasses import dataclass

#: Largest artifact or training file one upload may carry (the stream is cut past it: 413).
DEFAULT_MAX_UPLOAD_BYTES = 8 * 2**30
#: Largest page a list endpoint returns; clients page through longer lists.
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8090
    workers: int = 1
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    #: Mount the web UI (``scoregate.ui.create_ui``) under /ui when the package is installed.
    ui: bool = True
