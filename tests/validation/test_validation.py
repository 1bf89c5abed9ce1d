"""Validation suite: good models pass, broken ones fail with the right case named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from scoregate.flavors.base import Scorer
from scoregate.registry.records import LoadedModel
from scoregate.validation import CHECKS, PythonTarget, case_set_digest, generate_cases, validate, write_golden
from scoregate.validation.cases import REFUSE, SCORE, frame_to_rows
from tests.validation.helpers import credit_schema, failed_ids, python_model


def test_good_sklearn_model_passes_with_report(registry: Any, good: Any, tmp_path: Path) -> None:
    report = validate(registry, good.ref, out_dir=tmp_path / "report")
    assert report.passed, [(c.case.id, c.reason) for c in report.failures]
    by_id = {c.case.id: c for c in report.cases}
    # stated expectations, and the outcome each got
    # the contract's split: past a validity limit is refused, past the training range is scored and flagged
    assert by_id["age:below_minimum"].case.expect == REFUSE and by_id["age:below_minimum"].outcome == "refused"
    for case_id in ("income:below_observed", "income:far_above_observed", "age:above_observed"):
        assert by_id[case_id].case.expect == SCORE and by_id[case_id].outcome == "scored", case_id
        assert by_id[case_id].status == "pass" and "flagged" in by_id[case_id].reason, case_id
    assert "income:below_minimum" not in by_id and "income:extreme_positive" not in by_id  # no inferred limit
    # the pipeline's OneHotEncoder(handle_unknown="ignore") takes an unknown level: scored and flagged
    unseen = by_id["purpose:unseen_category"]
    assert unseen.case.expect == SCORE and unseen.case.flag == "unseen_category" and unseen.status == "pass"
    assert by_id["age:wrong_type_fraction"].outcome == "refused"
    assert by_id["batch:large"].outcome == "scored"
    assert by_id["batch:empty"].status == "pass"
    assert {"income:null", "income:missing", "income:not_finite_nan", "reference:sample"} <= set(by_id)
    # parity against the artifact loaded in another process: every scored row compared, all equal
    assert report.parity.reference == "subprocess"
    assert report.parity.rows_compared > 2000 and report.parity.mismatches == 0
    data = json.loads(report.to_json_bytes())
    assert data["passed"] is True and data["model"] == "credit-risk@1" and data["seed"] == 0
    assert data["kind"] == "scoregate.validation" and data["format"] == 2 and data["ref"] == "credit-risk@1"
    assert data["artifact_digest"] == good.artifact_digest
    assert data["schema_digest"] == good.input_schema.contract_digest()
    assert data["settings"] == {
        "target": "python",
        "reference": "subprocess",
        "reference_scorer_digest": None,
        "golden_digest": None,
        "atol": 1e-6,
        "rtol": 1e-6,
        "independent_atol": 1e-5,
        "independent_rtol": 1e-5,
        "timeout_s": 10.0,
        "max_duration_s": 1800.0,
        "latency_budget_ms": 300.0,
        "memory_calls": 20,
        "memory_limit_mb": 50.0,
        "seed": 0,
        "reference_rows": 100,
    }
    # a gate recomputes the digest of the generated cases from what it holds
    reference_frame = registry.reference_data(good.ref)
    assert data["case_set"]["digest"] == case_set_digest(good.input_schema, reference_frame, 0, 100)
    assert data["case_set"]["digest"] != case_set_digest(good.input_schema, reference_frame, 1, 100)
    assert data["case_set"]["cases"] == len(data["cases"]) and data["case_set"]["by_kind"]["typical"] == 4
    assert [c["id"] for c in data["checks"]] == [c.id for c in CHECKS]
    assert all(c["status"] == "pass" for c in data["checks"] if c["id"] != "reference_performance")
    assert data["parity"]["reference"] == "subprocess" and data["parity"]["available"] is True
    assert data["parity"]["error"] is None and data["parity"]["outcome"] == "compared"
    assert data["stopped"] is None and data["started_at"] and data["duration_s"] > 0
    assert (tmp_path / "report" / "report.json").read_bytes() == report.to_json_bytes()
    page = (tmp_path / "report" / "report.html").read_text()
    assert "PASSED" in page and "income:below_observed" in page
    assert "batch_invariance" in page and "independent_atol" in page


def test_cases_are_seeded(credit_files: dict[str, Path]) -> None:
    schema = credit_schema(credit_files)
    frame = pd.read_parquet(credit_files["train"])
    first = generate_cases(schema, frame, seed=3)
    again = generate_cases(schema, frame, seed=3)
    other = generate_cases(schema, frame, seed=4)
    assert repr([(c.id, c.rows) for c in first]) == repr([(c.id, c.rows) for c in again])  # repr: NaN != NaN
    sample = {c.id: c.rows for c in first}["reference:sample"]
    assert sample != {c.id: c.rows for c in other}["reference:sample"]
    assert all(row in frame_to_rows(schema, frame) for row in sample)


CRASH_ON_MISSING = """
    import numpy as np
    import pandas as pd

    class Scorer:
        def predict(self, frame):
            income = frame["income"].to_numpy(dtype=float)
            if np.isnan(income).any():
                raise ValueError("cannot score a missing income")
            p = 1 / (1 + np.exp(-(3 * frame["debt_ratio"].to_numpy(dtype=float) - income / 50000)))
            return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_1": p})
