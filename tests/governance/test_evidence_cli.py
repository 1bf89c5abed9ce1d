"""Evidence from the checks, reproduction and the audit log, through the CLI in-process."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import scoregate.cli.audit  # noqa: F401  (registers `scoregate audit`, whatever cli/__init__ imports)
from scoregate.config import Settings
from scoregate.registry import Registry
from tests.governance.conftest import serve_requests


@pytest.fixture
def registered(run, credit_files: dict[str, Path]) -> str:  # type: ignore[no-untyped-def]
    code, _out, err = run(
        "register", "credit-risk", credit_files["model"], "--flavor", "sklearn",
        "--train-data", credit_files["train"], "--target", "default",
    )  # fmt: skip
    assert code == 0, err
    return "credit-risk@1"


def evidence(home: Path, ref: str = "credit-risk@1") -> list[dict[str, Any]]:
    from scoregate.governance.service import Governance

    registry = Registry(Settings(home=home))
    try:
        return Governance(registry).evidence(ref)
    finally:
        registry.close()


def version(home: Path, ref: str = "credit-risk@1") -> Any:
    registry = Registry(Settings(home=home))
    try:
        return registry.resolve(ref)
    finally:
        registry.close()


# -- evidence wiring -----------------------------------------------------------------------------


def test_validate_records_its_run_and_marks_validated(run, registered: str, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "v1"
    code, out, err = run("validate", registered, "--output", folder)
    assert code == 0, out + err
    report = json.loads((folder / "report.json").read_bytes())
    assert report["passed"] is True and report["ref"] == registered and report["format"] == 2
    assert report["artifact_digest"] == version(home).artifact_digest
    [recorded] = evidence(home)
    assert (recorded["kind"], recorded["origin"], recorded["counts"]) == ("validation", "run", True), recorded
    assert recorded["bound_digest"] == version(home).artifact_digest
    assert recorded["schema_digest"] == version(home).input_schema.contract_digest()
    assert (
        recorded["settings"]["reference"] == "subprocess"
        and recorded["case_set_digest"] == report["case_set"]["digest"]
    )
    assert f"recorded validation run #{recorded['id']}" in out
    assert version(home).status == "registered"  # recording alone does not mark it

    code, out, err = run("validate", registered, "--output", tmp_path / "v2", "--mark-validated")
    assert code == 0, out + err
    assert "marked credit-risk@1 validated" in out
    assert version(home).status == "validated" and len(evidence(home)) == 2

    code, out, _ = run("validate", registered, "--output", tmp_path / "v3", "--no-record")
    assert code == 0 and "recorded" not in out and len(evidence(home)) == 2


def test_a_weak_run_is_recorded_as_such_and_does_not_mark_validated(run, registered: str, home: Path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``validate --reference none --mark-validated`` passed a batch-dependent model and marked it validated."""
    code, out, err = run("validate", registered, "--output", tmp_path / "w", "--reference", "none", "--mark-validated")
    assert code == 1, out + err
    assert "it does not count for the policy: its parity reference was none; the tier requires subprocess" in out
    assert "not marked validated" in out and version(home).status == "registered"
    [weak] = evidence(home)
    assert weak["settings"]["reference"] == "none" and weak["counts"] is False
    code, out, err = run("validate", registered, "--output", tmp_path / "x", "--timeout", "300", "--mark-validated")
    assert code == 1 and "timeout_s=300.0; the tier allows at most 10" in out
    code, out, err = run("mark-validated", registered)
    assert code == 5 and "no recorded validation run meets the high tier's rules" in err


