"""Bad input at the command line: one line naming the option and the rule, a non-zero exit,
no traceback, and nothing stored changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hanging import stored

LONG = "credit@" + "a" * 10_000


def _cases(files: dict[str, Path], tmp: Path) -> list[tuple[tuple[object, ...], int, str]]:
    binary = tmp / "policy.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81 not text")
    binary.with_suffix(".json").write_bytes(binary.read_bytes())
    folder = tmp / "a-folder.csv"
    folder.mkdir()
    register = ("register", "credit", files["model"], "--flavor", "sklearn", "--train-data", files["train"])
    return [
        (("models", "show", "credit@99999999999999999999999"), 2, "a version is a whole number from 1 to 2147483647"),
        (("models", "show", "credit@2147483648"), 2, "a version is a whole number from 1 to 2147483647"),
        (("models", "show", "credit@²"), 2, "invalid model reference 'credit@²'"),
        (("models", "show", LONG), 2, "'… (10007 characters): expected NAME"),
        (("predict", "credit@1", "-i", files["rows"], "-o", tmp / "missing" / "out.csv"), 3, "does not exist"),
        (("predict", "credit@1", "-i", binary.with_suffix(".json")), 3, "input file"),
        (("predict", "credit@1", "-i", files["rows"], "-o", folder), 3, "it is a folder"),
        (("policy", "set", binary, "--reason", "why"), 3, "is not UTF-8 text (byte 0 is 0xff)"),
        (("check", "credit@1", "--alias", "1bad"), 2, "invalid alias '1bad'"),
        (("loadtest", "credit@1", "--rows", "0"), 3, "invalid --rows 0: must be from 1 to 10000"),
        (("loadtest", "credit@1", "--users", "0"), 3, "invalid --users 0: must be from 1 to 1000"),
        (("loadtest", "credit@1", "--rps", "-1"), 3, "invalid --rps -1: must be from 0.001 to 100000"),
        (("loadtest", "credit@1", "--rps", "nan"), 3, "invalid --rps nan"),
        (("loadtest", "credit@1", "--duration", "0s"), 3, "invalid --duration 0: must be from 1 to 86400 seconds"),
        (("loadtest", "credit@1", "--duration", "soon"), 3, "invalid duration 'soon'"),
        (("loadtest", "credit@1", "--budget-ms", "0"), 3, "invalid --budget-ms 0: must be a positive, finite number"),
        (("loadtest", "credit@1", "--budget-ms", "-5"), 3, "invalid --budget-ms -5"),
        (("loadtest", "credit@1", "--budget-ms", "nan"), 3, "invalid --budget-ms nan"),
        (("loadtest", "credit@1", "--interval", "0"), 3, "invalid --interval 0"),
        (("loadtest", "credit@1", "--timeout", "0"), 3, "invalid --timeout 0: must be a positive, finite number"),
        (("loadtest", "credit@1", "--request-timeout", "-1"), 3, "invalid --request-timeout -1"),
        (("profile", "credit@1", "--requests", "0"), 3, "invalid --requests 0: must be from 1 to 100000"),
        (("profile", "credit@1", "--requests", "100000000"), 3, "invalid --requests 100000000"),
        (("profile", "credit@1", "--rows", "-1"), 3, "invalid --rows -1: must be from 1 to 10000"),
        (("profile", "credit@1", "--top", "0"), 3, "invalid --top 0: must be at least 1"),
        (("profile", "credit@1", "--timeout", "0"), 3, "invalid --timeout 0: must be a positive, finite number"),
        (("profile", "credit@1", "--timeout", "-3"), 3, "invalid --timeout -3"),
        (("profile", "credit@1", "--call-timeout", "inf"), 3, "invalid --call-timeout inf"),
        (("profile", "credit@1", "--timeout", "1e300"), 3, "invalid --timeout 1e+300: must be a positive, finite"),
        (("profile", "credit@1", "--requests", "100000", "--rows", "10000"), 3, "must be at most 1000000"),
        (("loadtest", "credit@1", "--budget-ms", "1e12"), 3, "of ms, at most 3.6e+06"),
        ((*register, "--latency-budget-ms", "0"), 3, "invalid --latency-budget-ms 0: must be a positive, finite"),
        ((*register, "--latency-budget-ms", "-5"), 3, "invalid --latency-budget-ms -5"),
        ((*register, "--latency-budget-ms", "inf"), 3, "invalid --latency-budget-ms inf"),
        ((*register, "--latency-budget-ms", "nan"), 3, "invalid --latency-budget-ms nan"),
        ((*register, "--timeout", "0"), 3, "invalid --timeout 0"),
        ((*register, "--timeout", "-1"), 3, "invalid --timeout -1"),
        ((*register, "--timeout", "1e9"), 3, "number of seconds, at most 604800"),
        ((*register, "--metric", "auc=nan"), 3, "invalid metric 'auc' nan: must be a finite number"),
        ((*register, "--metric", "auc=inf"), 3, "invalid metric 'auc' inf: must be a finite number"),
        ((*register, "--metric", "auc=-inf"), 3, "invalid metric 'auc' -inf"),
        ((*register, "--parent", "0"), 3, "invalid --parent 0: must be from 1 to 2147483647"),
        ((*register, "--parent", "99999999999"), 3, "invalid --parent 99999999999"),
    ]


def test_bad_input_gets_one_line_and_changes_nothing(run, credit_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = credit_files
    assert run("register", "credit", f["model"], "--flavor", "sklearn", "--train-data", f["train"])[0] == 0
    before = stored(tmp_path / "home")
    for args, expected_code, message in _cases(f, tmp_path):
        code, out, err = run(*args)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == expected_code, (args[:4], code, out, err[:500])
        assert len(lines) == 1 and lines[0].startswith("error: "), (args[:4], err[:500])
        assert message in lines[0], (args[:4], lines[0][:300])
        assert "Traceback" not in err and len(lines[0]) < 400, args[:4]
        assert stored(tmp_path / "home") == before, args[:4]
    assert not (tmp_path / "missing").exists()


def test_register_refuses_non_finite_numbers_through_the_python_api_too(registry, credit_files) -> None:  # type: ignore[no-untyped-def]
    from scoregate.errors import InvalidInputError

    f = credit_files
    common = {"flavor": "sklearn", "train_data": f["train"], "target": "default"}
    for bad in ({"metrics": {"auc": float("nan")}}, {"latency_budget_ms": float("inf")}, {"timeout": 0}):
        with pytest.raises(InvalidInputError, match="must be a"):
            registry.register("credit", f["model"], **common, **bad)
    assert registry.list_models() == []
