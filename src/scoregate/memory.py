"""Hand the heap memory a large request (or a large flush of the prediction log) freed back
to the operating system.

CPython returns its small-object arenas when they empty, but what went through
``malloc`` (the lists and buffers of a large request) stays in the C heap: glibc keeps
freed memory for reuse, and Arrow's allocator keeps what a Parquet flush used, so one
large request used to leave a worker hundreds of megabytes larger for good. A moment
after a large request (once its objects are gone), and after a flush of many rows,
``malloc_trim(0)`` and Arrow's ``release_unused`` return the free pages; the server runs
them on a thread (ctypes releases the interpreter lock), within a second.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from typing import Any

log = logging.getLogger("scoregate")


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
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def fixed_mmap_threshold(size: int = 128 * 1024) -> bool:
    """Keep glibc's mmap threshold at ``size``: every allocation from it on gets its own mapping,
    given back whole when freed. (glibc raises the threshold each time such a block is freed,
    after which a large request's buffers land in the main heap, where they pin it.)"""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, size))


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
    """Hands memory back once the worker is past a large request: :meth:`soon` marks it, and the
    server's once-a-second housekeeping calls :meth:`run_if_marked`, by when the request's
    objects are gone (a trim while they live returns nothing)."""

    def __init__(self) -> None:
        self._marked = False

    def soon(self) -> None:
        self._marked = _TRIM is not None

    def run_if_marked(self) -> None:
        if self._marked:
            self._marked = False
            asyncio.get_running_loop().run_in_executor(None, give_back_memory)