def test_a_report_edited_to_pass_gets_nowhere(run, registered: str, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A failed report with ``"passed": true`` edited in reached production in the first release."""
    folder = tmp_path / "run"
    code, out, err = run("validate", registered, "--output", folder, "--no-record")
    assert code == 0, out + err
    report = json.loads((folder / "report.json").read_bytes())
    report["cases"][0]["status"] = "fail"
    report["passed"] = True
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(report))
    code, out, err = run("evidence", "attach", registered, "validation", forged)
    assert code == 3 and "recorded by scoregate's own run (`scoregate validate`)" in err
    code, out, err = run("evidence", "attach", registered, "validation", credit_files_rows(tmp_path))
    assert code == 3 and err.count("\n") == 1
    code, out, err = run("evidence", "attach", registered, "external", forged)
    assert code == 0, err  # kept, shown as uploaded, and counting for nothing the policy does not name
    assert [e["origin"] for e in evidence(home)] == ["upload"]
    code, out, err = run("mark-validated", registered)
    assert code == 5 and "no recorded validation run" in err
    code, out, _ = run("check", registered)
    assert code == 5 and "[evidence:validation] missing a recorded validation run" in out


def credit_files_rows(tmp_path: Path) -> Path:
    path = tmp_path / "not-json.bin"
    path.write_bytes(b"\x00\x01binary")
    return path


def test_recording_needs_the_callers_token(run, registered: str, home: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("init", "--name", "root")
    admin = out.strip().splitlines()[1]
    monkeypatch.setenv("SCOREGATE_TOKEN", admin)
    code, out, _ = run("users", "add", "watcher", "--role", "viewer")
    viewer = out.strip().splitlines()[-1]
    monkeypatch.delenv("SCOREGATE_TOKEN")

    code, out, err = run("validate", registered, "--output", tmp_path / "a", "--reference", "none")
    assert code == 7 and err.count("\n") == 1 and "API token is required" in err
    assert not (tmp_path / "a").exists()  # refused before the run

    monkeypatch.setenv("SCOREGATE_TOKEN", viewer)
    code, out, err = run("profile", registered, "--output", tmp_path / "b", "--requests", "5")
    assert code == 8 and err.count("\n") == 1 and "watcher" in err and "may not register" in err
    code, out, err = run("validate", registered, "--output", tmp_path / "c", "--reference", "none", "--no-record")
    assert code == 0, err  # reading and checking needs no role
    assert evidence(home) == []

    monkeypatch.setenv("SCOREGATE_TOKEN", admin)
    code, out, err = run("validate", registered, "--output", tmp_path / "d", "--reference", "none")
    assert code == 0, err
    assert [e["author"] for e in evidence(home)] == ["root"]


def test_profile_records_its_run(run, registered: str, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run("profile", registered, "--output", tmp_path / "p", "--requests", "20")
    assert code == 0, out + err
    report = json.loads((tmp_path / "p" / "profile.json").read_bytes())
    assert report["ref"] == registered and report["artifact_digest"] == version(home).artifact_digest
    [recorded] = evidence(home)
    assert (recorded["kind"], recorded["origin"], recorded["bound_digest"]) == (
        "profile",
        "run",
        version(home).artifact_digest,
    )
    assert recorded["problems"] == ["it profiled 20 request(s); the tier requires 50"]
    assert f"recorded profile run #{recorded['id']}" in out


def test_loadtest_records_its_run_and_the_gate_judges_it(run, registered: str, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "lt"
    code, out, err = run("loadtest", registered, "--rps", "20", "--duration", "2s", "--users", "2", "--output", folder)
    report = json.loads((folder / "report.json").read_bytes())
    assert report["ref"] == registered and report["artifact_digest"] == version(home).artifact_digest
    assert report["budget_ms"] == 300.0  # the version's registered budget
    assert isinstance(report["passed"], bool) and code == (0 if report["passed"] else 1), out + err
    [recorded] = evidence(home)
    assert (recorded["kind"], recorded["origin"]) == ("loadtest", "run")
    assert any(p.startswith("it ran ") and "the tier requires 5 s" in p for p in recorded["problems"])
    assert f"recorded loadtest run #{recorded['id']}" in out

    # the run's own budget is its business; the gate judges against the version's and the tier's
    code, out, _ = run(
        "loadtest", registered, "--rps", "10", "--duration", "1s", "--users", "1",
        "--budget-ms", "0.0001", "--output", tmp_path / "lt2", "--no-record",
    )  # fmt: skip
    report = json.loads((tmp_path / "lt2" / "report.json").read_bytes())
    assert code == 1 and report["passed"] is False and "EXCEEDED" in out
    assert report["latency_budget_ms"] == 0.0001 and report["budget_ms"] == 300.0
    assert len(evidence(home)) == 1


# -- reproduce -----------------------------------------------------------------------------------


def serve(home: Path, ref: str, requests: dict[str, list[dict[str, Any]]]) -> None:
    registry = Registry(Settings(home=home))
    try:
        serve_requests(registry, ref, requests)
    finally:
        registry.close()


def test_reproduce_exit_codes(run, registered: str, home: Path, credit_files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    body = json.loads(credit_files["rows"].read_text())[:3]
    serve(home, registered, {"r-1": body})

    code, out, err = run("reproduce", "r-1")
    assert code == 0, out + err
    assert "MATCH" in out and "credit-risk@1" in out and "3 row(s)" in out

    code, out, err = run("reproduce", "r-1", "--json")
    assert code == 0 and json.loads(out)["matched"] is True

    [segment] = (home / "predictions").rglob("*.parquet")
    table = pq.read_table(segment).to_pandas()
    outputs = [json.loads(v) for v in table["outputs"]]
    outputs[2]["proba_1"] += 0.25
    table["outputs"] = [json.dumps(o) for o in outputs]
    table.to_parquet(segment, index=False)
    code, out, err = run("reproduce", "r-1")
    assert code == 1, out + err
    assert "MISMATCH" in out and re.search(r"│\s*2\s*│\s*proba_1\s*│.*│\s*0\.25\s*│", out), out
    assert "packages" in out or "no installed package differs" in out

    code, out, err = run("reproduce", "r-unknown")
    assert code == 4 and "r-unknown" in err and err.count("\n") == 1


# -- audit ---------------------------------------------------------------------------------------


def test_audit_verify_export_log_and_tampering(run, registered: str, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("alias", "set", "credit-risk@1", "staging")[0] == 0

    code, out, err = run("audit", "verify")
    events = int(re.search(r"(\d+) events, chain intact", out).group(1))
    assert code == 0 and events >= 2, out + err

    code, out, err = run("audit", "export", tmp_path / "audit.jsonl")
    assert code == 0, err
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, events + 1))
    assert f"wrote {events} events" in out and lines[-1]["hash"] in out
    assert lines[0]["action"] == "register" and lines[0]["subject"] == "credit-risk@1"

    code, out, _ = run("audit", "log")
    assert code == 0 and "register" in out and "alias.set" in out and "credit-risk@staging" in out
    code, out, _ = run("audit", "log", "--action", "alias.set")
    assert code == 0 and "alias.set" in out and "register" not in out
    code, out, _ = run("audit", "log", "--subject", "credit-risk@1", "--limit", "1")
    rows = [line for line in out.splitlines() if re.match(r"│\s*\d+\s*│", line)]
    assert code == 0 and len(rows) == 1 and "credit-risk@1" in rows[0]
    code, out, _ = run("audit", "log", "--subject", "nobody@1")
    assert code == 0 and "no matching audit events" in out
    assert run("audit", "log", "--limit", "0")[0] == 3

    with sqlite3.connect(home / "registry.db") as db:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 1")
        db.execute("DROP TRIGGER audit_events_no_update")  # as the file's owner could
        db.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 1")
    db.close()
    code, out, err = run("audit", "verify")
    assert code == 1 and "chain intact" not in out
    assert "seq 1" in err and "altered" in err


def test_each_command_gives_its_events_one_request_id(  # type: ignore[no-untyped-def]
    run, registered: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("alias", "set", "credit-risk@1", "staging")[0] == 0
    assert run("alias", "set", "credit-risk@1", "canary")[0] == 0
    monkeypatch.setenv("SCOREGATE_REQUEST_ID", "pipeline-run-7")
    assert run("alias", "set", "credit-risk@1", "shadow")[0] == 0
    assert run("audit", "export", tmp_path / "audit.jsonl")[0] == 0
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    ids = [e["request_id"] for e in events if e["action"] == "alias.set"]
    assert len(ids) == 3 and ids[0] != ids[1]
    assert all(re.fullmatch(r"cli-[0-9a-f]{16}", i) for i in ids[:2]) and ids[2] == "pipeline-run-7"
    assert all(re.fullmatch(r"cli-[0-9a-f]{16}", e["request_id"]) for e in events if e["action"] == "register")

    code, out, _ = run("audit", "log", "--request-id", "pipeline-run-7")
    rows = [line for line in out.splitlines() if re.match(r"│\s*\d+\s*│", line)]
    assert code == 0 and len(rows) == 1 and "credit-risk@shadow" in rows[0] and "pipeline-run-7" in rows[0]

    for bad in ("", "x" * 129, "tab\there"):
        monkeypatch.setenv("SCOREGATE_REQUEST_ID", bad)
        code, _, err = run("alias", "set", "credit-risk@1", "other")
        assert code == 3 and "invalid SCOREGATE_REQUEST_ID" in err and "Traceback" not in err


def test_webhooks_deliver_watch_sends_as_events_happen_and_stops_on_sigterm(  # type: ignore[no-untyped-def]
    run, registered: str, home: Path, receiver: Any
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.governance.conftest import SECRET

    assert run("webhooks", "add", receiver.url, "--secret", SECRET, "--action", "alias.*")[0] == 0
    assert run("webhooks", "deliver", "--watch", "0")[0] == 3
    watcher = subprocess.Popen(
        [sys.executable, "-m", "scoregate", "webhooks", "deliver", "--watch", "0.2"],
        env={**os.environ, "SCOREGATE_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert run("alias", "set", registered, "staging")[0] == 0  # an event after the watcher started
        deadline = time.monotonic() + 30
        while not receiver.received:
            assert watcher.poll() is None, watcher.communicate()
            assert time.monotonic() < deadline, "the watcher never delivered the event"
            time.sleep(0.05)
    finally:
        watcher.send_signal(signal.SIGTERM)
        out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    assert "delivered 1, retrying 0, failed 0" in out and out.rstrip().endswith("stopped")
    assert len(receiver.received) == 1 and receiver.received[0]["signed"]
    assert json.loads(receiver.received[0]["body"])["action"] == "alias.set"


def test_predictions_reads_the_log_by_ref_time_and_request(  # type: ignore[no-untyped-def]
    run, registered: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from scoregate.registry import predictions as plog
    from scoregate.serving.batcher import Outputs

    log = plog.PredictionLog(home / "predictions")
    row = {"income": 50.0, "age": 30, "debt_ratio": 0.2, "purpose": "car"}
    now = time.time()
    for request_id, at in (("old-1", now - 3 * 3600), ("r-1", now - 60), ("r-2", now - 30)):
        monkeypatch.setattr(plog.time, "time", lambda at=at: at)
        log.append("credit-risk", 1, request_id, [row], Outputs(["prediction"], ["i8"], [[1]]), 2.5, route="x")
    monkeypatch.undo()  # the clock and the CLI's environment; set the latter again
    monkeypatch.setenv("SCOREGATE_HOME", str(home))
    log.flush()

    code, out, err = run("predictions", registered)
    assert code == 0, err
    assert [r for r in ("old-1", "r-1", "r-2") if r in out] == ["old-1", "r-1", "r-2"]
    code, out, _ = run("predictions", registered, "--last", "1h")
    assert code == 0 and "r-1" in out and "r-2" in out and "old-1" not in out
    code, out, _ = run("predictions", "credit-risk", "--limit", "1")
    assert code == 0 and "r-2" in out and "r-1" not in out
    assert run("alias", "set", registered, "staging")[0] == 0
    code, out, _ = run("predictions", "credit-risk@staging", "--request-id", "r-1")
    assert code == 0 and "r-1" in out and "r-2" not in out

    code, out, _ = run("predictions", registered, "--format", "jsonl", "--output", tmp_path / "p.jsonl")
    assert code == 0 and "wrote 3 rows" in out
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [x["request_id"] for x in lines] == ["old-1", "r-1", "r-2"]
    assert lines[0]["inputs"] == row and lines[0]["outputs"] == {"prediction": 1} and lines[0]["version"] == 1
    code, out, _ = run("predictions", registered, "--format", "csv", "--last", "2m")
    assert code == 0 and out.splitlines()[0].startswith("timestamp,model,version,request_id")
    assert len(out.splitlines()) == 3

    bad = [
        (("predictions", registered, "--last", "5x"), 3, "invalid --last '5x'"),
        (("predictions", registered, "--limit", "0"), 3, "invalid --limit 0"),
        (("predictions", registered, "--format", "xml"), 3, "invalid --format 'xml'"),
        (("predictions", registered, "--output", tmp_path / "t.txt"), 3, "--output needs --format jsonl or csv"),
        (("predictions", "nope@1"), 4, "model 'nope' not found"),
        (("predictions", "bad ref!"), 2, "invalid model reference"),
    ]
    for args, expected_code, message in bad:
        code, _, err = run(*args)
        assert code == expected_code and message in " ".join(err.split()), (args, code, err)
    assert not (tmp_path / "t.txt").exists()


def test_predictions_compares_a_shadow_with_the_decisions_it_shadowed(  # type: ignore[no-untyped-def]
    run, registered: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scoregate.registry import predictions as plog
    from scoregate.serving.batcher import Outputs

    monkeypatch.setenv("SCOREGATE_HOME", str(home))
    log = plog.PredictionLog(home / "predictions")
    row = {"income": 50.0, "age": 30, "debt_ratio": 0.2, "purpose": "car"}

    def outputs(*probas: float) -> Outputs:
        return Outputs(["prediction", "proba_1"], ["i8", "f8"], [[int(p > 0.5) for p in probas], list(probas)])

    # Two requests shadowed by version 2 (one of two rows disagrees on the label), one not shadowed.
    log.append("credit-risk", 1, "r-1", [row, row], outputs(0.9, 0.2), 1.0, route="credit-risk@production")
    log.append("credit-risk", 2, "r-1", [row, row], outputs(0.8, 0.6), 1.0, shadow=True, route="x")
    log.append("credit-risk", 1, "r-2", [row], outputs(0.1), 1.0, route="credit-risk@production")
    log.append("credit-risk", 2, "r-2", [row], outputs(0.1), 1.0, shadow=True, route="x")
    log.append("credit-risk", 1, "r-3", [row], outputs(0.7), 1.0, route="credit-risk@production")
    log.flush()

    code, out, err = run("predictions", registered, "--compare-shadow")
    assert code == 0, err
    text = " ".join(out.split())
    assert "3 of 4 primary rows have a shadow row (1 not shadowed" in text
    assert "prediction: 66.67% equal" in text
    assert "proba_1: 33.33% equal, mean |difference| 0.166667, max 0.4" in text
    code, out, err = run("predictions", "credit-risk", "--compare-shadow", "--format", "jsonl")
    assert code == 0, err
    pairs = [json.loads(line) for line in out.splitlines()]
    assert [(p["request_id"], p["row"]) for p in pairs] == [("r-1", 0), ("r-1", 1), ("r-2", 0)]
    assert pairs[1]["primary_outputs"] == {"prediction": 0, "proba_1": 0.2}
    assert pairs[1]["shadow_outputs"] == {"prediction": 1, "proba_1": 0.6}
    assert {p["primary_version"] for p in pairs} == {1} and {p["shadow_version"] for p in pairs} == {2}
    code, out, _ = run("predictions", registered, "--compare-shadow", "--request-id", "r-3")
    assert code == 0 and "0 of 1 primary rows have a shadow row" in " ".join(out.split())
