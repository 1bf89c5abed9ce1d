"""No decision lost: the journal before the response, compaction that survives a crash at any
point, kill -9 of a worker under load, and files only their owner can read."""

from __future__ import annotations

import os
import signal
import stat
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from scoregate.config import Settings
from scoregate.registry import Registry
from scoregate.registry import journal as journal_module
from scoregate.registry.journal import read_segment
from scoregate.registry.predictions import PredictionLog
from scoregate.serving import InMemorySource, read_predictions
from scoregate.serving.batcher import Outputs
from tests.serving.conftest import free_port, register_credit, sample_rows, serve, start_server, stop_server, wait_for

pytestmark = pytest.mark.anyio

GOOD = sample_rows(400, seed=0)[0]


def outputs(p: float) -> Outputs:
    return Outputs(["prediction", "proba_1"], ["i8", "f8"], [[int(p > 0.5)], [p]])


def die(log: PredictionLog) -> None:
    """What kill -9 leaves: the journal on disk, its lock released by the kernel, nothing flushed."""
    assert log._journal is not None
    os.close(log._journal._lock_fd)


def logged_ids(home: Path) -> list[str]:
    return sorted(read_predictions(home)["request_id"])


@pytest.mark.parametrize("crash", ["between the Parquet files", "after the Parquet files, before the journal goes"])
def test_a_compaction_cut_short_is_redone_without_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash: str
) -> None:
    root = tmp_path / "predictions"
    log = PredictionLog(root, flush_interval=3600)
    for i in range(10):
        log.append("m", 1 + i % 2, f"r{i}", [{"x": float(i)}], outputs(i / 10), 1.0)
    log.commit()
    real = PredictionLog._write_parquet

    def dies(self: PredictionLog, buffers: Any, stem: str) -> int:
        if crash.startswith("between"):
            buffers = dict(list(buffers.items())[:1])  # one version's file is written
        real(self, buffers, stem)
        raise OSError("the process died here")

    monkeypatch.setattr(PredictionLog, "_write_parquet", dies)
    with pytest.raises(OSError):
        log.flush()
    die(log)
    monkeypatch.undo()
    assert len(read_predictions(tmp_path)) == (5 if crash.startswith("between") else 10)
    survivor = PredictionLog(root, flush_interval=3600)
    assert survivor.recover() == 10
    assert logged_ids(tmp_path) == sorted(f"r{i}" for i in range(10))  # each once
    assert not list((root / ".journal").glob("*.journal"))
    survivor.close()


