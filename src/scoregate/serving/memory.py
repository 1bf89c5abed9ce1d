"""Hand the heap memory a large request freed back to the operating system.

CPython returns its small-object arenas when they empty, but what went through
``malloc`` (the lists and buffers of a large request) stays in the C heap: glibc keeps
freed memory for reuse, so one large request used to leave a worker hundreds of
megabytes larger for good. A moment after a large request (once its objects are
gone), ``malloc_trim(0)`` returns the free pages; it runs on a thread (ctypes releases
the interpreter lock), at most once per ``DELAY``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from typing import Any

log = logging.getLogger("scoregate.serving")

DELAY = 0.2


def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def give_back_memory() -> None:
    """Return free heap pages to the OS now (a no-op where the C library cannot), and what
    Arrow's allocator keeps of the prediction log's last flush."""
    if _TRIM is not None:
        _TRIM(0)
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except Exception:  # pragma: no cover - best effort
        log.debug("releasing Arrow's unused memory failed", exc_info=True)


class MemoryTrim:
    """Schedules :func:`give_back_memory` on a thread a moment from now, coalesced (one per app)."""

    def __init__(self) -> None:
        self._scheduled = False

    def soon(self) -> None:
        if _TRIM is None or self._scheduled:
            return
        loop = asyncio.get_running_loop()
        self._scheduled = True

        def run() -> None:
            self._scheduled = False
            loop.run_in_executor(None, give_back_memory)

        loop.call_later(DELAY, run)
