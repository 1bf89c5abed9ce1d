"""The web UI's server-side times and its static payload.

- Inventory: ``--models`` models x ``--versions`` versions (default 1,000 x 10) on SQLite;
  the page rendered through the ASGI app (TestClient, in process: the server's time,
  without a network), against the anchor of the same run, ``Governance.inventory()`` alone.
- Audit log: ``--events`` events (default 1,000,000, appended as ``benchmarks/audit.py``
  does); pages at random depths and filtered pages, p50/p95, against the anchor of the same
  run, the bare keyset query for a page.
- Static payload: every file under ``ui/static``, gzipped.

Versions are inserted through the registry's own insert (``Registry._insert_version``:
the transaction, the audit event), copying the fields of one real registration, so the
set-up does not load the model 10,000 times. Targets: inventory at most 200 ms, audit
pages p95 under 200 ms, static payload at most 150 KB gzipped.
Run: ``.venv/bin/python benchmarks/ui.py [--models N --versions N --events N]``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from scoregate.config import Settings
from scoregate.governance.access import Permission
from scoregate.governance.audit import EventDraft, append_events
from scoregate.governance.service import Governance
from scoregate.registry import Registry
from scoregate.registry.database import WRITE
from scoregate.registry.tables import AuditEventRow, ModelRow, TagRow, VersionRow, utcnow
from scoregate.ui import create_ui


def timed(call, repeats: int, cpu: list[float] | None = None) -> list[float]:  # type: ignore[no-untyped-def]
    """Wall milliseconds of each call; ``cpu`` collects the process's CPU milliseconds (every
    thread, the app's included), which other jobs on a loaded machine inflate far less."""
    times = []
    for _ in range(repeats):
        started, used = time.perf_counter(), time.process_time()
        call()
        times.append((time.perf_counter() - started) * 1000)
        if cpu is not None:
            cpu.append((time.process_time() - used) * 1000)
    return times


def populate_models(registry: Registry, folder: Path, models: int, versions: int) -> None:
    import joblib

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(500, 8)), columns=[f"x{i}" for i in range(8)])
    frame["y"] = (frame["x0"] + rng.normal(size=500) > 0).astype(int)
    joblib.dump(LogisticRegression().fit(frame.drop(columns="y"), frame["y"]), folder / "model.joblib")
    frame.to_parquet(folder / "train.parquet")
    first = registry.register(
        "model-0000", folder / "model.joblib", flavor="sklearn", train_data=folder / "train.parquet", target="y",
        owner="owner-0", description="benchmark model 0",
    )  # fmt: skip
    with registry.reading() as session:
        row = session.scalars(select(VersionRow).where(VersionRow.version == first.version)).one()
        skip = {"id", "model_id", "version", "created_at", "created_by", "status", "retired_at", "retire_reason"}
        fields = {c.key: getattr(row, c.key) for c in VersionRow.__table__.columns if c.key not in skip}
        fields.pop("parent_version", None)
    started = time.perf_counter()
    for m in range(1, models):  # one transaction per model, as the registry writes: rows, then their event
        name = f"model-{m:04d}"
        with registry.mutation(Permission.REGISTER, name) as (session, actor):
            now = utcnow()
            model = ModelRow(name=name, description=f"benchmark model {m}", owner=f"owner-{m % 37}", created_at=now,
                             updated_at=now)  # fmt: skip
            session.add(model)
            session.flush()
            for v in range(1, versions + 1):
                row = VersionRow(
                    model_id=model.id, version=v, created_at=now, created_by=actor.name, status="registered",
                    **{**fields, "parent_version": v - 1 or None},
                )  # fmt: skip
                row.tags = [TagRow(key="restrictions", value="none")]
                session.add(row)
            session.flush()
            registry.record_event(session, actor, "register", f"{name}@1..{versions}")
    for v in range(2, versions + 1):
        registry._insert_version("model-0000", {**fields, "parent_version": v - 1}, {}, None, None, None)
    for m in range(models):
        registry.set_alias(f"model-{m:04d}", "staging", versions, reason="benchmark")
    print(f"set-up: {models:,} models x {versions} versions in {time.perf_counter() - started:.0f} s")