"""


def test_scorer_crashing_on_missing_values_fails_the_null_cases(
    registry: Any, credit_files: dict[str, Path], tmp_path: Path
) -> None:
    schema = credit_schema(credit_files, income={"nullable": True})
    version = python_model(registry, tmp_path / "crash", "crashy", CRASH_ON_MISSING, credit_files, schema)
    report = validate(registry, version.ref, reference="none")
    assert not report.passed
    assert failed_ids(report) == {"income:null", "income:missing"}
    for case in report.failures:
        assert case.case.expect == SCORE
        assert case.reason.startswith("crashed: ValueError: cannot score a missing income")


NAN_ON_BOUNDARY = """
    import numpy as np
    import pandas as pd

    class Scorer:
        def predict(self, frame):
            ratio = frame["debt_ratio"].to_numpy(dtype=float)
            p = 1 / (1 + np.exp(-(3 * ratio - 1)))
            p = np.where((ratio == 0.0) | (ratio == 1.0), np.nan, p)
            return pd.DataFrame({"prediction": (ratio > 0.5).astype(int), "proba_1": p})
"""


def test_scorer_returning_nan_on_boundaries_fails_the_boundary_cases(
    registry: Any, credit_files: dict[str, Path], tmp_path: Path
) -> None:
    schema = credit_schema(credit_files, debt_ratio={"minimum": 0.0, "maximum": 1.0})
    version = python_model(registry, tmp_path / "nan", "nanny", NAN_ON_BOUNDARY, credit_files, schema)
    report = validate(registry, version.ref, reference="none")
    assert failed_ids(report) == {"debt_ratio:minimum", "debt_ratio:maximum"}
    for case in report.failures:
        assert "NaN in output 'proba_1' where the output schema forbids it" in case.reason
    # the values just outside the range are refused, as the schema's bounds are enforced
    assert {c.case.id: c.status for c in report.cases}["debt_ratio:above_maximum"] == "pass"


WRONG_FOR_EDUCATION = """
    from pathlib import Path

    import joblib
    import numpy as np
    import pandas as pd

    class Scorer:
        def __init__(self, directory):
            self.model = joblib.load(Path(directory) / "model.joblib")

        def predict(self, frame):
            proba = self.model.predict_proba(frame)
            wrong = (frame["purpose"] == "education").to_numpy()
            proba[wrong] = proba[wrong][:, ::-1]  # swapped classes for one category
            return pd.DataFrame({"prediction": proba.argmax(axis=1), "proba_0": proba[:, 0], "proba_1": proba[:, 1]})
