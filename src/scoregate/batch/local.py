"""The local engine: a pool of worker processes on this machine, one chunk each at a time.

The coordinator hands out chunks in order and takes back commit records; it never
touches rows. A worker that dies on a chunk (killed, out of memory, a crash in native
code) or overruns ``chunk_timeout`` is replaced and the chunk given again once; a second
failure of the same chunk stops the job naming it, and the job can be resumed.
Written by hand rather than with ``concurrent.futures``: a dead worker breaks a
``ProcessPoolExecutor`` and all of its futures, so it cannot say which chunk killed it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from scoregate.batch.store import ChunkRecord

#: A worker must be ready (interpreter, imports, the model loaded) within this many seconds.
START_TIMEOUT_S = 300.0
#: Tries of one chunk: the first and one retry on a fresh worker.
ATTEMPTS = 2


@dataclass
class PoolSettings:
    workers: int
    chunk_timeout: float = 3600.0
    memory_mb: int | None = None
    threads: int | None = None


@dataclass
class Stop:
    """Why the pool stopped before the end."""

    message: str
    chunk: int | None = None


class _Worker:
    def __init__(self, init: dict[str, Any]) -> None:
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scoregate.batch.worker", str(r1), str(w2)],
            pass_fds=(r1, w2),
            stdin=subprocess.DEVNULL,
            # Arrow's default pool (mimalloc) keeps what it freed in reserve: the system allocator gives
            # it back, so a worker's memory follows its chunk.
            env={"ARROW_DEFAULT_MEMORY_POOL": "system", **os.environ},
        )
        os.close(r1)
        os.close(w2)
        self.out = Connection(w1, readable=False)
        self.conn = Connection(r2, writable=False)
        self.out.send({"init": init})
        self.started = time.monotonic()
        self.ready = False
        self.chunk: int | None = None
        self.since = 0.0

    def give(self, index: int, attempt: int) -> None:
        self.chunk = index
        self.since = time.monotonic()
        self.out.send(("chunk", index, attempt))

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        self._close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.out.send(("stop",))
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        for c in (self.out, self.conn):
            with contextlib.suppress(OSError):
                c.close()


@dataclass
class PoolRun:
    committed: list[ChunkRecord] = field(default_factory=list)
    stop: Stop | None = None
    retried: list[int] = field(default_factory=list)


def run_chunks(
    todo: list[int],
    init: dict[str, Any],
    settings: PoolSettings,
    on_commit: Callable[[ChunkRecord], Stop | None],
) -> PoolRun:
    """Score ``todo`` (chunk indexes) on ``settings.workers`` processes; ``on_commit`` may stop the run."""
    result = PoolRun()
    pending = collections.deque(todo)
    failures: dict[int, int] = collections.Counter()
    workers: list[_Worker] = []
    init = {**init, "threads": settings.threads, "memory_mb": settings.memory_mb, "sys_path": list(sys.path)}

    def failed(worker: _Worker, why: str) -> None:
        index = worker.chunk
        workers.remove(worker)
        worker.kill()
        if index is None:
            if not worker.ready:
                result.stop = result.stop or Stop(f"a worker exited before it was ready: {why}")
            return
        failures[index] += 1
        if failures[index] >= ATTEMPTS:
            result.stop = result.stop or Stop(f"chunk {index} failed {ATTEMPTS} times: {why}", chunk=index)
            return
        result.retried.append(index)
        pending.appendleft(index)

    try:
        for _ in range(min(settings.workers, len(pending))):
            workers.append(_Worker(init))
        while (pending or any(w.chunk is not None for w in workers)) and result.stop is None:
            busy = sum(1 for w in workers if w.chunk is not None)
            while len(workers) < min(settings.workers, len(pending) + busy):
                workers.append(_Worker(init))  # a replacement for one that failed
            for w in workers:
                if w.ready and w.chunk is None and pending:
                    index = pending.popleft()
                    w.give(index, failures[index] + 1)
            ready = wait([w.conn for w in workers], timeout=0.5)
            now = time.monotonic()
            for w in list(workers):
                if w.conn not in ready:
                    if not w.ready and now - w.started > START_TIMEOUT_S:
                        failed(w, f"not ready within {START_TIMEOUT_S:g} s")
                    elif w.chunk is not None and now - w.since > settings.chunk_timeout:
                        failed(
                            w, f"not done within --chunk-timeout {settings.chunk_timeout:g} s; the worker was killed"
                        )
                    continue
                try:
                    message = w.conn.recv()
                except (EOFError, OSError):
                    code = w.proc.wait()
                    failed(w, f"the worker died (exit code {code})")
                    continue
                kind = message[0]
                if kind == "ready":
                    w.ready = True
                elif kind == "fatal":
                    result.stop = Stop(message[1])
                elif kind == "error":
                    failed(w, message[2])
                elif kind == "done":
                    record = ChunkRecord.model_validate_json(message[1])
                    w.chunk = None
                    result.committed.append(record)
                    stop = on_commit(record)
                    if stop is not None:
                        result.stop = stop
    finally:
        for w in workers:
            if w.chunk is None:
                w.stop()
            else:
                w.kill()
    return result