def populate_events(registry: Registry, events: int) -> None:
    with registry.reading() as session:
        have = session.query(AuditEventRow).count()
    started = time.perf_counter()
    for start in range(have, events, 100_000):
        count = min(100_000, events - start)
        drafts = [
            EventDraft(
                actor=f"user{i % 17}",
                action=("register", "alias.set", "approve", "evidence.record")[i % 4],
                subject=f"model-{i % 1000:04d}@{i // 1000 + 1}",
                after={"version": i // 1000 + 1},
                reason="quarterly revalidation" if i % 3 == 0 else None,
                request_id=f"req-{i:08x}",
            )
            for i in range(start, start + count)
        ]
        with Session(registry.engine.execution_options(**WRITE)) as session, session.begin():
            append_events(session, drafts)
    print(f"set-up: {events:,} audit events in {time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(home=Path(folder) / "home")
        registry = Registry(settings)
        populate_models(registry, Path(folder), args.models, args.versions)
        client = TestClient(Starlette(routes=[Mount("/ui", app=create_ui(settings, registry=registry))]))
        governance = Governance(registry)

        client.get("/ui/")  # warm: templates compiled, connections open
        service_cpu: list[float] = []
        page_cpu: list[float] = []
        service = timed(governance.inventory, args.repeats, service_cpu)
        page = timed(lambda: client.get("/ui/").raise_for_status(), args.repeats, page_cpu)
        size = len(client.get("/ui/").content)
        print(
            f"inventory ({args.models:,} x {args.versions}): page median {statistics.median(page):.0f} ms "
            f"(min {min(page):.0f}, {size / 1e6:.1f} MB of HTML); Governance.inventory() alone median "
            f"{statistics.median(service):.0f} ms; page / service "
            f"{statistics.median(page) / statistics.median(service):.2f}x"
        )  # fmt: skip
        print(
            f"inventory CPU time: page median {statistics.median(page_cpu):.0f} ms, service median "
            f"{statistics.median(service_cpu):.0f} ms (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
        )

        populate_events(registry, args.events)
        with registry.reading() as session:
            head = session.scalar(select(AuditEventRow.seq).order_by(AuditEventRow.seq.desc()).limit(1))
        rng = random.Random(0)
        cursors = [rng.randint(51, head) for _ in range(200)]
        table = AuditEventRow.__table__

        def bare(cursor: int) -> None:
            with registry.reading() as session:
                session.execute(select(table).where(table.c.seq < cursor).order_by(table.c.seq.desc()).limit(51)).all()

        anchor = [timed(lambda c=c: bare(c), 1)[0] for c in cursors]
        pages_cpu: list[float] = []
        pages = [
            timed(lambda c=c: client.get(f"/ui/audit?before={c}").raise_for_status(), 1, pages_cpu)[0] for c in cursors
        ]
        filtered = {
            "subject": [f"/ui/audit?subject=model-{rng.randint(0, 999):04d}@{rng.randint(1, 900)}" for _ in range(50)],
            "action": [f"/ui/audit?action=approve&before={rng.randint(51, head)}" for _ in range(50)],
            "actor": [f"/ui/audit?actor=user{rng.randint(0, 16)}&before={rng.randint(51, head)}" for _ in range(50)],
            "time": [f"/ui/audit?until=2999-01-01&before={rng.randint(51, head)}" for _ in range(50)],
        }

        def p95(values: list[float]) -> float:
            return float(np.percentile(values, 95))

        print(
            f"audit ({head:,} events), random depths: page p50 {statistics.median(pages):.1f} ms, "
            f"p95 {p95(pages):.1f} ms; bare keyset query p95 {p95(anchor):.2f} ms; page / query "
            f"{statistics.median(pages) / statistics.median(anchor):.1f}x; page CPU p95 {p95(pages_cpu):.1f} ms"
        )
        for kind, urls in filtered.items():
            times = [timed(lambda u=u: client.get(u).raise_for_status(), 1)[0] for u in urls]
            print(f"audit filtered by {kind}: p50 {statistics.median(times):.1f} ms, p95 {p95(times):.1f} ms")
        registry.close()

    static = Path(__file__).resolve().parents[1] / "src/scoregate/ui/static"
    raw = sum(p.stat().st_size for p in static.rglob("*") if p.is_file())
    packed = sum(len(gzip.compress(p.read_bytes(), 9)) for p in static.rglob("*") if p.is_file())
    print(f"static payload: {raw / 1024:.1f} KB, {packed / 1024:.1f} KB gzipped (target at most 150 KB)")


if __name__ == "__main__":
    main()
