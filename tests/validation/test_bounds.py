"""Every validation run is bounded, and bad settings are refused before any work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scoregate.errors import InvalidInputError
from scoregate.validation import ValidationSettings, validate
from tests.validation.helpers import python_model

#: hangs on every call once SG_TEST_HANG_NOW is set (after registration scored it)
HANGS_IN_PROCESS = """
    import os
    import time

    import numpy as np
    import pandas as pd

    class Scorer:
        def predict(self, frame):
            if os.environ.get("SG_TEST_HANG_NOW"):
                time.sleep(120)
            p = 1 / (1 + np.exp(-(3 * frame["debt_ratio"].to_numpy(dtype=float) - 1)))
            return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_0": 1 - p, "proba_1": p})
"""

#: answers every call, slowly
SLOW_EVERY_CALL = """
    import time

    import numpy as np
    import pandas as pd

    class Scorer:
        def predict(self, frame):
            time.sleep(0.3)
            p = 1 / (1 + np.exp(-(3 * frame["debt_ratio"].to_numpy(dtype=float) - 1)))
            return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_0": 1 - p, "proba_1": p})
"""


def test_a_model_hanging_in_process_stops_the_run_with_a_report(
    registry: Any, credit_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = python_model(registry, tmp_path / "hang", "hangs", HANGS_IN_PROCESS, credit_files)
    monkeypatch.setenv("SG_TEST_HANG_NOW", "1")
    report = validate(registry, version.ref, timeout_s=0.5, out_dir=tmp_path / "out")
    assert report.stopped == "the model hung: 3 cases in a row gave no answer within 0.5 s (timeout_s)"
    hung = [c for c in report.cases if c.outcome == "timeout"]
    assert [c.case.id for c in hung] == [c.case.id for c in report.cases[:3]]
    assert all(c.status == "fail" and c.reason.startswith("hung") for c in hung)
    assert all(c.outcome == "not run" and c.status == "skip" for c in report.cases[3:])
    assert all(c.status == "skip" and c.reason.startswith("not run: the model hung") for c in report.checks)
    assert not report.passed
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["stopped"] == report.stopped and len(written["cases"]) == len(report.cases)


def test_the_whole_run_is_bounded(registry: Any, credit_files: dict[str, Path], tmp_path: Path) -> None:
    version = python_model(registry, tmp_path / "slow", "slowpoke", SLOW_EVERY_CALL, credit_files)
    report = validate(registry, version.ref, timeout_s=5.0, max_duration_s=2.0, reference="none")
    assert report.stopped == "the run reached its bound of 2 s (max_duration_s)"
    not_run = [c for c in report.cases if c.outcome == "not run"]
    assert not_run and len(not_run) < len(report.cases)
    assert all(c.status == "skip" for c in not_run) and not report.passed
    assert {c.status for c in report.checks} == {"skip"}
    assert json.loads(report.to_json_bytes())["settings"]["max_duration_s"] == 2.0


def test_cli_validate_stops_a_hanging_model_with_one_error_line(
    run: Any, credit_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "hang"
    folder.mkdir()
    (folder / "scorer.py").write_text(HANGS_IN_PROCESS.replace("\n    ", "\n"))
    code, _, err = run(
        "register", "hangs", folder, "--flavor", "python", "--train-data", credit_files["train"], "--target", "default"
    )
    assert code == 0, err
    monkeypatch.setenv("SG_TEST_HANG_NOW", "1")
    code, out, err = run("validate", "hangs@1", "--timeout", "0.5", "-o", tmp_path / "out", "--no-record")
    assert code == 1
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == ["error: stopped early: the model hung: 3 cases in a row gave no answer within 0.5 s (timeout_s)"]
    assert "FAILED" in out and (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--timeout", "0"), "invalid timeout_s 0.0: must be greater than 0"),
        (("--timeout", "-1"), "invalid timeout_s -1.0: must be greater than 0"),
        (("--max-duration", "0"), "invalid max_duration_s 0.0: must be greater than 0"),
        (("--atol", "-1e-6"), "invalid atol -1e-06: must be at least 0"),
        (("--atol", "0", "--rtol", "0"), "invalid atol/rtol: both are 0"),
        (("--independent-rtol", "-1"), "invalid independent_rtol -1.0: must be at least 0"),
        (("--atol", "nan"), "invalid atol nan: must be a finite number"),
        (("--latency-budget-ms", "0"), "invalid latency_budget_ms 0.0: must be greater than 0"),
        (("--memory-calls", "0"), "invalid memory_calls 0: must be at least 2"),
        (("--memory-limit-mb", "-5"), "invalid memory_limit_mb -5.0: must be greater than 0"),
        (("--reference-rows", "0"), "invalid reference_rows 0: must be at least 1"),
        (("--seed", "-1"), "invalid seed -1: must be at least 0"),
        (("--reference", "bogus"), "invalid reference 'bogus': use none, subprocess, scorer, onnx"),
        (("--reference", "scorer"), "give the scorer file (--reference-scorer FILE)"),
        (("--reference-scorer", "x.py"), "a scorer file is used with reference 'scorer', not 'subprocess'"),
        (("--reference", "scorer", "--reference-scorer", "missing.py"), "reference scorer missing.py does not exist"),
        (("--reference", "scorer", "--reference-scorer", "notes.txt"), "expected a .py file"),
        (("--golden", "garbage.json"), "is not valid JSON"),
        (("--golden", "garbage.csv"), "no expected-output column"),
        (("--golden", "garbage.parquet"), "is not a readable parquet table"),
        (("--golden", "garbage.txt"), "use .json, .jsonl, .csv, .parquet"),
        (("--golden", "nowhere.json"), "golden file nowhere.json does not exist"),
        (("--golden", "empty.json"), "holds no cases"),
        (("-o", "a-file/report"), "cannot write the report to a-file/report"),
    ],
)
def test_bad_validate_input_is_refused_before_any_work(
    run: Any, credit_files: dict[str, Path], home: Path, options: tuple[str, ...], message: str
) -> None:
    work = home.parent  # the CLI runs from here
    for name, text in {
        "garbage.json": "{not json",
        "garbage.csv": "a,b\n1,2\n",
        "garbage.parquet": "not parquet",
        "garbage.txt": "x",
        "empty.json": "[]",
        "a-file": "a file, not a folder",
        "notes.txt": "x",
    }.items():
        (work / name).write_text(text)
    code, _, err = run(
        "register", "credit-risk", credit_files["model"], "--flavor", "sklearn", "--train-data", credit_files["train"]
    )
    assert code == 0, err
    code, out, err = run("validate", "credit-risk@1", *options)
    assert code == 3, out + err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (work / "scoregate-reports").exists()  # nothing ran, nothing written
    code, out, _ = run("evidence", "list", "credit-risk@1")
    assert code == 0 and "validation" not in out  # nothing attached


def test_settings_are_checked_in_python_too() -> None:
    with pytest.raises(InvalidInputError, match="invalid timeout_s 0: must be greater than 0"):
        ValidationSettings(timeout_s=0)
    with pytest.raises(InvalidInputError, match="unknown validation setting"):
        ValidationSettings.from_keywords(tolerance=1)
    assert ValidationSettings.from_keywords(timeout=3).timeout_s == 3  # the older keyword


def test_cli_validate_with_a_reference_that_hangs(
    run: Any, credit_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import shutil
    import textwrap

    from tests.validation.test_references import HANGS_IN_REFERENCE_ONLY

    folder = tmp_path / "hang"
    folder.mkdir()
    (folder / "scorer.py").write_text(textwrap.dedent(HANGS_IN_REFERENCE_ONLY))
    shutil.copy(credit_files["model"], folder / "model.joblib")
    monkeypatch.setenv("SG_TEST_HOST_PID", str(os.getpid()))
    monkeypatch.setenv("SG_TEST_PIDS", str(tmp_path / "pids"))
    code, _, err = run(
        "register", "hangs", folder, "--flavor", "python", "--train-data", credit_files["train"], "--target", "default"
    )
    assert code == 0, err
    monkeypatch.setenv("SG_TEST_HANG", "score")  # registration scores in a worker process too
    code, out, _ = run("validate", "hangs@1", "--timeout", "1", "-o", tmp_path / "out", "--no-record")
    assert code == 1
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == ["error: the subprocess reference process did not answer within 3 s of scoring: killed"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["parity"]["outcome"] == "failed" and report["counts"]["fail"] == 0
