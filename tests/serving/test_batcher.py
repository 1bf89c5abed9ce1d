"""The batcher's direct path: lone requests to a fast, idle model are scored on the event
loop; everything else goes through the scoring thread, and the scorer is never called
from two threads at once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from scoregate.flavors.base import Scorer
from scoregate.schema import infer_schema
from scoregate.serving.batcher import SLOW_CALL_MEMORY, Batcher

pytestmark = pytest.mark.anyio

SCHEMA = infer_schema(pd.DataFrame({"a": [0.0, 1.0], "b": [0.0, 1.0]}))


class Recording(Scorer):
    """Adds the two features; records which thread called it and how many calls overlapped."""

    flavor = "python"

    def __init__(self, delay: float = 0.0, *, takes_matrix: bool = False) -> None:
        self.delay = delay
        self.takes_matrix = takes_matrix
        self.threads: list[str] = []
        self.sizes: list[int] = []
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    def _call(self, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            self.threads.append(threading.current_thread().name)
            self.sizes.append(len(a))
            if self.delay:
                time.sleep(self.delay)
            return {"total": np.asarray(a, dtype=float) + np.asarray(b, dtype=float)}
        finally:
            with self._lock:
                self.active -= 1

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(self.predict_columns(frame))

    def predict_columns(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        return self._call(frame["a"].to_numpy(), frame["b"].to_numpy())

    def predict_matrix(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        return self._call(matrix[:, 0], matrix[:, 1])


def make(scorer: Recording, **kwargs: Any) -> Batcher:
    from scoregate.schema import RecordValidator

    batcher = Batcher(scorer, RecordValidator(SCHEMA), name="m@1", **kwargs)
    for _ in range(3):  # the warm-up calls the server makes: they measure the model
        batcher.score_now([{"a": 0.0, "b": 0.0}])
    scorer.threads.clear()
    scorer.sizes.clear()
    return batcher


def close(batcher: Batcher) -> None:
    batcher.close()
    assert batcher.join(10)


async def test_lone_requests_to_a_fast_model_are_scored_on_the_loop() -> None:
    scorer = Recording()
    batcher = make(scorer, direct_below=0.05)
    loop_thread = threading.current_thread().name
    try:
        for i in range(20):
            outputs = await batcher.submit([{"a": float(i), "b": 1.0}])
            assert outputs.columns == [[i + 1.0]]
    finally:
        close(batcher)
    assert scorer.threads == [loop_thread] * 20


async def test_direct_path_off_or_slow_model_uses_the_scoring_thread() -> None:
    for scorer, direct_below in ((Recording(), 0.0), (Recording(delay=0.02), 0.002)):
        batcher = make(scorer, direct_below=direct_below)
        try:
            for i in range(5):
                assert (await batcher.submit([{"a": float(i), "b": 0.0}])).columns == [[float(i)]]
        finally:
            close(batcher)
        assert scorer.threads == ["scorer-m@1"] * 5, (direct_below, scorer.delay)


@pytest.mark.parametrize("takes_matrix", [False, True])
async def test_under_load_requests_batch_on_the_thread_and_never_overlap(takes_matrix: bool) -> None:
    scorer = Recording(delay=0.002, takes_matrix=takes_matrix)
    batcher = make(scorer, direct_below=0.05, max_batch_rows=16)
    rows = [{"a": float(i), "b": float(2 * i)} for i in range(200)]
    futures = []
    for start in range(0, 200, 20):
        futures += [batcher.submit([row]) for row in rows[start : start + 10]]  # a burst in one loop turn
        for row in rows[start + 10 : start + 20]:  # then lone requests while the thread is busy
            await asyncio.sleep(0)
            futures.append(batcher.submit([row]))
    try:
        answers = await asyncio.wait_for(asyncio.gather(*futures), 30)
    finally:
        close(batcher)
    assert [a.columns[0][0] for a in answers] == [3.0 * i for i in range(200)]
    assert scorer.most_active == 1, "the loop and the scoring thread called the scorer at once"
    assert "scorer-m@1" in scorer.threads, "concurrent requests should queue for the scoring thread"
    assert max(scorer.sizes) > 1, "queued requests should be merged into batches"
    assert max(scorer.sizes) <= 16


async def test_requests_waiting_when_the_batcher_is_retired_are_still_answered() -> None:
    scorer = Recording()
    batcher = make(scorer, direct_below=0.05)
    futures = [batcher.submit([{"a": float(i), "b": 2.0}]) for i in range(3)]  # wait for the end of this turn
    batcher.close()  # a hot swap retires the version before the turn ends: its thread stops
    answers = await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert [a.columns for a in answers] == [[[2.0]], [[3.0]], [[4.0]]]
    assert batcher.join(10)


async def test_a_model_that_turns_slow_leaves_the_loop_for_its_next_calls() -> None:
    scorer = Recording()
    batcher = make(scorer, direct_below=0.25)  # far above a fast call, even on a loaded machine
    loop_thread = threading.current_thread().name
    try:
        assert (await batcher.submit([{"a": 1.0, "b": 0.0}])).columns == [[1.0]]
        scorer.delay = 0.3  # one slow call: the machine, maybe; stays on the loop
        await batcher.submit([{"a": 2.0, "b": 0.0}])
        scorer.delay = 0.0
        for _ in range(3):
            await batcher.submit([{"a": 3.0, "b": 0.0}])
        scorer.delay = 0.3  # a second within 32 calls: the model (e.g. its dependency slowed down)
        await batcher.submit([{"a": 4.0, "b": 0.0}])
        scorer.delay = 0.0
        for i in range(SLOW_CALL_MEMORY + 3):
            await batcher.submit([{"a": float(i), "b": 0.0}])
    finally:
        close(batcher)
    assert scorer.threads[:6] == [loop_thread] * 6
    assert scorer.threads[6 : 6 + SLOW_CALL_MEMORY] == ["scorer-m@1"] * SLOW_CALL_MEMORY
    assert scorer.threads[6 + SLOW_CALL_MEMORY :] == [loop_thread] * 3  # fast again for 32 calls
