"""Adaptive batching: one scoring thread per model version, or inline on the event loop.

Requests are validated on the event loop and queued here as jobs. The scoring thread
blocks until a job arrives, then greedily takes whatever else is already waiting (no
timer: an idle server scores a lone request at once, a busy one merges the requests
that queued up while the previous batch was scoring), up to ``max_batch_rows``. It
builds one input for the batch (a float matrix or a typed frame), makes one framework
call and hands every job its own slice of the outputs. Scoring runs off the event loop,
so one slow model does not stall the others or the HTTP handling.

Inline mode is for fast models. Python threads share one interpreter lock: a model
whose call releases and re-takes the lock many times (scikit-learn's tree ensembles
do, once per tree) convoys with the event loop, each handoff waiting for the switch
interval, and ends up slower than scoring on the loop itself. Inline, the batch is
scored in a loop callback: requests that arrive meanwhile wait in the socket buffers
and form the next batch, so the greedy behaviour is the same without any handoff.
Inline is opt-in (``scoring="inline"``): it saves the handoff for fast models, but a
slow model would then delay every other model of the worker.

Thread mode keeps one shortcut from inline mode, the *direct path*: a request that
arrives alone, for a model whose calls take less than ``direct_below`` seconds
(no two of its last 32 calls were slower), while its scoring thread is idle, is scored
on the event loop at the end of the loop iteration. Handing it to the thread and back costs two thread wake-ups
and GIL handoffs across cores, about 0.1-0.5 ms on a 2-core VM, which is most of
the server's overhead on a lightly loaded fast model. Under load the scoring thread
is busy or several requests are waiting, so they take the queue and batch as
before; a slow model never takes the shortcut (its warm-up calls show it). The price: a
model measured fast that turns slow delays the loop for two calls, then stays on its
thread for its next 32 calls. A lock keeps the loop and the thread from ever calling the same
scorer at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scoregate.flavors.base import Scorer
from scoregate.schema import RecordValidator
from scoregate.scoring import records_predictor

log = logging.getLogger("scoregate.serving")

_STOP = object()
SLOW_CALL_MEMORY = 32  # calls a model stays off the direct path after two slow ones in a row of 32


class BatcherClosed(RuntimeError):
    """Raised by ``submit`` on a batcher that was retired by a hot swap."""


@dataclass(frozen=True, slots=True)
class Outputs:
    """One job's outputs, columnar: ``columns[i]`` holds the values of ``names[i]``."""

    names: list[str]
    kinds: list[str]  # numpy dtype kind + itemsize, e.g. "f8", "i8", "b1", "O8"
    columns: list[list[Any]]

    def rows(self) -> list[dict[str, Any]]:
        names = self.names
        return [dict(zip(names, values, strict=True)) for values in zip(*self.columns, strict=True)]

    @classmethod
    def concat(cls, parts: Sequence[Outputs]) -> Outputs:
        """The outputs of a request scored in slices, in order."""
        first = parts[0]
        if len(parts) == 1:
            return first
        columns = [[value for part in parts for value in part.columns[i]] for i in range(len(first.names))]
        return cls(first.names, first.kinds, columns)


class _Job:
    __slots__ = ("bulk", "callback", "future", "loop", "records")

    def __init__(self, records: Sequence[Any], future: Any, loop: Any, callback: Any, bulk: bool = False) -> None:
        self.records = records
        self.future = future
        self.loop = loop
        self.callback = callback
        self.bulk = bulk


