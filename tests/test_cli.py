"""The CLI story of the foundation issue, in-process: output, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def test_register_list_show_alias_predict_retire(run, credit_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = credit_files
    code, out, _ = run(
        "register",
        "credit-risk",
        f["model"],
        "--flavor",
        "sklearn",
        "--train-data",
        f["train"],
        "--target",
        "default",
        "--metric",
        "auc=0.91",
        "--description",
        "PD model",
        "--owner",
        "alice",
        "--risk-tier",
        "high",
        "--tag",
        "team=risk",
    )
    assert code == 0 and "registered credit-risk@1" in out
    code, out, _ = run(
        "register",
        "credit-risk",
        f["model"],
        "--flavor",
        "sklearn",
        "--train-data",
        f["train_csv"],
        "--target",
        "default",
    )
    assert code == 0 and "credit-risk@2" in out

    code, out, _ = run("models", "list")
    assert code == 0 and "credit-risk" in out and "alice" in out and "high" in out
    code, out, _ = run("models", "list", "--json")
    assert json.loads(out)[0]["latest_version"] == 2
    code, out, _ = run("models", "show", "credit-risk@1")
    assert code == 0 and "auc=0.91" in out and "purpose" in out and "car, education, home" in out
    code, out, _ = run("models", "versions", "credit-risk")
    assert code == 0 and out.count("│ registered") == 2

    assert run("alias", "set", "credit-risk@2", "staging")[0] == 0
    code, out, _ = run("alias", "list")
    assert "staging" in out
    code, out, _ = run("predict", "credit-risk@staging", "--input", f["rows"])
    assert code == 0 and "credit-risk@2: 5 rows" in out and "proba_1" in out
    rows = pd.read_json(f["rows"])
    for suffix in (".csv", ".parquet"):
        path = tmp_path / f"rows{suffix}"
        rows.to_csv(path, index=False) if suffix == ".csv" else rows.to_parquet(path)
        destination = tmp_path / f"out{suffix}.json"
        code, out, _ = run("predict", "credit-risk@2", "--input", path, "--output", destination)
        assert code == 0, out
        assert len(json.loads(destination.read_text())) == 5

    code, out, _ = run("schema", "credit-risk@1")
    schema_file = tmp_path / "schema.json"
    edited = json.loads(out)
    edited["features"][1]["maximum"] = 120
    schema_file.write_text(json.dumps(edited))
    code, out, err = run("register", "credit-risk", f["model"], "--flavor", "sklearn", "--schema", schema_file)
    assert code == 0, err

    assert run("alias", "delete", "credit-risk", "staging")[0] == 0
    code, out, _ = run("retire", "credit-risk@1", "--reason", "superseded")
    assert code == 0 and "retired credit-risk@1" in out


def test_errors_are_one_line_with_exit_codes(run, credit_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = credit_files
    assert (
        run(
            "register",
            "credit-risk",
            f["model"],
            "--flavor",
            "sklearn",
            "--train-data",
            f["train"],
            "--target",
            "default",
        )[0]
        == 0
    )
    bad_rows = tmp_path / "bad.json"
    bad_rows.write_text(json.dumps([{"income": "x", "age": 30, "debt_ratio": 0.2, "purpose": "car"}]))
    cases = [
        (("models", "show", "nope@1"), 4, "model 'nope' not found"),
        (("models", "show", "credit-risk@5"), 4, "credit-risk@5 not found"),
        (("models", "show", "bad ref!"), 2, "invalid model reference"),
        (
            ("predict", "credit-risk@1", "--input", bad_rows),
            3,
            "income (row 0): expected a number, got str 'x' [rule: type]",
        ),
        (("register", "credit-risk", f["model"], "--flavor", "onnx", "--train-data", f["train"]), 3, "onnx"),
        (("register", "credit-risk", f["model"], "--flavor", "keras"), 3, "unknown flavor 'keras'"),
        (
            ("register", "credit-risk", f["model"], "--flavor", "sklearn", "--train-data", tmp_path / "x.csv"),
            3,
            "cannot read training data",
        ),
        (
            (
                "register",
                "credit-risk",
                f["model"],
                "--flavor",
                "sklearn",
                "--train-data",
                f["train"],
                "--metric",
                "auc",
            ),
            3,
            "expected KEY=VALUE",
        ),
        (("register", "credit-risk", f["model"], "--flavor", "sklearn"), 3, "give --train-data"),
        (("retire", "credit-risk@1", "--reason", ""), 3, "reason is required"),
        (
            ("--database-url", "postgresql://x@127.0.0.1:1/none", "models", "list"),
            6,
            "cannot reach the metadata database",
        ),
    ]
    for args, expected_code, expected_message in cases:
        code, out, err = run(*args)
        assert code == expected_code, (args, code, out, err)
        assert expected_message in " ".join(err.split()), (args, err)
        assert "Traceback" not in err
    assert run("alias", "set", "credit-risk@1", "staging")[0] == 0
    code, _, err = run("retire", "credit-risk@1", "--reason", "old")
    assert code == 5 and "still holds alias" in err


def test_serve_refuses_bad_options_before_starting(run) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (("serve", "--port", "-1"), "invalid --port -1: must be 0-65535"),
        (("serve", "--workers", "0"), "invalid --workers 0: must be 1-256"),
        (
            ("serve", "--max-queued-requests", "0"),
            "invalid --max-queued-requests 0: must be greater than or equal to 1",
        ),
        (("serve", "--max-request-rows", "0"), "invalid --max-request-rows 0: must be greater than or equal to 1"),
        (("serve", "--scoring", "gpu"), "invalid --scoring 'gpu': must be 'thread' or 'inline'"),
        (("serve", "--log-durability", "maybe"), "invalid --log-durability 'maybe': must be 'sync', 'os' or 'off'"),
        (("serve", "--token-role", "boss"), "invalid --token-role 'boss': must be any or one of the roles"),
        (("serve", "--header-timeout", "0"), "invalid --header-timeout 0.0: must be greater than 0"),
        (("serve", "--direct-below-ms", "-1"), "invalid --direct-below-ms -1.0: must be 0 or more"),
        (("serve", "--poll-interval", "0"), "must be greater than 0"),
        (("serve", "credit@"), "invalid model reference"),
    ]
    for args, message in cases:
        code, out, err = run(*args)
        assert code == (2 if "reference" in message else 3), (args, code, out, err)
        assert message in " ".join(err.split()), (args, err)
        assert "Traceback" not in err
