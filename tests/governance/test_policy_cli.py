"""The governance commands of this issue through the CLI: a policy change waits for a second
admin, uploads need a validator's acceptance, a risk tier moves only by an admin, and the
refusals are one line with a non-zero exit and nothing stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoregate.config import Settings
from scoregate.registry import Registry


@pytest.fixture
def admins(run, monkeypatch) -> dict[str, str]:  # type: ignore[no-untyped-def]
    code, out, _ = run("init", "--name", "root")
    tokens = {"root": out.strip().splitlines()[1]}
    monkeypatch.setenv("SCOREGATE_TOKEN", tokens["root"])
    for name, role in [("root2", "admin"), ("dave", "developer"), ("val", "validator"), ("vera", "validator")]:
        code, out, err = run("users", "add", name, "--role", role)
        assert code == 0, err
        tokens[name] = out.strip().splitlines()[-1]
    return tokens


def as_user(monkeypatch, tokens: dict[str, str], name: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SCOREGATE_TOKEN", tokens[name])


def test_policy_set_proposes_and_a_second_admin_approves(run, admins, monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("policy", "show")
    document = out.split("\n", 1)[1]
    policy = tmp_path / "policy.yaml"
    policy.write_text(document.replace("max_days: 90", "max_days: 30"))
    code, out, err = run("policy", "set", policy, "--reason", "shorter exceptions")
    assert code == 0, err
    assert "policy proposal 1 awaits a second admin" in out
    code, out, _ = run("policy", "show")
    assert out.startswith("# policy version 0")
    code, out, err = run("policy", "approve", "1", "--reason", "self")
    assert code == 8 and "four-eyes rule" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run("policy", "proposals")
    assert "pending" in out and "root" in out
    as_user(monkeypatch, admins, "root2")
    code, out, err = run("policy", "approve", "1", "--reason", "agreed")
    assert code == 0, err
    assert "policy version 1 in force" in out
    code, out, _ = run("policy", "show")
    assert out.startswith("# policy version 1") and "max_days: 30" in out
    code, out, err = run("policy", "approve", "1", "--reason", "again")
    assert code != 0 and "already approved" in err


def test_a_binary_policy_file_is_refused_in_one_line(run, admins, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    binary = tmp_path / "policy.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    code, out, err = run("policy", "set", binary, "--reason", "x")
    assert code != 0 and "not UTF-8 text" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run("policy", "proposals")
    assert "pending" not in out


def test_an_upload_counts_once_another_validator_accepts_it(run, admins, monkeypatch, credit_files, tmp_path) -> None:  # type: ignore[no-untyped-def]
    as_user(monkeypatch, admins, "dave")
    code, _, err = run(
        "register", "credit-risk", credit_files["model"], "--flavor", "sklearn",
        "--train-data", credit_files["train"], "--target", "default",
    )  # fmt: skip
    assert code == 0, err
    memo = tmp_path / "review.pdf"
    memo.write_bytes(b"%PDF-1.4 independent review")
    as_user(monkeypatch, admins, "val")
    code, out, err = run("evidence", "attach", "credit-risk@1", "external", memo)
    assert code == 0, err
    assert "attached external #1" in out and "(uploaded)" in out
    code, out, err = run("evidence", "attach", "credit-risk@1", "validation", memo)
    assert code != 0 and "recorded by scoregate's own run (`scoregate validate`)" in err
    code, out, err = run("evidence", "accept", "credit-risk@1", "1", "--reason", "mine")
    assert code == 8 and "not its uploader" in err
    as_user(monkeypatch, admins, "vera")
    code, out, err = run("evidence", "accept", "credit-risk@1", "1", "--reason", "read it")
    assert code == 0, err
    code, out, _ = run("evidence", "list", "credit-risk@1")
    assert "upload, accepted by vera" in out and "external" in out
    code, out, err = run("evidence", "accept", "credit-risk@1", "7", "--reason", "x")
    assert code == 4 and "has no evidence #7" in err


def test_only_an_admin_moves_a_risk_tier(run, admins, monkeypatch, credit_files, home: Path) -> None:  # type: ignore[no-untyped-def]
    as_user(monkeypatch, admins, "dave")
    code, _, err = run(
        "register", "credit-risk", credit_files["model"], "--flavor", "sklearn",
        "--train-data", credit_files["train"], "--target", "default", "--risk-tier", "high",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run(
        "register", "credit-risk", credit_files["model"], "--flavor", "sklearn",
        "--train-data", credit_files["train"], "--target", "default", "--risk-tier", "low",
    )  # fmt: skip
    assert code != 0 and "is in risk tier high; an admin changes it" in err
    code, _, err = run("models", "set-tier", "credit-risk", "low", "--reason", "x")
    assert code == 8 and "change the governance policy" in err
    as_user(monkeypatch, admins, "root")
    code, _, err = run("models", "set-tier", "credit-risk", "nope", "--reason", "x")
    assert code != 0 and "invalid risk tier 'nope'" in err
    code, out, err = run("models", "set-tier", "credit-risk", "medium", "--reason", "reassessed")
    assert code == 0 and "risk tier medium" in out
    registry = Registry(Settings(home=home))
    try:
        [only] = registry.list_versions("credit-risk")  # the refused registration stored nothing
        assert only.version == 1 and registry.list_models()[0].risk_tier == "medium"
    finally:
        registry.close()
