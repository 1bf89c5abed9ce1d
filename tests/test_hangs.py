"""Every command bounds its time: profile, loadtest and register stop a hanging model at their
timeout with one line, exit non-zero, and (profile, loadtest) a report of what ran."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.hanging import hanging_scorer, stored

pytestmark = pytest.mark.timeout(240)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _register(run: Any, folder: Path, train: Path, timeout: float = 30) -> tuple[int, str, str]:
    return run(
        "register",
        "hang",
        folder,
        "--flavor",
        "python",
        "--train-data",
        train,
        "--target",
        "default",
        "--timeout",
        timeout,
    )


def _children(marker: str) -> list[psutil.Process]:
    """This process's live descendants whose command line holds ``marker``."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if marker in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
    return found


def _no_model_process_left_running() -> None:
    """The stopped worker was killed: no worker process of this one is left spinning."""
    for worker in _children("scoregate.isolation"):
        with contextlib.suppress(psutil.NoSuchProcess):
            assert worker.cpu_percent(interval=0.5) < 50, worker


@pytest.mark.parametrize("how", ["sleep", "spin"])
def test_profile_stops_a_model_that_hangs_in_its_first_request(run, credit_files, tmp_path: Path, how: str) -> None:  # type: ignore[no-untyped-def]
    # answers the 100 rows registration scores; hangs on a request of one row
    folder = hanging_scorer(tmp_path / "scorer", how=how, when_rows=1)
    assert _register(run, folder, credit_files["train"])[0] == 0
    code, out, err = run("profile", "hang@1", "--call-timeout", "2", "-o", tmp_path / "prof")
    assert code == 1, (out, err)
    line = _one_error_line(err)
    assert "hang@1 did not answer within 2 s; profiled 0 of 200 requests" in line
    report = json.loads((tmp_path / "prof" / "profile.json").read_text())
    assert report["complete"] is False and report["passed"] is False
    assert report["requests"] == 0 and report["requests_planned"] == 200
    assert report["stopped"] in line
    # the warm-up request's profile shows where it hung
    assert report["rate_limiting_step"] == "framework call"
    hung_in = "time.sleep" if how == "sleep" else "(hang)"
    assert hung_in in report["hottest_function"]["function"], report["hottest_function"]
    assert (tmp_path / "prof" / "flamegraph.html").is_file() and (tmp_path / "prof" / "profile.prof").is_file()
    assert "STOPPED" in (tmp_path / "prof" / "profile.txt").read_text()
    assert "recorded profile run" in " ".join(out.split()) and "does not count for the policy" in out
    _no_model_process_left_running()