def test_a_record_cut_short_by_a_crash_ends_the_replay(tmp_path: Path) -> None:
    root = tmp_path / "predictions"
    log = PredictionLog(root, flush_interval=3600)
    for i in range(3):
        log.append("m", 1, f"r{i}", [{"x": float(i)}], outputs(0.5), 1.0)
    log.commit()
    segment = log._journal.segment  # type: ignore[union-attr]
    whole = segment.offset
    log.append("m", 1, "torn", [{"x": 9.0}], outputs(0.5), 1.0)
    log.commit()
    with segment.path.open("r+b") as handle:  # the crash came in the middle of the last write
        handle.seek(whole + (segment.offset - whole) // 2)
        handle.write(bytes(segment.offset - handle.tell()))
    entries, damaged = read_segment(segment.path)
    assert [e.request_id for e in entries] == ["r0", "r1", "r2"] and damaged > 0
    die(log)
    assert PredictionLog(root).recover() == 3
    assert logged_ids(tmp_path) == ["r0", "r1", "r2"]


def test_a_recycled_segment_replays_only_its_own_records(tmp_path: Path) -> None:
    root = tmp_path / "predictions"
    log = PredictionLog(root, flush_interval=3600)
    for i in range(3):
        log.append("m", 1, f"first-{i}", [{"x": float(i)}], outputs(0.5), 1.0)
    log.commit()
    first = log._journal.segment.path  # type: ignore[union-attr]
    assert log.flush() == 3  # compacted: the segment becomes the spare, under the next number
    log.append("m", 1, "second", [{"x": 1.0}], outputs(0.5), 1.0)
    log.commit()
    assert log.flush() == 1  # the second segment is retired; the spare (the first file) is reused
    log.append("m", 1, "third", [{"x": 2.0}], outputs(0.5), 1.0)
    log.commit()
    current = log._journal.segment.path  # type: ignore[union-attr]
    assert current != first and current.stat().st_size >= 8 << 20  # preallocated
    assert [e.request_id for e in read_segment(current)[0]] == ["third"]  # not first-0..2
    die(log)
    assert PredictionLog(root).recover() == 1
    assert logged_ids(tmp_path) == ["first-0", "first-1", "first-2", "second", "third"]


@pytest.mark.parametrize("durability", ["sync", "os", "off"])
async def test_a_decision_is_in_the_journal_before_its_response(
    source: InMemorySource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str
) -> None:
    syncs: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(journal_module.os, "fdatasync", lambda fd: (syncs.append(fd), real(fd))[1])
    root = tmp_path / "predictions"
    async with serve(source, predictions_dir=root, log_durability=durability, log_flush_interval=3600) as s:
        answers = []
        for _ in range(3):
            r = await s.client.post("/models/credit@1/predict", json={"rows": [GOOD]})
            assert r.status_code == 200
            answers.append(r.headers["x-request-id"])
            journaled = [e.request_id for path in (root / ".journal").glob("*.journal") for e in read_segment(path)[0]]
            if durability == "off":
                assert journaled == []  # in memory only, until the next flush
            else:
                assert journaled == answers  # on disk before the client had its answer
        assert len(syncs) == (3 if durability == "sync" else 0)  # `os`: synced at each flush only
    assert logged_ids(tmp_path) == sorted(answers)
    assert not list((root / ".journal").glob("*.journal"))  # compacted at shutdown


def test_a_dead_workers_journal_is_compacted_by_another(tmp_path: Path) -> None:
    root = tmp_path / "predictions"
    dead = PredictionLog(root, flush_interval=3600)
    dead.append("m", 1, "from-the-dead", [{"x": 1.0}], outputs(0.2), 1.0)
    dead.commit()
    alive = PredictionLog(root, flush_interval=3600)
    alive.append("m", 1, "alive", [{"x": 2.0}], outputs(0.7), 1.0)
    assert alive.recover() == 0  # its owner still holds the lock
    die(dead)
    assert alive.recover() == 1
    alive.close()
    assert logged_ids(tmp_path) == ["alive", "from-the-dead"]
    assert not list((root / ".journal").iterdir())


def _registered(tmp_path: Path, artifacts: dict[str, Path]) -> Settings:
    registry = register_credit(tmp_path / "home", artifacts)
    registry.close()
    return registry.settings


def _workers(pid: int) -> list[Any]:
    import psutil

    children = psutil.Process(pid).children()
    return [c for c in children if "resource_tracker" not in " ".join(c.cmdline())]


@pytest.mark.slow
def test_kill_9_of_a_worker_under_load_loses_no_answered_decision(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    settings = _registered(tmp_path, artifacts)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(settings.home, port, workers=2)
    answered: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        # a connection per request: the kernel spreads them over the workers, the new one included
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            while not stop.is_set():
                try:
                    r = http.post(f"{url}/models/credit@production/predict", json={"rows": [GOOD]})
                except httpx.TransportError:
                    continue  # the killed worker's connections; the next request reconnects
                if r.status_code == 200:
                    with lock:
                        answered.add(r.headers["x-request-id"])

    def workers_seen() -> int:
        with lock:
            return len({i[:16] for i in answered})  # a server id starts with its worker's prefix

    threads = [threading.Thread(target=client, daemon=True) for _ in range(16)]
    try:
        wait_for(lambda: httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200, what="readiness")
        wait_for(lambda: len(_workers(proc.pid)) == 2, what="two workers")
        for t in threads:
            t.start()
        wait_for(lambda: workers_seen() == 2 and len(answered) > 400, what="load on both workers")
        victim = _workers(proc.pid)[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        before = len(answered)
        wait_for(lambda: len(answered) > before + 400 and workers_seen() >= 3, what="load on the new worker")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        assert stop_server(proc) == 0
    logged = set(read_predictions(settings)["request_id"])
    lost = answered - logged
    assert not lost, f"{len(lost)} of {len(answered)} answered decisions are not in the prediction log"


async def test_what_the_registry_and_the_server_write_is_private(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    from scoregate.serving import RegistrySource, create_app
    from tests.serving.conftest import Served

    settings = _registered(tmp_path, artifacts)
    registry = Registry.open(settings)
    try:
        app = create_app(RegistrySource(registry), predictions_dir=settings.predictions_dir, log_flush_interval=3600)
        async with Served(app) as s:
            assert (await s.client.post("/models/credit/predict", json={"rows": [GOOD]})).status_code == 200
            journal = list((settings.predictions_dir / ".journal").iterdir())
            assert journal  # the live journal and its lock
            exposed = _exposed(settings.home)
        exposed += _exposed(settings.home)  # and the Parquet written at shutdown
    finally:
        registry.close()
    assert (settings.home / "registry.db").exists() and list(settings.predictions_dir.rglob("*.parquet"))
    assert not exposed, exposed


def _exposed(home: Path) -> list[str]:
    out = []
    for path in [home, *home.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            out.append(f"{path.relative_to(home)} {oct(mode)}")
    return out
