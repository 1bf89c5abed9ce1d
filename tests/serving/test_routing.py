"""Traffic policies, the prediction log, hot swap under load and graceful drain."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from scoregate.errors import InvalidInputError
from scoregate.flavors.base import Scorer
from scoregate.serving import InMemorySource, TrafficPolicy, create_app, read_predictions
from scoregate.serving.policy import CanarySplit, choose_canary
from tests.serving.conftest import FEATURES, sample_rows, serve

pytestmark = pytest.mark.anyio


def test_policy_validation() -> None:
    policy = TrafficPolicy.parse(
        {"canary": {"version": 2, "percent": 10, "sticky_field": "id"}, "shadow": {"version": 3}}
    )
    assert policy.versions() == {2, 3}
    for bad in (
        {"canary": {"version": 2, "percent": 150}},
        {"canary": {"percent": 10}},
        {"mirror": {}},
        {"shadow": {"version": 0}},
    ):
        with pytest.raises(InvalidInputError) as info:
            TrafficPolicy.parse(bad)
        assert info.value.details


def test_canary_ratio_and_stickiness() -> None:
    split = CanarySplit(version=2, percent=10)
    hits = sum(choose_canary(split, {}) for _ in range(20_000))
    assert 1700 < hits < 2300
    sticky = CanarySplit(version=2, percent=30, sticky_field="customer")
    decisions = {k: choose_canary(sticky, {"customer": k}) for k in range(5000)}
    assert all(choose_canary(sticky, {"customer": k}) == d for k, d in list(decisions.items())[:500])
    assert 0.27 < sum(decisions.values()) / 5000 < 0.33


async def test_canary_split_over_http(source: InMemorySource) -> None:
    source.set_traffic_policy("credit", "production", {"canary": {"version": 3, "percent": 25}})
    rows = sample_rows(1, seed=0)
    async with serve(source) as s:
        responses = await asyncio.gather(
            *[s.client.post("/models/credit@production/predict", json={"rows": rows}) for _ in range(800)]
        )
    versions = Counter(r.json()["version"] for r in responses)
    assert set(versions) == {1, 3}
    assert 0.19 < versions[3] / 800 < 0.31
    assert all(r.headers["x-model-version"] == f"credit@{r.json()['version']}" for r in responses)


async def test_sticky_canary_over_http(source: InMemorySource) -> None:
    source.set_traffic_policy(
        "credit", "production", {"canary": {"version": 2, "percent": 50, "sticky_field": "segment"}}
    )
    async with serve(source) as s:
        seen: dict[str, set[int]] = {}
        for row in sample_rows(60, seed=0):
            r = await s.client.post("/models/credit@production/predict", json={"rows": [row]})
            seen.setdefault(row["segment"], set()).add(r.json()["version"])
    assert all(len(v) == 1 for v in seen.values())  # one version per key


async def test_shadow_is_logged_off_the_response_path(source: InMemorySource, tmp_path: Path) -> None:
    source.set_traffic_policy("credit", "production", {"shadow": {"version": 2}})
    rows = sample_rows(5, seed=0)
    async with serve(source, predictions_dir=tmp_path / "predictions", log_flush_interval=60) as s:
        ids = []
        for i, row in enumerate(rows):
            r = await s.client.post(
                "/models/credit@production/predict", json={"rows": [row]}, headers={"x-request-id": f"r{i}"}
            )
            assert r.json()["version"] == 1
            ids.append(f"r{i}")
    log = read_predictions(tmp_path)
    primary = log[~log["shadow"]]
    shadow = log[log["shadow"]]
    assert sorted(primary["client_request_id"]) == ids and set(primary["version"]) == {1}
    assert sorted(shadow["client_request_id"]) == ids and set(shadow["version"]) == {2}
    assert set(shadow["request_id"]) == set(primary["request_id"])  # the shadow logs the decision's server id
    _info, challenger = source.load("credit", 2)
    want = challenger.predict(pd.DataFrame(rows)[FEATURES]).to_dict(orient="records")
    got = shadow.sort_values("client_request_id")["outputs"].tolist()
    for g, w in zip(got, want, strict=True):
        assert g["prediction"] == w["prediction"]
        assert g["proba_1"] == pytest.approx(w["proba_1"], rel=1e-12)


async def test_prediction_log_contents_and_flush(source: InMemorySource, tmp_path: Path) -> None:
    rows = sample_rows(3, seed=0)
    async with serve(source, predictions_dir=tmp_path / "predictions", log_flush_interval=0.1) as s:
        r = await s.client.post(
            "/models/credit@production/predict", json={"rows": rows}, headers={"x-request-id": "batch-1"}
        )
        assert r.status_code == 200
        await s.client.post("/models/credit@challenger/predict", json={"rows": rows[:1]})
        await s.client.post("/models/credit@production/predict", json={"rows": [{"bad": 1}]})  # 422: not logged
        deadline = time.monotonic() + 5
        while len(read_predictions(tmp_path)) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        during = read_predictions(tmp_path, model="credit", version=1)
        assert len(during) == 3  # written by the timer, before shutdown
    files = list((tmp_path / "predictions").rglob("*.parquet"))
    assert files and all(p.parent.name.startswith("hour=") for p in files)
    assert {p.parent.parent.name for p in files} == {"version=1", "version=2"}
    assert all(p.parent.parent.parent.name == "model=credit" for p in files)
    log = read_predictions(tmp_path, model="credit", version=1)
    assert list(log["request_id"]) == [r.json()["request_id"]] * 3 and list(log["row"]) == [0, 1, 2]
    assert list(log["client_request_id"]) == ["batch-1"] * 3
    assert log["inputs"].tolist() == rows
    assert log["outputs"].tolist() == r.json()["predictions"]
    assert (log["latency_ms"] > 0).all() and not log["shadow"].any()
    assert str(log["timestamp"].dtype).startswith("datetime64") and log["hour"].str.len().eq(13).all()
    assert len(read_predictions(tmp_path, version=2)) == 1
    assert read_predictions(tmp_path / "nowhere").empty


async def test_log_flushed_on_shutdown(source: InMemorySource, tmp_path: Path) -> None:
    async with serve(source, predictions_dir=tmp_path / "predictions", log_flush_interval=3600) as s:
        await asyncio.gather(
            *[s.client.post("/models/credit@production/predict", json={"rows": [row]}) for row in sample_rows(50, 0)]
        )
        assert read_predictions(tmp_path).empty  # not yet: the interval is an hour
    assert len(read_predictions(tmp_path)) == 50


async def test_hot_swap_under_load_has_no_errors(source: InMemorySource) -> None:
    rows = sample_rows(4, seed=0)
    statuses: Counter[int] = Counter()
    versions: list[int] = []
    stop = asyncio.Event()
    async with serve(source, poll_interval=0.05) as s:

        async def client() -> None:
            while not stop.is_set():
                r = await s.client.post("/models/credit@production/predict", json={"rows": rows})
                statuses[r.status_code] += 1
                if r.status_code == 200:
                    versions.append(r.json()["version"])
                    assert r.headers["x-model-version"] == f"credit@{r.json()['version']}"

        tasks = [asyncio.create_task(client()) for _ in range(16)]
        for version in (2, 3, 1, 3):
            await asyncio.sleep(0.3)
            await asyncio.to_thread(source.set_alias, "credit", "production", version)
            deadline = time.monotonic() + 5
            while s.app.state.table.models["credit"].aliases["production"].primary.version != version:
                assert time.monotonic() < deadline, "the swap did not happen"
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*tasks)
        final = (await s.client.post("/models/credit@production/predict", json={"rows": rows})).json()
        state = s.app.state
        assert set(state.table.served) == {("credit", 2), ("credit", 3)}
        retired = [r for r in state._retired if r.version == 1]
        assert retired and all(r.batcher.closed for r in retired)
        assert all(r.batcher.join(5) for r in retired)  # its thread finished its queue and exited
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) > 200
    assert {1, 2, 3} <= set(versions)
    assert final["version"] == 3


class SlowScorer(Scorer):
    """A real sklearn scorer that takes its time (to have requests in flight)."""

    flavor = "sklearn"

    def __init__(self, inner: Scorer, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.rows_taken = 0  # rows that reached the model (scored or being scored)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.rows_taken += len(frame)
        time.sleep(self.delay)
        return self.inner.predict(frame)


class BlockingScorer(Scorer):
    """Slow on every call (so measured slow); a row with ``income == MARK`` blocks until released."""

    flavor = "sklearn"
    MARK = 123.456

    def __init__(self, inner: Scorer) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        time.sleep(0.01)
        if (frame["income"] == self.MARK).any():
            self.entered.set()
            self.release.wait(10)
        return self.inner.predict(frame)


async def test_a_slow_model_does_not_stall_the_others(source: InMemorySource, schema: Any) -> None:
    _info, inner = source.load("credit", 1)
    blocking = BlockingScorer(inner)
    source.add("slow", 1, blocking, schema)
    source.set_alias("slow", "production", 1)
    rows = sample_rows(400, seed=0)[:6]  # the training rows: within the schema's ranges
    async with serve(source) as s:
        held = {**rows[0], "income": BlockingScorer.MARK}
        slow = asyncio.ensure_future(s.client.post("/models/slow@production/predict", json={"rows": [held]}))
        deadline = time.monotonic() + 10
        while not blocking.entered.is_set():
            assert time.monotonic() < deadline, "the slow request never reached its model"
            await asyncio.sleep(0.01)
        try:
            fast = [await s.client.post("/models/credit@production/predict", json={"rows": [r]}) for r in rows[1:]]
            assert [r.status_code for r in fast] == [200] * 5
            assert not slow.done(), "the fast model was answered only after the slow one"
        finally:
            blocking.release.set()
        assert (await slow).status_code == 200


async def test_an_overloaded_version_sheds_new_requests_with_503(source: InMemorySource, schema: Any) -> None:
    _info, inner = source.load("credit", 1)
    blocking = BlockingScorer(inner)
    source.add("slow", 1, blocking, schema)
    source.set_alias("slow", "production", 1)
    rows = sample_rows(400, seed=0)[:5]
    async with serve(source, max_queued_requests=2) as s:
        held = {**rows[0], "income": BlockingScorer.MARK}
        first = asyncio.ensure_future(s.client.post("/models/slow@production/predict", json={"rows": [held]}))
        deadline = time.monotonic() + 10
        while not blocking.entered.is_set():  # the first request is being scored: nothing queued yet
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        try:
            waiting = [
                asyncio.ensure_future(s.client.post("/models/slow@production/predict", json={"rows": [r]}))
                for r in rows[1:3]
            ]
            while app_pending(s.app, "slow") < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            shed = await s.client.post("/v2/models/slow/infer", json=v2_body(rows[3]))
            assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
            assert "slow@1 has 2 requests waiting (limit 2)" in shed.json()["error"]
            assert shed.json()["code"] == "overloaded"
            other = await s.client.post("/models/credit@production/predict", json={"rows": [rows[4]]})
            assert other.status_code == 200  # the limit is per model version
        finally:
            blocking.release.set()
        assert [(await f).status_code for f in [first, *waiting]] == [200, 200, 200]


def app_pending(app: Any, name: str) -> int:
    return app.state.table.served[(name, 1)].batcher.pending()


def v2_body(row: dict[str, Any]) -> dict[str, Any]:
    inputs = []
    for key, value in row.items():
        datatype = "BYTES" if isinstance(value, str) else ("INT64" if isinstance(value, int) else "FP64")
        inputs.append({"name": key, "shape": [1], "datatype": datatype, "data": [value]})
    return {"inputs": inputs}


def test_graceful_drain_on_shutdown(source: InMemorySource, schema: Any, tmp_path: Path, threaded: Any) -> None:
    _info, inner = source.load("credit", 1)
    slow = InMemorySource()
    scorer = SlowScorer(inner, 0.4)
    slow.add("slow", 1, scorer, schema)
    slow.set_alias("slow", "production", 1)
    app = create_app(slow, predictions_dir=tmp_path / "predictions", log_flush_interval=3600, max_batch_rows=4)
    server = threaded(app)
    rows = sample_rows(1, seed=0)

    def call(i: int) -> int:
        with httpx.Client(timeout=30) as client:
            return client.post(f"{server.url}/models/slow@production/predict", json={"rows": rows}).status_code

    warmed = scorer.rows_taken  # warm-up rows, scored when the server started
    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(call, i) for i in range(12)]
        batcher = app.state.table.served[("slow", 1)].batcher
        deadline = time.monotonic() + 20
        # Stop only once all 12 requests reached the server: scored, being scored or queued.
        while scorer.rows_taken - warmed + batcher.pending() < 12:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        results = [f.result() for f in futures]
        stopper.join(30)
    assert results == [200] * 12
    assert not server.thread.is_alive()
    assert len(read_predictions(tmp_path)) == 12
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/v2/health/live", timeout=2)
