"""The CLI and the Client behave and print the same embedded and as clients of a registry
service started by the test (on SQLite and on PostgreSQL), through the whole lifecycle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from scoregate.cli.app import governance_for
from scoregate.client import Client
from scoregate.registry import Registry
from scoregate.registry.tables import AuditEventRow
from tests.conftest import invoke_cli
from tests.governance.runs import loadtest_document, validation_document
from tests.server.conftest import Mode


@pytest.fixture
def cli(mode: Mode, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.chdir(tmp_path)

    def run(user: str, *args: object, embedded: bool = False) -> tuple[int, str, str]:
        for key in ("SCOREGATE_URL", "SCOREGATE_DATABASE_URL", "SCOREGATE_TOKEN", "SCOREGATE_HOME"):
            monkeypatch.delenv(key, raising=False)
        env = {**mode.service.env(), "SCOREGATE_TOKEN": mode.tokens[user]} if embedded else mode.env(user)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return invoke_cli(monkeypatch, capsys, args)

    return run


def test_lifecycle_through_the_cli_in_both_modes(mode: Mode, cli, credit_files) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli(
        "dave", "register", "credit-risk", credit_files["model"], "--flavor", "sklearn",
        "--train-data", credit_files["train"], "--target", "default", "--risk-tier", "high",
    )  # fmt: skip
    assert code == 0, err
    assert "registered credit-risk@1 (sklearn" in out
    assert cli("dave", "alias", "set", "credit-risk@1", "staging")[1].strip() == "credit-risk@staging → version 1"

    # the gates refuse production, naming every missing item, with the policy exit code
    code, _, err = cli("dep", "alias", "set", "credit-risk@1", "production")
    assert code == 5, err
    assert "missing a recorded validation run" in err and "needs 1 approval" in err

    # runs are recorded through the Python API (a real suite is tested elsewhere)
    with Client(settings=mode.settings("dave")) as dave:
        version = dave.get("credit-risk@1")
        governance_for(dave.registry).record_run(version.ref, "validation", validation_document(dave.registry, version))
        governance_for(dave.registry).record_run(version.ref, "loadtest", loadtest_document(version))
    assert cli("dave", "mark-validated", "credit-risk@1", "--reason", "suite passed")[1].strip() == (
        "credit-risk@1: validated"
    )
    code, _, err = cli("dave", "approve", "credit-risk@1", "--reason", "mine")
    assert code == 8 and "may not approve" in err  # 403, naming the rule
    assert cli("vera", "approve", "credit-risk@1", "--reason", "independent review")[1].strip() == (
        "credit-risk@1: approved"
    )
    code, _, err = cli("dave", "alias", "set", "credit-risk@1", "production")
    assert code == 8 and "requires the role deployer" in err
    code, out, err = cli("dep", "alias", "set", "credit-risk@1", "production", "--reason", "go live")
    assert code == 0, err
    assert out.strip() == "credit-risk@production → version 1"

    document = credit_files["model"].parent / "memo.txt"
    document.write_text("independent review memo\n")
    code, out, err = cli("val", "evidence", "attach", "credit-risk@1", "external", document)
    assert code == 0, err
    assert "attached external" in out

    code, out, err = cli("dave", "audit", "verify")
    assert code == 0, err
    assert "chain intact" in out
    code, out, _ = cli("dave", "card", "credit-risk@1")
    assert out.startswith("# Model card: credit-risk@1")

    # bad input: one line, the embedded exit codes
    assert cli("dave", "models", "show", "nope@1")[0] == 4
    code, _, err = cli("dave", "alias", "set", "credit-risk@99", "staging")
    assert code == 4 and "credit-risk@99 not found" in err
    assert cli("dave", "retire", "credit-risk@1", "--reason", "x")[0] == 5  # holds aliases: conflict

    # every read prints the same, embedded or remote
    for command in (
        ("models", "list"),
        ("models", "show", "credit-risk@production"),
        ("models", "versions", "credit-risk"),
        ("alias", "list"),
        ("alias", "history", "credit-risk", "production"),
        ("evidence", "list", "credit-risk@1"),
        ("decisions", "credit-risk@1"),
        ("check", "credit-risk@1"),
        ("inventory", "--format", "json"),
    ):
        here = cli("dave", *command)
        there = cli("dave", *command, embedded=True)
        assert here == there, command


def test_request_ids_reach_the_audit_events(mode: Mode, cli, credit_files, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SCOREGATE_REQUEST_ID", "pipeline-run-42")
    code, _, err = cli(
        "dave", "register", "credit-risk", credit_files["model"], "--flavor", "sklearn",
        "--train-data", credit_files["train"], "--target", "default",
    )  # fmt: skip
    assert code == 0, err
    registry = Registry(mode.service.settings)
    with registry.reading() as session:
        events = session.scalars(select(AuditEventRow).where(AuditEventRow.action == "register")).all()
    assert [e.request_id for e in events] == ["pipeline-run-42"]
    assert events[0].actor == "dave"


def test_client_registers_loads_and_predicts_in_both_modes(mode: Mode, credit_files, tmp_path: Path) -> None:
    with Client(settings=mode.settings("dave")) as client:
        version = client.register(
            "credit-risk", credit_files["model"], flavor="sklearn", train_data=credit_files["train"], target="default"
        )
        assert version.training_data_uri == str(credit_files["train"].absolute())
        client.set_alias(version.ref, "staging")
        rows = json.loads(credit_files["rows"].read_text())
        scored = client.predict("credit-risk@staging", rows)
        assert len(scored) == len(rows)
        assert [v.version for v in client.list_versions("credit-risk")] == [1]
        assert client.list_models()[0].aliases == {"staging": 1}
        reference = client.registry.reference_data("credit-risk@1")
        assert len(reference) > 0
    if mode.remote:  # the client's home holds a verified cache and nothing else of the registry
        assert not (mode.client_home / "registry.db").exists()
        assert (mode.client_home / "cache" / "blobs" / version.artifact_digest).is_file()