def _deliver(items: list[tuple[Any, Any, BaseException | None]]) -> None:
    for future, result, error in items:
        if future.done():  # the client went away
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class Batcher:
    def __init__(
        self,
        scorer: Scorer,
        validator: RecordValidator,
        *,
        name: str,
        max_batch_rows: int = 256,
        on_batch: Callable[[int], None] | None = None,
        thread_init: Callable[[], None] | None = None,
        inline: bool = False,
        direct_below: float = 0.0,
    ) -> None:
        self.scorer = scorer
        self.validator = validator
        self.name = name
        self.max_batch_rows = max(1, int(max_batch_rows))
        self.on_batch = on_batch
        self.closed = False
        self._predict = records_predictor(scorer, validator)
        self._thread_init = thread_init
        self.inline = inline
        self.direct_below = 0.0 if inline else float(direct_below)
        #: Calls left before the direct path may be used again: 1 until a call is measured,
        #: SLOW_CALL_MEMORY after a second call within SLOW_CALL_MEMORY calls that took
        #: ``direct_below`` or longer. One slow call alone is the machine (the process was
        #: descheduled), not the model: on a busy 2-core VM it happens every few hundred calls.
        self.thread_only_calls = 1
        self._calls_since_slow = SLOW_CALL_MEMORY
        self._scoring = threading.Lock()  # held by whoever is calling the scorer
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Taken from the queue by the scoring thread: requests first, slices of large ones after
        self._regular: collections.deque[_Job] = collections.deque()
        self._bulk: collections.deque[_Job] = collections.deque()
        self._pending: list[_Job] = []  # waiting for the end of the loop turn (inline, direct path)
        self._pending_bulk: collections.deque[_Job] = collections.deque()  # inline: slices of large requests
        self._drain_scheduled = False
        self._loop_initialised = False  # thread_init has run on the event loop's thread
        self._thread: threading.Thread | None = None
        if not inline:
            self._thread = threading.Thread(target=self._run, name=f"scorer-{name}", daemon=True)
            self._thread.start()

    # --- called on the event loop -------------------------------------------------------

    def submit(self, records: Sequence[Any], *, bulk: bool = False) -> asyncio.Future[Outputs]:
        """Queue a request's rows. ``bulk``: one slice of a large request, scored only when no
        request is waiting, so a large request delays the others by one slice at most."""
        if self.closed:
            raise BatcherClosed(self.name)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        job = _Job(records, future, loop, None, bulk)
        if bulk:
            if self.inline:
                self._pending_bulk.append(job)
                self._schedule_drain(loop)
            else:
                self._queue.put(job)
        elif self.inline or (self.direct_below and not self.thread_only_calls):
            self._enqueue_inline(job, loop)
        else:
            self._queue.put(job)
        return future

    def submit_callback(self, records: Sequence[Any], callback: Callable[[Outputs | None, Any], None]) -> bool:
        """Queue a job whose result goes to ``callback(outputs, error)`` on the scoring thread."""
        if self.closed:
            return False
        job = _Job(records, None, None, callback)
        if self.inline:
            self._enqueue_inline(job, asyncio.get_running_loop())
        else:
            self._queue.put(job)
        return True

    def pending(self) -> int:
        """Requests waiting to be scored (not counting a batch being scored, nor slices of large ones)."""
        return len(self._pending) + (0 if self.inline else self._queue.qsize() + len(self._regular))

    def queue_depth(self) -> int:
        """Everything waiting: requests and slices of large requests."""
        return self.pending() + len(self._bulk) + len(self._pending_bulk)

    def close(self) -> None:
        """Stop after the jobs already queued (in-flight requests finish on this version)."""
        if not self.closed:
            self.closed = True
            if not self.inline:
                self._queue.put(_STOP)

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is None:
            return not self._pending and not self._pending_bulk
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- inline mode (on the event loop) -----------------------------------------------------

    def _enqueue_inline(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        self._pending.append(job)
        self._schedule_drain(loop)

    def _schedule_drain(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._drain_scheduled:
            self._drain_scheduled = True
            loop.call_soon(self._drain, loop)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Score what queued up since the last drain; the rest waits for the next loop turn."""
        self._drain_scheduled = False
        pending = self._pending
        if not self.inline:
            self._direct(pending)
            return
        if self._thread_init is not None:
            init, self._thread_init = self._thread_init, None
            init()
        rows = 0
        taken = 0
        for job in pending:
            if taken and rows + len(job.records) > self.max_batch_rows:
                break
            rows += len(job.records)
            taken += 1
        if taken:
            batch = pending[:taken]
            del pending[:taken]
        else:  # no request waiting: one slice of a large one
            batch = [self._pending_bulk.popleft()]
            rows = len(batch[0].records)
        if pending or self._pending_bulk:  # I/O runs before the next drain
            self._drain_scheduled = True
            loop.call_soon(self._drain, loop)
        self._score(batch, rows, on_loop=True)

    def _direct(self, pending: list[_Job]) -> None:
        """Thread mode: score a lone request here if the scoring thread is idle, else queue."""
        if self.closed:  # retired meanwhile: the thread may be gone, finish them here
            jobs = pending[:]
            pending.clear()
            with self._scoring:
                self._init_loop_thread()
                for job in jobs:
                    self._score([job], len(job.records), on_loop=True)
            return
        if len(pending) == 1 and self._queue.empty() and not self._regular and self._scoring.acquire(blocking=False):
            job = pending.pop()
            try:
                self._init_loop_thread()
                self._score([job], len(job.records), on_loop=True)
            finally:
                self._scoring.release()
            return
        put = self._queue.put
        for job in pending:
            put(job)
        pending.clear()

    def _init_loop_thread(self) -> None:
        if not self._loop_initialised:
            self._loop_initialised = True
            if self._thread_init is not None:
                self._thread_init()

    # --- scoring thread -------------------------------------------------------------------

    def score_now(self, records: Sequence[Any]) -> Outputs:
        """Score synchronously on the calling thread (warm-up, tests)."""
        with self._scoring:
            started = time.perf_counter()
            outputs = self._outputs(self._predict(records), len(records))
            self._timed(time.perf_counter() - started)
        return outputs

    def _timed(self, seconds: float) -> None:
        if seconds >= self.direct_below:
            if self._calls_since_slow < SLOW_CALL_MEMORY:
                self.thread_only_calls = SLOW_CALL_MEMORY
            self._calls_since_slow = 0
            return
        self._calls_since_slow += 1
        if self.thread_only_calls:
            self.thread_only_calls -= 1

    def _run(self) -> None:
        if self._thread_init is not None:
            try:
                self._thread_init()
            except Exception:  # pragma: no cover - best effort tuning
                log.exception("scorer thread init failed for %s", self.name)
        get, get_nowait, limit = self._queue.get, self._queue.get_nowait, self.max_batch_rows
        regular, bulk = self._regular, self._bulk
        stopping = False
        while True:
            if not regular and not bulk:
                if stopping:
                    return
                stopping = self._sort(get(), stopping)
            while True:  # whatever else is waiting, without blocking
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
                stopping = self._sort(item, stopping)
            if regular:  # requests first, merged up to the row limit
                job = regular.popleft()
                batch = [job]
                rows = len(job.records)
                while regular and rows + len(regular[0].records) <= limit:
                    job = regular.popleft()
                    batch.append(job)
                    rows += len(job.records)
            elif bulk:  # then one slice of a large request
                job = bulk.popleft()
                batch = [job]
                rows = len(job.records)
            else:
                continue
            self._score(batch, rows, on_loop=False)

    def _sort(self, item: Any, stopping: bool) -> bool:
        """File a queued item into its lane; True once the stop marker was seen."""
        if item is _STOP:
            return True
        (self._bulk if item.bulk else self._regular).append(item)
        return stopping

    def _score(self, batch: list[_Job], rows: int, *, on_loop: bool) -> None:
        """Score and answer. ``on_loop``: called on the event loop, whose caller holds the lock
        where one is needed (the direct path), and can answer the futures itself."""
        if on_loop:
            done = self._compute(batch, rows)
        else:
            # The lock covers the scorer call only: released before the answers go out, so a
            # client answered now finds the thread idle when its next request arrives.
            with self._scoring:
                done = self._compute(batch, rows)
        for jobs, results, error in done:
            self._finish(jobs, results, error, on_loop)

    def _compute(self, batch: list[_Job], rows: int) -> list[tuple[list[_Job], list[Any], BaseException | None]]:
        """Score one batch: [(jobs, their outputs, error)], the request that breaks the model isolated."""
        records = batch[0].records if len(batch) == 1 else [record for job in batch for record in job.records]
        try:
            started = time.perf_counter()
            outputs = self._outputs(self._predict(records), rows)
            self._timed(time.perf_counter() - started)
        except Exception as exc:
            if len(batch) > 1:  # isolate the request that breaks the model
                return [part for job in batch for part in self._compute([job], len(job.records))]
            log.exception("model %s failed to score a batch of %d rows", self.name, rows)
            return [(batch, [None], exc)]
        if self.on_batch is not None:
            self.on_batch(rows)
        if len(batch) == 1:
            return [(batch, [outputs], None)]
        names, kinds, columns = outputs.names, outputs.kinds, outputs.columns
        results = []
        start = 0
        for job in batch:
            end = start + len(job.records)
            results.append(Outputs(names, kinds, [column[start:end] for column in columns]))
            start = end
        return [(batch, results, None)]

    def _finish(self, batch: list[_Job], results: list[Any], error: BaseException | None, on_loop: bool) -> None:
        by_loop: dict[Any, list[tuple[Any, Any, BaseException | None]]] = {}
        for i, job in enumerate(batch):
            result = results[i] if error is None else None
            if job.callback is not None:
                try:
                    job.callback(result, error)
                except Exception:  # pragma: no cover - a callback must not kill the thread
                    log.exception("batch callback failed for %s", self.name)
                continue
            by_loop.setdefault(job.loop, []).append((job.future, result, error))
        for loop, items in by_loop.items():
            if on_loop:
                _deliver(items)
                continue
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(_deliver, items)

    @staticmethod
    def _outputs(predictions: dict[str, Any], rows: int) -> Outputs:
        names = []
        kinds = []
        columns = []
        for name, values in predictions.items():
            array = np.asarray(values)
            if len(array) != rows:
                raise RuntimeError(f"the model returned {len(array)} rows for {rows} input rows")
            names.append(name)
            kinds.append(f"{array.dtype.kind}{array.dtype.itemsize}")
            columns.append(array.tolist())
        return Outputs(names, kinds, columns)
