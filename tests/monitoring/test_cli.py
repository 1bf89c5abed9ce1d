"""``scoregate monitor``: reference, drift, history, as a user and as a hostile one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scoregate.config import Settings
from scoregate.monitoring.drift import DriftResult
from scoregate.registry import Registry


def one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return lines[0]


def test_reference_drift_and_history(run, credit, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run("monitor", "reference", "credit-risk@1", credit["train"])
    assert code == 0, err
    assert "recorded for credit-risk@1: 5,000 rows, 4 inputs, 3 outputs" in out
    code, out, _ = run("monitor", "reference", "credit-risk@1", credit["train"])
    assert code == 0 and "already recorded (same profile)" in out  # rebuilt bit for bit

    result_file = tmp_path / "result.json"
    code, out, err = run("monitor", "drift", "credit-risk@1", "--current", credit["shifted"], "-o", result_file)
    assert code == 0, err
    assert "1 of 7 judged columns drifted (income)" in out
    result = DriftResult.model_validate_json(result_file.read_bytes())
    assert [c.name for c in result.drifted] == ["income"]
    assert {c.role.value for c in result.columns} == {"input", "output"}  # outputs scored on the current file
    code, out, _ = run("monitor", "drift", "credit-risk@1", "--current", credit["same"], "--fail-on-drift")
    assert code == 0 and "0 of 7 judged columns drifted" in out
    code, _, _ = run("monitor", "drift", "credit-risk@1", "--current", credit["shifted"], "--fail-on-drift")
    assert code == 1

    code, out, _ = run("monitor", "history", "credit-risk@1", "--json")
    entries = json.loads(out)
    assert [len(e["drifted"]) for e in entries] == [1, 0, 1]
    assert entries[0]["result_digest"] == result.digest()
    assert entries[0]["profile_digest"] == result.profile_digest
    registry = Registry(Settings(home=home))
    assert registry.artifacts.read_bytes(entries[0]["result_digest"]) == result_file.read_bytes()
    code, out, _ = run("monitor", "show", "credit-risk@1")
    assert code == 0 and "5,000 rows of" in out and "income" in out and "proba_1" in out
    code, out, _ = run("monitor", "show", "credit-risk@1", "--json")
    assert json.loads(out)["source"]["rows"] == 5_000
    code, out, _ = run("audit", "verify")
    assert code == 0 and "chain intact" in out
    code, out, _ = run("audit", "log", "--subject", "credit-risk@1")
    assert "monitor.reference" in out and "monitor.drift" in out


def test_a_profile_is_immutable(run, credit) -> None:  # type: ignore[no-untyped-def]
    assert run("monitor", "reference", "credit-risk@1", credit["train"])[0] == 0
    code, _, err = run("monitor", "reference", "credit-risk@1", credit["same"])
    assert code == 5
    assert "already has the reference profile" in one_line_error(err)


def test_drift_without_a_profile(run, credit) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run("monitor", "drift", "credit-risk@1", "--current", credit["same"])
    assert code == 4
    assert "has no reference profile" in one_line_error(err)
    code, _, err = run("monitor", "drift", "nobody@1", "--current", credit["same"])
    assert code == 4 and "not found" in one_line_error(err)


def test_csv_and_parquet_give_the_same_figures(run, credit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("monitor", "reference", "credit-risk@1", credit["train"])[0] == 0
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run("monitor", "drift", "credit-risk@1", "--current", credit["same"], "-o", a, "--no-record")[0] == 0
    assert run("monitor", "drift", "credit-risk@1", "--current", credit["same_csv"], "-o", b, "--no-record")[0] == 0
    first, second = DriftResult.model_validate_json(a.read_bytes()), DriftResult.model_validate_json(b.read_bytes())
    assert [c.statistics for c in first.columns] == [c.statistics for c in second.columns]


def test_reference_file_exact_ks_and_calibration(run, credit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out_file = tmp_path / "r.json"
    code, _out, err = run(
        "monitor", "drift", "credit-risk@1", "--current", credit["shifted"], "--reference", credit["train"],
        "--exact-ks", "--calibrated", "--no-record", "-o", out_file,
    )  # fmt: skip
    assert code == 0, err
    result = DriftResult.model_validate_json(out_file.read_bytes())
    income = next(c for c in result.columns if c.name == "income")
    assert income.statistics["ks_exact"] == pytest.approx(income.statistics["ks"], abs=0.02)
    assert income.drifted and income.calibration is not None and result.settings.calibrated
    assert run("monitor", "history", "credit-risk@1")[1].startswith("no drift results")  # --no-record


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.parquet", "no such file"),
        (lambda d: _write(d / "garbled.parquet", b"PAR1 not really"), "cannot read"),
        (lambda d: _write(d / "empty.csv", b""), "cannot read"),
        (lambda d: _write(d / "header.csv", b"income,age,debt_ratio,purpose\n"), "has no rows"),
        (lambda d: _write(d / "rows.txt", b"x"), "unsupported extension"),
        (lambda d: _frame(d / "narrow.parquet", drop="age"), "lacks the feature column(s) age"),
        (lambda d: _frame(d / "strings.parquet", income="lots"), "column 'income' holds text, expected numbers"),
        (lambda d: _csv_with_word(d / "word.csv"), "cannot read"),
    ],
    ids=["missing", "garbled", "empty", "header-only", "extension", "missing-column", "wrong-type", "word-in-csv"],
)
def test_bad_current_files(run, credit, tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    assert run("monitor", "reference", "credit-risk@1", credit["train"])[0] == 0
    path = make(tmp_path)
    code, _, err = run("monitor", "drift", "credit-risk@1", "--current", path)
    assert code == 3, err
    assert message in one_line_error(err)
    code, _, err = run("monitor", "reference", "credit-risk@1", path)
    assert code == 3 and message in one_line_error(err)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _frame(path: Path, *, drop: str | None = None, **overrides: object) -> Path:
    from tests.conftest import make_credit_data

    frame = make_credit_data(200, seed=3)
    if drop:
        frame = frame.drop(columns=drop)
    frame = frame.assign(**overrides)
    frame.to_parquet(path, index=False)
    return path


def _csv_with_word(path: Path) -> Path:
    from tests.conftest import make_credit_data

    frame = make_credit_data(200_000, seed=4).astype({"income": object})
    frame.loc[150_000, "income"] = "n/a?"  # far past the first block Arrow looks at
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from-log", "--since", "yesterday"], "invalid --since 'yesterday'"),
        (["--from-log", "--since", "0h"], "invalid --since"),
        (["--from-log", "--between", "2026-01-02", "2026-01-01"], "is not before"),
        (["--from-log", "--between", "soon", "2026-01-01"], "invalid --between start"),
        ([], "exactly one of --current FILE and --from-log"),
        (["--from-log", "--current", "x.parquet"], "exactly one of"),
        (["--current", "x.parquet", "--since", "1h"], "go with --from-log"),
        (["--current", "x.parquet", "--statistic", "magic"], "invalid --statistic 'magic'"),
        (["--current", "x.parquet", "--statistic", "chi_square"], "not an effect size"),
        (["--current", "x.parquet", "--alpha", "2"], "invalid drift settings"),
        (["--current", "x.parquet", "--exact-ks"], "--exact-ks needs raw values"),
        (["--from-log", "--exact-ks", "--reference", "x.parquet"], "--exact-ks needs raw values"),
    ],
)
def test_bad_arguments(run, credit, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run("monitor", "drift", "credit-risk@1", *args)
    assert code == 2, err
    assert message in one_line_error(err)


def test_a_tampered_profile_is_refused(run, credit, home: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("monitor", "reference", "credit-risk@1", credit["train"])[0] == 0
    registry = Registry(Settings(home=home))
    entries = [p for p in (home / "artifacts" / "sha256").rglob("*") if p.is_file()]
    profile_blob = next(p for p in entries if p.read_bytes().startswith(b'{"chunk_rows"'))
    profile_blob.write_bytes(profile_blob.read_bytes().replace(b'"nulls":0', b'"nulls":1', 1))
    registry.close()
    for cached in (home / "cache").rglob(profile_blob.name):
        cached.unlink()
    code, _, err = run("monitor", "drift", "credit-risk@1", "--current", credit["same"])
    assert code == 5 and "integrity check failed" in one_line_error(err)


def test_scoring_rows_the_model_cannot_take_is_one_line(run, credit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("monitor", "reference", "credit-risk@1", credit["train"])[0] == 0
    frame = pd.read_parquet(credit["same"])
    frame.loc[0, "income"] = np.nan  # income is not nullable: the model is not asked to score it
    frame.to_parquet(tmp_path / "holes.parquet", index=False)
    code, _, err = run("monitor", "drift", "credit-risk@1", "--current", tmp_path / "holes.parquet")
    assert code == 3 and "give --no-score" in one_line_error(err)
    code, _out, err = run("monitor", "drift", "credit-risk@1", "--current", tmp_path / "holes.parquet", "--no-score")
    assert code == 0, err
    assert "outputs were not compared" in err


def test_new_levels_and_values_out_of_range(run, credit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("monitor", "reference", "credit-risk@1", credit["train"])[0] == 0
    frame = pd.read_parquet(credit["same"])
    frame.loc[:599, "purpose"] = "crypto"  # a level training never saw
    frame.loc[:299, "age"] = 120  # above the training maximum
    frame.to_parquet(tmp_path / "odd.parquet", index=False)
    out_file = tmp_path / "odd.json"
    code, _, err = run("monitor", "drift", "credit-risk@1", "--current", tmp_path / "odd.parquet", "-o", out_file)
    assert code == 0, err
    result = DriftResult.model_validate_json(out_file.read_bytes())
    by_name = {c.name: c for c in result.columns}
    assert by_name["purpose"].quality.other_share_current == pytest.approx(0.2) and by_name["purpose"].drifted
    assert by_name["age"].quality.above_range_share == pytest.approx(0.1)
    assert by_name["prediction"].current_count == 3_000  # every row was scored


def test_recording_needs_the_callers_token_and_role(run, credit, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _, out, _ = run("init", "--name", "root")
    admin = out.strip().splitlines()[1]
    monkeypatch.setenv("SCOREGATE_TOKEN", admin)
    _, out, _ = run("users", "add", "watcher", "--role", "viewer")
    viewer = out.strip().splitlines()[-1]
    assert run("monitor", "reference", "credit-risk@1", credit["train"])[0] == 0
    monkeypatch.delenv("SCOREGATE_TOKEN")
    code, _, err = run("monitor", "drift", "credit-risk@1", "--current", credit["same"])
    assert code == 7 and "API token is required" in one_line_error(err)
    monkeypatch.setenv("SCOREGATE_TOKEN", viewer)
    code, _, err = run("monitor", "reference", "credit-risk@1", credit["same"])
    assert code == 8 and "may not register" in one_line_error(err)  # refused before reading the data
    code, _, err = run("monitor", "drift", "credit-risk@1", "--current", credit["same"])
    assert code == 8 and "watcher" in one_line_error(err) and "may not register" in err
    code, out, err = run("monitor", "drift", "credit-risk@1", "--current", credit["same"], "--no-record")
    assert code == 0, err  # reading and comparing needs no role
    assert run("monitor", "history", "credit-risk@1")[1].startswith("no drift results")