def test_profile_reports_the_requests_that_ran_before_the_hang(run, credit_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = hanging_scorer(tmp_path / "scorer", how="spin", after_calls=3)  # warm-up + 2 requests answer
    assert _register(run, folder, credit_files["train"])[0] == 0
    code, out, err = run("profile", "hang@1", "--requests", "50", "--call-timeout", "2", "--no-record", "-o", "p")
    assert code == 1, (out, err)
    assert "did not answer within 2 s; profiled 2 of 50 requests" in _one_error_line(err)
    report = json.loads((tmp_path / "p" / "profile.json").read_text())
    assert report["requests"] == 2 and report["complete"] is False
    assert "(hang)" in report["hottest_function"]["function"]


def test_profile_of_a_model_that_holds_the_interpreter_lock_still_reports(run, credit_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = hanging_scorer(tmp_path / "scorer", how="spin-in-c", when_rows=1)
    assert _register(run, folder, credit_files["train"])[0] == 0
    code, out, err = run("profile", "hang@1", "--timeout", "3", "--no-record", "-o", "p")
    assert code == 1, (out, err)
    assert "hang@1 did not answer within 3 s; profiled 0 of 200 requests" in _one_error_line(err)
    report = json.loads((tmp_path / "p" / "profile.json").read_text())
    assert report["complete"] is False and report["top_own"] == []
    assert any("no call statistics" in note for note in report["notes"])
    _no_model_process_left_running()


def test_profile_stops_a_model_that_hangs_while_loading(run, credit_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "hang-on-load"
    folder = hanging_scorer(tmp_path / "scorer", when_rows=1, load_hangs_if=marker)
    assert _register(run, folder, credit_files["train"])[0] == 0
    marker.touch()
    code, out, err = run("profile", "hang@1", "--timeout", "2", "--no-record", "-o", "p")
    assert code == 1, (out, err)
    assert "hang@1 did not load within 2 s; profiled 0 of 200 requests" in _one_error_line(err)
    assert json.loads((tmp_path / "p" / "profile.json").read_text())["stopped"].startswith("hang@1 did not load")


@pytest.mark.parametrize("doing", ["load", "score 100 rows"])
def test_register_refuses_a_hanging_model_and_stores_nothing(run, credit_files, tmp_path: Path, doing: str) -> None:  # type: ignore[no-untyped-def]
    f = credit_files
    assert run("register", "credit", f["model"], "--flavor", "sklearn", "--train-data", f["train"])[0] == 0
    before = stored(tmp_path / "home")
    marker = f["train"] if doing == "load" else None  # a file that exists: the constructor hangs
    folder = hanging_scorer(tmp_path / "scorer", how="spin", load_hangs_if=marker)
    code, out, err = _register(run, folder, credit_files["train"], timeout=2)
    assert code == 1, (out, err)
    line = _one_error_line(err)
    assert f"the python model did not {doing}" in line and "within 2 s: registration refused, nothing stored" in line
    assert stored(tmp_path / "home") == before
    _no_model_process_left_running()


def _no_server_left() -> None:
    assert _children("scoregate.cli.loadtest_server") == []


@pytest.mark.parametrize("how", ["sleep", "spin"])
def test_loadtest_of_a_model_that_stops_answering_returns_after_the_run(
    run, credit_files, tmp_path: Path, how: str
) -> None:  # type: ignore[no-untyped-def]
    # answers registration and the server's three warm-up calls, then hangs on every request
    folder = hanging_scorer(tmp_path / "scorer", how=how, after_calls=3)
    assert _register(run, folder, credit_files["train"])[0] == 0
    code, out, err = run("loadtest", "hang@1", "--duration", "2s", "-o", tmp_path / "load")
    assert code == 1, (out, err)
    line = _one_error_line(err)
    assert "requests to hang@1 got no answer" in line and "still waiting when the run ended" in line
    report = json.loads((tmp_path / "load" / "report.json").read_text())
    assert report["passed"] is False and report["within_budget"] is False
    assert report["unanswered"] >= 1 and report["overall"]["failures"] == report["overall"]["requests"]
    assert report["overall"]["p95_ms"] > report["latency_budget_ms"]  # they waited, over budget
    assert (tmp_path / "load" / "report.html").is_file()
    assert "recorded loadtest run" in out
    _no_server_left()


def test_loadtest_counts_requests_that_time_out_as_failures_over_budget(run, credit_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = hanging_scorer(tmp_path / "scorer", after_calls=3)
    assert _register(run, folder, credit_files["train"])[0] == 0
    code, out, err = run(
        "loadtest", "hang@1", "--duration", "3s", "--users", "2", "--rps", "4", "--request-timeout", "1",
        "--no-record", "-o", tmp_path / "load",
    )  # fmt: skip
    assert code == 1, (out, err)
    assert "timed out after 1 s" in _one_error_line(err)
    report = json.loads((tmp_path / "load" / "report.json").read_text())
    assert report["timed_out"] >= 2 and report["request_timeout_s"] == 1
    assert report["overall"]["failures"] == report["overall"]["requests"]
    assert report["overall"]["p50_ms"] >= 1000  # the percentiles count the time they waited
    assert any(p.startswith("p95") for p in report["problems"])
    _no_server_left()


def test_loadtest_of_a_model_that_never_becomes_ready_reports_that(run, credit_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = hanging_scorer(tmp_path / "scorer", how="spin", when_rows=1)  # the warm-up row hangs
    assert _register(run, folder, credit_files["train"])[0] == 0
    code, out, err = run("loadtest", "hang@1", "--duration", "2s", "--timeout", "3", "-o", tmp_path / "load")
    assert code == 1, (out, err)
    line = _one_error_line(err)
    assert "the scoring server for hang@1 did not become ready within 3 s" in line
    report = json.loads((tmp_path / "load" / "report.json").read_text())
    assert report["passed"] is False and report["within_budget"] is False and report["overall"]["requests"] == 0
    assert report["stopped"] in line
    _no_server_left()


def test_predict_stops_a_hanging_model_and_writes_nothing(run, credit_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = hanging_scorer(tmp_path / "scorer", how="spin", when_rows=5)  # the five rows of rows.json
    assert _register(run, folder, credit_files["train"])[0] == 0
    code, out, err = run("predict", "hang@1", "-i", credit_files["rows"], "-o", tmp_path / "out.csv", "--timeout", "2")
    assert code == 1, (out, err)
    assert "hang@1 did not score 5 rows within 2 s; it was stopped" in _one_error_line(err)
    assert not (tmp_path / "out.csv").exists()
    _no_model_process_left_running()


def test_registration_profile_stops_a_model_that_hangs_on_the_full_data(run, credit_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The trial's 100 rows pass; scoring every training row (one frame of all of them) hangs: the
    version is registered without a profile, with a warning, and no model process is left."""
    import pandas as pd

    rows = len(pd.read_parquet(credit_files["train"]))
    folder = hanging_scorer(tmp_path / "scorer", how="spin", when_rows=rows)
    code, out, err = run(
        "register", "hang", folder, "--flavor", "python", "--train-data", credit_files["train"],
        "--target", "default", "--profile-timeout", "3",
    )  # fmt: skip
    assert code == 0, (out, err)
    assert "registered hang@1" in out
    assert "warning: no reference profile: profiling the training data took longer than 3 s" in err
    assert "monitor reference hang@1" in err and "Traceback" not in err
    assert run("monitor", "show", "hang@1")[0] == 4
    _no_model_process_left_running()
