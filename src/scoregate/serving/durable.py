"""Group commit of the prediction log on the event loop: no response before its decision is durable.

A handler appends its rows to the log, then awaits :meth:`LoopCommit.durable`. The first
wait of a loop turn schedules one commit at the end of the turn: one ``write`` of every
record appended meanwhile and, in ``sync`` durability, one ``fdatasync`` (about 0.2 ms
on this project's disks), after which all their responses go. Under load one sync
covers every request that completed in the turn, so its cost per request shrinks as the
load grows; alone, a request pays one sync.

When the commit's requests are all the worker has in flight, it runs on the loop itself:
nothing else could progress meanwhile, and handing it to a thread and back costs two
thread wake-ups, more than the sync. When other requests are in flight, it runs on a
thread of its own, so the loop keeps reading, validating and scoring them while the disk
syncs, and they form the next group (one commit in flight at a time). A disk that turns
slow must not stall the loop either: a commit that takes ``thread_above`` seconds or
longer sends the next ``SLOW_MEMORY`` commits to the thread whatever the load (the loop
answers health checks meanwhile); the next fast commit there brings it back.
A commit that fails (disk full, I/O error) fails its requests with 503: a decision that
is not recorded is not answered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any

from scoregate.registry.predictions import PredictionLog
from scoregate.serving.errors import HTTPError

#: Commits sent to the thread after a slow one.
SLOW_MEMORY = 32


class LoopCommit:
    def __init__(
        self,
        log: PredictionLog,
        *,
        observe: Any = None,
        thread_above: float = 0.001,
        in_flight: Any = None,
    ) -> None:
        self.log = log
        self.thread_above = thread_above
        self._in_flight = in_flight or (lambda: 0)  # requests the worker is handling, these included
        self._observe = observe  # called with each commit's seconds (a histogram's observe)
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        self._in_thread = 0  # commits left to run on the thread
        self._busy = False  # a thread commit is in flight
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.errors = 0

    def durable(self) -> asyncio.Future[None]:
        """A future done once every row appended so far is durable (or failed with 503)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiters.append(future)
        if not self._scheduled and not self._busy:
            self._scheduled = True
            loop.call_soon(self._commit, loop)
        return future

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def _commit(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        waiters, self._waiters = self._waiters, []
        if not waiters:
            return
        others = self._in_flight() > len(waiters)
        if self._in_thread or others:
            if self._in_thread:
                self._in_thread -= 1
            self._busy = True
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="log-commit")
            done = loop.run_in_executor(self._executor, self._timed_commit)
            done.add_done_callback(lambda f: self._after_thread(loop, waiters, f))
            return
        error, seconds = self._timed_commit()
        if seconds >= self.thread_above:
            self._in_thread = SLOW_MEMORY
        _release(waiters, error)

    def _after_thread(self, loop: asyncio.AbstractEventLoop, waiters: list[Any], done: Any) -> None:
        self._busy = False
        error, seconds = done.result()
        if seconds < self.thread_above:
            self._in_thread = 0  # fast again: back on the loop
        _release(waiters, error)
        if self._waiters and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._commit, loop)

    def _timed_commit(self) -> tuple[BaseException | None, float]:
        started = time.perf_counter()
        try:
            self.log.commit()
        except OSError as exc:
            self.errors += 1
            return HTTPError(
                503, "log_unavailable", f"the decision could not be recorded in the prediction log: {exc}"
            ), 0.0
        seconds = time.perf_counter() - started
        if self._observe is not None:
            self._observe(seconds)
        return None, seconds


def _release(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in waiters:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


__all__ = ["LoopCommit"]
