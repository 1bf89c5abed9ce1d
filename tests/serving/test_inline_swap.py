"""Hot swaps in ``--scoring inline`` mode: each swap retires the old versions without an
error, and the swap count, the last refresh error and prediction-log write errors are metrics."""

from __future__ import annotations

import asyncio

import pytest

from scoregate.serving import InMemorySource
from tests.serving.conftest import sample_rows, serve

pytestmark = pytest.mark.anyio


async def _until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_repeated_inline_swaps_raise_nothing_and_are_counted(source: InMemorySource) -> None:
    rows = sample_rows(3)
    async with serve(source, scoring="inline") as s:
        state = s.app.state
        for version in (2, 3, 1):
            source.set_alias("credit", "production", version)
            await _until(lambda v=version: state.table.models["credit"].aliases["production"].primary.version == v)
            answer = await s.client.post("/models/credit@production/predict", json={"rows": rows})
            assert answer.json()["version"] == version
        await asyncio.sleep(0.2)  # a few more polls, each retiring what the last swap replaced
        assert state.last_error is None
        assert state.swap_count == 3
        metrics = (await s.client.get("/metrics")).text
    assert "scoregate_model_swaps_total 3.0" in metrics
    assert "scoregate_refresh_errors_total 0.0" in metrics
    assert "scoregate_last_refresh_error 0.0" in metrics


async def test_a_registry_outage_is_a_metric_and_clears_when_it_answers_again(
    source: InMemorySource, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scoregate.errors import StoreUnavailableError

    revision = source.revision

    def down() -> str:
        raise StoreUnavailableError("metadata database sqlite:///x failed: disk I/O error")

    async with serve(source, scoring="inline") as s:
        state = s.app.state
        monkeypatch.setattr(source, "revision", down)
        await _until(lambda: state.last_error is not None)
        assert "disk I/O error" in state.last_error
        metrics = (await s.client.get("/metrics")).text
        assert "scoregate_last_refresh_error 1.0" in metrics
        assert "scoregate_refresh_errors_total 0.0" not in metrics
        monkeypatch.setattr(source, "revision", revision)
        await _until(lambda: state.last_error is None)
        assert "scoregate_last_refresh_error 0.0" in (await s.client.get("/metrics")).text
        answer = await s.client.post("/models/credit@production/predict", json={"rows": sample_rows(1)})
        assert answer.status_code == 200
