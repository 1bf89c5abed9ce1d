"""Audit log throughput: bulk-append N events to SQLite, then verify and export the chain.

Appends go through ``append_events`` (the hashing, head lock and insert that every
mutation uses), in a few large transactions. Verification must stay well under 10 s
for a million events. Run: ``.venv/bin/python benchmarks/audit.py [--events N]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sqlalchemy.orm import Session

from scoregate.governance.audit import EventDraft, append_events, export, verify
from scoregate.registry.database import WRITE, make_engine, migrate


def drafts(start: int, count: int) -> list[EventDraft]:
    return [
        EventDraft(
            actor=f"user{i % 17}",
            action=("version.register", "alias.set", "version.retire", "tag.set")[i % 4],
            subject=f"model:credit-risk-{i % 100}@{i // 100 + 1}",
            before=None if i % 4 == 0 else {"alias": "production", "version": i // 100},
            after={"alias": "production", "version": i // 100 + 1, "note": "déjà vu"},
            reason="quarterly revalidation" if i % 3 == 0 else None,
            request_id=f"req-{i:08x}",
        )
        for i in range(start, start + count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100_000, help="events per transaction")
    parser.add_argument("--workers", type=int, default=None, help="verifying processes (default: automatic)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{folder}/registry.db")
        migrate(engine)
        started = time.perf_counter()
        for start in range(0, args.events, args.batch):
            batch = drafts(start, min(args.batch, args.events - start))
            with Session(engine.execution_options(**WRITE)) as session, session.begin():
                append_events(session, batch)
        appended = time.perf_counter() - started
        print(f"append: {args.events:,} events in {appended:.1f} s ({args.events / appended:,.0f} events/s)")

        started = time.perf_counter()
        result = verify(engine, workers=args.workers)
        verified = time.perf_counter() - started
        assert result.ok and result.checked == args.events, result
        print(f"verify: {result.checked:,} events in {verified:.2f} s ({result.checked / verified:,.0f} events/s)")

        started = time.perf_counter()
        summary = export(engine, Path(folder) / "audit.jsonl")
        exported = time.perf_counter() - started
        size = (Path(folder) / "audit.jsonl").stat().st_size / 1e6
        print(f"export: {summary.events:,} events ({size:,.0f} MB) in {exported:.2f} s")
        engine.dispose()


if __name__ == "__main__":
    main()
