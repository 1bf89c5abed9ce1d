"""The audit log's hash chain, on SQLite and PostgreSQL: appends, tampering of every kind, export."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from scoregate.errors import InvalidInputError, TamperedError
from scoregate.governance.audit import (
    GENESIS,
    EventDraft,
    UnauditedChangeError,
    append_event,
    append_events,
    canonical_event,
    canonical_json,
    event_hash,
    export,
    iter_events,
    verify,
    verify_export,
)
from scoregate.registry.database import WRITE
from scoregate.registry.tables import AliasRow, AuditEventRow, AuditHeadRow, AuditKeyRow, ModelRow, RevisionRow


def writing(engine: Engine) -> Session:
    return Session(engine.execution_options(**WRITE))


def fill(engine: Engine, count: int = 5) -> None:
    for i in range(1, count + 1):
        with writing(engine) as session, session.begin():
            append_event(
                session,
                actor="ann",
                action="alias.set",
                subject=f"model:credit@{i}",
                before={"version": i - 1} if i > 1 else None,
                after={"version": i, "note": 'déjà "vu"\n'},
                reason="monthly refresh" if i % 2 else None,
                request_id=f"req-{i}",
            )


def tamper(engine: Engine, statement: str | Executable, **params: object) -> None:
    """What somebody who owns the tables can do: take the append-only triggers away first."""
    if isinstance(statement, str):
        statement = text(statement)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        else:
            connection.execute(text("DROP TRIGGER IF EXISTS audit_events_no_update"))
            connection.execute(text("DROP TRIGGER IF EXISTS audit_events_no_delete"))
        connection.execute(statement, params)


def test_the_database_refuses_to_change_or_delete_events(engine: Engine) -> None:
    fill(engine)
    before = events(engine)
    statements = [
        "UPDATE audit_events SET actor = 'mallory' WHERE seq = 3",
        "DELETE FROM audit_events WHERE seq = 5",
        "DELETE FROM audit_events",
    ]
    if engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_events")
    for statement in statements:
        with pytest.raises(DBAPIError, match="audit_events is append-only"), engine.begin() as connection:
            connection.execute(text(statement))
    assert events(engine) == before
    assert verify(engine).ok


def events(engine: Engine) -> list:
    with Session(engine) as session:
        return list(iter_events(session))


def test_appended_events_form_a_verifiable_chain(engine: Engine) -> None:
    fill(engine)
    result = verify(engine)
    assert result.ok and result.checked == 5 and result.first_bad_seq is None
    log = events(engine)
    assert [e.seq for e in log] == [1, 2, 3, 4, 5]
    assert log[0].prev_hash == GENESIS
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(log))
    assert log[1].before == {"version": 1} and log[1].after == {"version": 2, "note": 'déjà "vu"\n'}
    assert log[0].time.tzinfo is not None and log[0].time <= log[-1].time
    with Session(engine) as session:
        head = session.get(AuditHeadRow, 1)
        assert (head.last_seq, head.last_hash) == (5, log[-1].hash)
        assert verify(session).ok  # a Session works as well as an Engine


def test_hash_is_sha256_of_the_canonical_json() -> None:
    fields = {
        "seq": 7,
        "time": "2026-01-02T03:04:05.000006+00:00",
        "actor": 'o\'brien "the" \\ admin\t\x01',
        "action": "alias.set",
        "subject": "model:crédit@3\u2028",
        "before": None,
        "after": {"b": [1, 2.5, None, True], "a": {"z": "ü", "y": -3}},
        "reason": None,
        "request_id": "r-1",
        "prev_hash": "ab" * 32,
    }
    expected = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    line = canonical_event(
        7,
        fields["time"],
        fields["actor"],
        "alias.set",
        fields["subject"],
        None,
        '{"a":{"y":-3,"z":"ü"},"b":[1,2.5,null,true]}',
        None,
        "r-1",
        "ab" * 32,
    )
    assert line == expected
    assert event_hash(line) == hashlib.sha256(expected.encode()).hexdigest()


@pytest.mark.parametrize(
    "statement",
    [
        """UPDATE audit_events SET "after" = '{"version"\\:99}' WHERE seq = 3""",
        "UPDATE audit_events SET actor = 'mallory' WHERE seq = 3",
        "UPDATE audit_events SET reason = 'backfilled' WHERE seq = 3",
        "UPDATE audit_events SET request_id = NULL WHERE seq = 3",
        "UPDATE audit_events SET hash = prev_hash WHERE seq = 3",
    ],
)
def test_an_updated_middle_event_is_named(engine: Engine, statement: str) -> None:
    fill(engine)
    tamper(engine, statement)
    result = verify(engine)
    assert not result.ok and result.first_bad_seq == 3 and result.checked == 2, result


def test_a_moved_timestamp_is_detected(engine: Engine) -> None:
    fill(engine)
    tamper(
        engine, update(AuditEventRow).where(AuditEventRow.seq == 2).values(time=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    )
    assert verify(engine).first_bad_seq == 2


def test_a_rewritten_event_with_a_recomputed_hash_breaks_the_next_link(engine: Engine) -> None:
    fill(engine)
    third = events(engine)[2]
    forged = canonical_event(
        3,
        third.to_dict()["time"],
        "mallory",
        third.action,
        third.subject,
        canonical_json(third.before),
        '{"version":99}',
        third.reason,
        third.request_id,
        third.prev_hash,
    )
    tamper(
        engine,
        """UPDATE audit_events SET actor = 'mallory', "after" = '{"version"\\:99}', hash = :h WHERE seq = 3""",
        h=event_hash(forged),
    )
    result = verify(engine)
    assert not result.ok and result.first_bad_seq == 4 and "link" in result.reason


def test_a_deleted_middle_event_is_named(engine: Engine) -> None:
    fill(engine)
    tamper(engine, "DELETE FROM audit_events WHERE seq = 3")
    result = verify(engine)
    assert not result.ok and result.first_bad_seq == 3 and "missing" in result.reason


def test_a_deleted_last_event_is_detected_through_the_head(engine: Engine) -> None:
    fill(engine)
    tamper(engine, "DELETE FROM audit_events WHERE seq = 5")
    result = verify(engine)
    assert not result.ok and result.first_bad_seq == 5 and "head" in result.reason


def test_a_head_that_disagrees_with_the_last_event_is_detected(engine: Engine) -> None:
    fill(engine)
    tamper(engine, "UPDATE audit_head SET last_hash = :h", h="f" * 64)
    assert verify(engine).first_bad_seq == 5


@pytest.mark.parametrize("valid_hash", [True, False])
def test_a_forged_event_inserted_behind_the_platforms_back_is_detected(engine: Engine, valid_hash: bool) -> None:
    fill(engine)
    last = events(engine)[-1]
    time = "2030-01-01T00:00:00.000000+00:00"
    line = canonical_event(6, time, "mallory", "alias.set", "model:x", None, None, None, None, last.hash)
    tamper(
        engine,
        "INSERT INTO audit_events (seq, time, actor, action, subject, prev_hash, hash) "
        "VALUES (6, :t, 'mallory', 'alias.set', 'model:x', :p, :h)",
        t=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        p=last.hash,
        h=event_hash(line) if valid_hash else "0" * 64,
    )
    result = verify(engine)
    assert not result.ok and result.first_bad_seq == 6, result


def test_a_forged_event_before_the_first_is_detected(engine: Engine) -> None:
    fill(engine, 2)
    tamper(
        engine,
        "INSERT INTO audit_events (seq, time, actor, action, subject, prev_hash, hash) "
        "VALUES (0, :t, 'mallory', 'alias.set', 'model:x', :g, :g)",
        t=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        g=GENESIS,
    )
    assert verify(engine).first_bad_seq == 0


def test_a_rolled_back_change_leaves_neither_change_nor_event(engine: Engine) -> None:
    fill(engine, 2)
    with pytest.raises(RuntimeError), writing(engine) as session, session.begin():
        session.add(RevisionRow(name="audit-test", value=1))
        session.flush()
        append_event(session, actor="ann", action="revision.bump", subject="revision:audit-test")
        raise RuntimeError("the change failed after its event was appended")
    with Session(engine) as session:
        assert session.get(RevisionRow, "audit-test") is None
        assert session.scalar(select(func.count()).select_from(AuditEventRow)) == 2
    assert verify(engine).ok
    with writing(engine) as session, session.begin():
        assert append_event(session, actor="ann", action="a.b", subject="s").seq == 3  # no gap


def test_invalid_events_are_refused_before_anything_is_written(engine: Engine) -> None:
    bad = [
        {"actor": "", "action": "a", "subject": "s"},
        {"actor": "ann", "action": "a" * 65, "subject": "s"},
        {"actor": "ann", "action": "a", "subject": "s", "after": {"auc": math.nan}},
        {"actor": "ann", "action": "a", "subject": "s", "after": {1: "non-string key"}},
        {"actor": "ann", "action": "a", "subject": "s", "before": object()},
        {"actor": "ann\udc80", "action": "a", "subject": "s"},
        {"actor": "ann", "action": "a", "subject": "s", "reason": 42},
    ]
    for fields in bad:
        with pytest.raises(InvalidInputError), writing(engine) as session, session.begin():
            append_event(session, **fields)  # type: ignore[arg-type]
    assert events(engine) == [] and verify(engine).checked == 0


def test_before_and_after_accept_common_python_values(engine: Engine) -> None:
    when = dt.datetime(2026, 5, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with writing(engine) as session, session.begin():
        event = append_event(session, actor="ann", action="a", subject="s", after={"at": when, "path": Path("/m")})
    assert event.after == {"at": "2026-05-01T10:00:00.000000+00:00", "path": "/m"}
    assert verify(engine).ok


def test_iter_events_filters_by_subject_action_and_time(engine: Engine) -> None:
    fill(engine, 3)
    middle = events(engine)[1]
    with writing(engine) as session, session.begin():
        append_event(session, actor="bob", action="version.retire", subject="model:credit@2")
    with Session(engine) as session:
        assert [e.seq for e in iter_events(session, subject="model:credit@2")] == [2, 4]
        assert [e.seq for e in iter_events(session, action="version.retire")] == [4]
        assert [e.seq for e in iter_events(session, since=middle.time)] == [2, 3, 4]
        with pytest.raises(InvalidInputError):
            list(iter_events(session, since=dt.datetime(2020, 1, 1)))


def test_export_round_trips_and_verifies_offline(engine: Engine, tmp_path: Path) -> None:
    fill(engine)
    path = tmp_path / "audit.jsonl"
    summary = export(engine, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert summary.events == len(lines) == 5 and summary.last_seq == 5
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in events(engine)]
    assert summary.last_hash == json.loads(lines[-1])["hash"]
    assert verify_export(path, last_hash=summary.last_hash).ok

    altered = json.loads(lines[2])
    altered["after"] = {"version": 99}
    path.write_text("\n".join([*lines[:2], json.dumps(altered), *lines[3:]]) + "\n", encoding="utf-8")
    assert verify_export(path).first_bad_seq == 3

    path.write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")  # last line cut off
    assert verify_export(path).ok  # undetectable without an anchor ...
    assert verify_export(path, last_hash=summary.last_hash).first_bad_seq == 5  # ... and caught with one


def test_bulk_append_and_parallel_verification(engine: Engine) -> None:
    drafts = [EventDraft(actor="bulk", action="tag.set", subject=f"model:m@{i}", after={"i": i}) for i in range(3000)]
    with writing(engine) as session, session.begin():
        appended = append_events(session, drafts)
    assert [e.seq for e in appended] == list(range(1, 3001))
    assert verify(engine, workers=3) == verify(engine, workers=1)
    assert verify(engine, workers=3).checked == 3000
    tamper(engine, """UPDATE audit_events SET "after" = '{"i"\\:0}' WHERE seq = 2100""")
    assert verify(engine, workers=3).first_bad_seq == 2100
    # gaps right at the edges of the ranges the workers split (1-1000, 1001-2000, 2001-3000)
    tamper(engine, "DELETE FROM audit_events WHERE seq IN (1000, 1001)")
    assert verify(engine, workers=3).first_bad_seq == 1000
    assert verify(engine, workers=1).first_bad_seq == 1000


CONCURRENT_WORKER = textwrap.dedent(
    """
    import sys, time
    from sqlalchemy.orm import Session
    from scoregate.governance.audit import append_event
    from scoregate.registry.database import WRITE, make_engine
    engine = make_engine(sys.argv[1])
    for i in range(25):
        with Session(engine.execution_options(**WRITE)) as session, session.begin():
            append_event(session, actor=sys.argv[2], action="race.step", subject=f"race:{i}")
            time.sleep(0.002)  # hold the lock a little, so the two writers really interleave
            append_event(session, actor=sys.argv[2], action="race.step", subject=f"race:{i}b")
    """
)


def test_concurrent_appends_from_two_processes_give_one_gap_free_chain(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_WORKER, url, actor],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for actor in ("proc-a", "proc-b")
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr
    result = verify(engine)
    assert result.ok and result.checked == 100, result
    log = events(engine)
    assert [e.seq for e in log] == list(range(1, 101))
    assert {e.actor for e in log} == {"proc-a", "proc-b"}
    # each transaction's two events are adjacent: writers queue for the whole transaction
    assert all(log[i].actor == log[i + 1].actor for i in range(0, 100, 2))


# -- row images: every audited row a transaction writes is recorded with its event ---------------


def add_model(session: Session, name: str = "credit", description: str | None = None) -> ModelRow:
    now = dt.datetime.now(dt.UTC)
    row = ModelRow(name=name, description=description, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return row


def test_an_event_records_the_rows_its_transaction_wrote(engine: Engine, tmp_path: Path) -> None:
    with writing(engine) as session, session.begin():
        model_id = add_model(session, description="x" * 300).id
        first = append_event(session, actor="ann", action="model.create", subject="model:credit")
    assert first.state == [["models", str(model_id), first.state[0][2]]]
    recorded = first.state[0][2]
    assert recorded["name"] == "credit" and recorded["risk_tier"] is None
    assert recorded["description"] == {"sha256": hashlib.sha256(json.dumps("x" * 300).encode()).hexdigest()}
    assert recorded["created_at"].endswith("+00:00")
    with writing(engine) as session, session.begin():
        session.get(ModelRow, model_id).risk_tier = "high"
        second = append_event(session, actor="ann", action="model.tier", subject="model:credit")
        session.delete(session.get(ModelRow, model_id))
        third = append_event(session, actor="ann", action="model.delete", subject="model:credit")
    assert second.state[0][2]["risk_tier"] == "high" and third.state == [["models", str(model_id), None]]
    with Session(engine) as session:
        keys = session.execute(select(AuditKeyRow.table_name, AuditKeyRow.row_key, AuditKeyRow.seq)).all()
    assert sorted(keys) == [("models", str(model_id), e.seq) for e in (first, second, third)]
    result = verify(engine)
    assert result.ok and result.rows == 0 and result.mismatches == ()
    # exported with their state, and verifiable offline
    path = tmp_path / "audit.jsonl"
    summary = export(engine, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in events(engine)]
    assert verify_export(path, last_hash=summary.last_hash).ok
    altered = json.loads(lines[1])
    altered["state"][0][2]["risk_tier"] = "low"
    path.write_text("\n".join([lines[0], json.dumps(altered), lines[2]]) + "\n", encoding="utf-8")
    assert verify_export(path).first_bad_seq == 2


def test_an_event_hashes_its_state_in_canonical_order() -> None:
    state = '[["models","1",{"name":"crédit"}]]'
    fields = {
        "seq": 3,
        "time": "2026-01-02T03:04:05.000006+00:00",
        "actor": "ann",
        "action": "a",
        "subject": "s",
        "before": None,
        "after": None,
        "reason": None,
        "request_id": None,
        "prev_hash": "ab" * 32,
    }
    without = canonical_event(3, fields["time"], "ann", "a", "s", None, None, None, None, "ab" * 32)
    assert without == json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_event(3, fields["time"], "ann", "a", "s", None, None, None, None, "ab" * 32, None, None) == without
    with_state = canonical_event(3, fields["time"], "ann", "a", "s", None, None, None, None, "ab" * 32, None, state)
    expected = {**fields, "state": json.loads(state)}
    assert with_state == json.dumps(expected, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_a_transaction_that_writes_an_audited_row_without_an_event_is_refused(engine: Engine) -> None:
    refused = pytest.raises(UnauditedChangeError, match=r"wrote audited rows \(models \d+\) without an audit event")
    with refused, writing(engine) as session, session.begin():
        add_model(session)
    refused = pytest.raises(UnauditedChangeError, match="without an audit event after them")
    with refused, writing(engine) as session, session.begin():
        add_model(session)
        append_event(session, actor="ann", action="model.create", subject="model:credit")
        add_model(session, "written-after-its-event")
    with (
        pytest.raises(UnauditedChangeError, match="bulk statement on the audited table aliases"),
        writing(engine) as session,
    ):
        session.execute(update(AliasRow).values(version_id=2))
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(ModelRow)) == 0
    assert events(engine) == [] and verify(engine).ok


def test_a_row_changed_behind_the_platforms_back_is_not_recorded_as_new(engine: Engine) -> None:
    with writing(engine) as session, session.begin():
        add_model(session)
        append_event(session, actor="ann", action="model.create", subject="model:credit")
    with engine.begin() as connection:
        connection.execute(text("UPDATE models SET owner = 'mallory'"))
    with (
        pytest.raises(
            TamperedError, match=r'models row credit: owner is "mallory", the audit log \(event 1\) says null'
        ),
        writing(engine) as session,
        session.begin(),
    ):
        session.scalars(select(ModelRow)).one().description = "an honest change on top"
        append_event(session, actor="ann", action="model.describe", subject="model:credit")
    assert len(events(engine)) == 1
    assert [m.message for m in verify(engine).mismatches] == [
        'models row credit: owner is "mallory", the audit log (event 1) says null'
    ]