"""


def test_wrong_output_for_a_category_fails_against_a_golden_file(
    registry: Any, good: Any, credit_files: dict[str, Path], tmp_path: Path
) -> None:
    good_model = registry.load(good.ref)
    rows = frame_to_rows(good.input_schema, registry.reference_data(good.ref).head(30))
    assert {r["purpose"] for r in rows} == {"car", "home", "education"}
    golden = tmp_path / "golden.json"
    outputs = good_model.predict(rows)[["prediction", "proba_0", "proba_1"]].to_dict(orient="records")
    write_golden(golden, rows, outputs)
    version = python_model(
        registry, tmp_path / "cat", "categorical", WRONG_FOR_EDUCATION, credit_files, copy_model=True
    )
    report = validate(registry, version.ref, golden=golden, reference="none")
    education = {f"golden[{i}]" for i, r in enumerate(rows) if r["purpose"] == "education"}
    assert education and failed_ids(report) == education
    assert all(c.reason.startswith("parity:") for c in report.failures)
    # golden cases are compared in addition to the reference (none here), with their own numbers
    assert report.parity.reference == "none" and report.parity.mismatches == 0
    assert report.parity.golden is not None and report.parity.golden.mismatches > 0
    assert report.parity.golden.worst[0].case_id in education
    # the same model checked against the good model's golden rows for other categories is fine
    assert all(c.status == "pass" for c in report.cases if c.case.id.startswith("purpose:category="))


class Perturbed(Scorer):
    flavor = "test"

    def __init__(self, inner: Scorer, delta: float) -> None:
        self.inner, self.delta = inner, delta

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = self.inner.predict(frame).copy()
        # towards the middle, so a probability near 0 or 1 (rows past the training range) stays in [0, 1]
        out["proba_1"] = out["proba_1"] + np.where(out["proba_1"] < 0.5, self.delta, -self.delta)
        return out


def test_parity_mismatch_is_reported_with_its_size(registry: Any, good: Any) -> None:
    loaded = registry.load(good.ref)
    target = PythonTarget(LoadedModel(loaded.version, Perturbed(loaded.scorer, 1e-3)))
    report = validate(registry, good.ref, target=target, atol=1e-6, rtol=0.0)
    assert not report.passed
    assert report.parity.error is None
    assert report.parity.max_difference == pytest.approx(1e-3, abs=1e-9)
    worst = report.parity.worst[0]
    assert worst.output == "proba_1" and worst.size == pytest.approx(1e-3, abs=1e-9)
    assert abs(worst.target - worst.reference) == pytest.approx(1e-3)
    failed = report.failures
    assert failed and all(c.reason.startswith("parity: output 'proba_1'") for c in failed)
    assert "typical_row" in failed_ids(report)
    # within a tolerance that covers it, parity passes; the probabilities no longer sum to 1, though
    loose = validate(registry, good.ref, target=target, atol=2e-3, rtol=0.0)
    assert loose.parity.passed and not loose.failures
    assert [c.id for c in loose.failed_checks] == ["probabilities"]


class Sleepy(Scorer):
    flavor = "test"

    def __init__(self, inner: Scorer) -> None:
        self.inner = inner

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        if (frame["age"] == frame["age"].max()).all() and len(frame) == 1 and int(frame["age"].iloc[0]) >= 79:
            import time

            time.sleep(3)
        return self.inner.predict(frame)


def test_hanging_case_fails_as_hung(registry: Any, good: Any) -> None:
    loaded = registry.load(good.ref)
    assert good.input_schema.feature("age").observed.maximum == 79  # so the cases past it sleep
    target = PythonTarget(LoadedModel(loaded.version, Sleepy(loaded.scorer)))
    report = validate(registry, good.ref, target=target, timeout=0.5, reference="none")
    assert "age:above_observed" in failed_ids(report)
    hung = {c.case.id: c for c in report.failures}["age:above_observed"]
    assert hung.outcome == "timeout" and hung.reason.startswith("hung")


def test_http_targets_json_and_v2(registry: Any, good: Any) -> None:
    from scoregate.serving import local_server
    from scoregate.validation import HttpTarget

    with local_server(registry, good.ref) as base:
        for protocol in ("json", "v2"):
            target = HttpTarget(base, good.name, good.version, good.input_schema, protocol=protocol)
            try:
                report = validate(registry, good.ref, target=target, reference_rows=20)
            finally:
                target.close()
            assert report.passed, (protocol, [(c.case.id, c.reason) for c in report.failures], report.failed_checks)
            skipped = {c.case.id for c in report.cases if c.status == "skip"}
            assert skipped and all("not_finite" in s for s in skipped)
            by_id = {c.case.id: c for c in report.cases}
            assert by_id["age:below_minimum"].http_status == 422
            # the server's flags are what the case is judged on
            assert (
                by_id["income:above_observed"].status == "pass" and "flagged" in by_id["income:above_observed"].reason
            )
            assert report.parity.rows_compared > 2000


def test_cli_validate_exit_codes(registry: Any, good: Any, credit_files: dict[str, Path], tmp_path: Path) -> None:
    import typer

    from scoregate.cli.quality import register_commands

    app = typer.Typer()
    register_commands(app, lambda: registry)
    runner = CliRunner()
    result = runner.invoke(app, ["validate", good.ref, "--output", str(tmp_path / "ok"), "--reference", "none"])
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output and (tmp_path / "ok" / "report.html").exists()
    schema = credit_schema(credit_files, income={"nullable": True})
    broken = python_model(registry, tmp_path / "crash", "crashy", CRASH_ON_MISSING, credit_files, schema)
    result = runner.invoke(app, ["validate", broken.ref, "--output", str(tmp_path / "bad"), "--reference", "none"])
    assert result.exit_code == 1
    assert "income:null" in result.output and "FAILED" in result.output
