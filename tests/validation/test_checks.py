"""The deeper checks: each has its own broken model, and a sound model passes all of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import roc_auc_score

from scoregate.validation import CHECKS, validate
from tests.conftest import make_credit_data
from tests.validation.helpers import failed_checks, python_model

#: the fixture's sklearn pipeline, loaded from the scorer's folder
REAL_MODEL = """
    from pathlib import Path

    import joblib
    import numpy as np
    import pandas as pd

    class Scorer:
        def __init__(self, directory):
            self.model = joblib.load(Path(directory) / "model.joblib")

        def scores(self, frame):
            return self.model.predict_proba(frame)[:, 1]
"""


def scorer(predict_body: str, extra: str = "") -> str:
    """A python-flavor scorer over the real model whose predict is ``predict_body``."""
    indented = "\n".join("        " + line if line else "" for line in predict_body.strip("\n").splitlines())
    return REAL_MODEL + extra + "\n        def predict(self, frame):\n" + indented + "\n"


CORRECT = scorer("""
    p = self.scores(frame)
    return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_0": 1 - p, "proba_1": p})
""")

SUM_TO_1_3 = scorer("""
    p = self.scores(frame)
    return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_0": 0.4 + 0.5 * (1 - p), "proba_1": 0.4 + 0.5 * p})
""")

LABEL_CONTRADICTS = scorer("""
    p = self.scores(frame)
    return pd.DataFrame({"prediction": (p <= 0.5).astype(int), "proba_0": 1 - p, "proba_1": p})
""")

CONSTANT = scorer("""
    n = len(frame)
    return pd.DataFrame({"prediction": np.zeros(n, dtype=int), "proba_0": np.full(n, 0.7), "proba_1": np.full(n, 0.3)})
""")

#: scores from the row's position in the batch, not from its values
IGNORES_INPUTS = scorer("""
    p = 0.2 + 0.6 * ((np.arange(len(frame)) * 7) % 10) / 10
    return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_0": 1 - p, "proba_1": p})
""")

#: income and age swapped before the real model sees them
SWAPPED_COLUMNS = scorer("""
    swapped = frame.copy()
    swapped["income"], swapped["age"] = frame["age"].to_numpy(), frame["income"].to_numpy()
    p = self.scores(swapped)
    return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_0": 1 - p, "proba_1": p})
""")

#: 1.5 s for one row of the oldest applicant (the age:maximum case), against a 300 ms budget
SLOW = scorer("""
    import time

    if len(frame) == 1 and int(frame["age"].iloc[0]) >= 79:
        time.sleep(1.5)
    p = self.scores(frame)
    return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_0": 1 - p, "proba_1": p})
""")

#: keeps 10 MB per call of several rows
LEAKY = scorer(
    """
    if len(frame) > 1:
        self.kept.append(np.ones(10 * 2**20 // 8))
    p = self.scores(frame)
    return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_0": 1 - p, "proba_1": p})
""",
    extra="\n        kept = []\n",
)

#: different noise on every call
NOISY = scorer("""
    p = np.clip(self.scores(frame) + np.random.default_rng().normal(0, 1e-3, len(frame)), 0, 1)
    return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_0": 1 - p, "proba_1": p})
""")

#: a little more for a row scored in a batch than alone
BATCH_DEPENDENT = scorer("""
    p = np.clip(self.scores(frame) + (0.01 if len(frame) > 1 else 0.0), 0, 1)
    return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_0": 1 - p, "proba_1": p})
""")


@pytest.fixture
def holdout_auc(credit_files: dict[str, Path]) -> float:
    """The fixture model's AUC on fresh applicants: what a developer records with --metric."""
    import joblib

    model = joblib.load(credit_files["model"])
    holdout = make_credit_data(seed=1)
    return float(roc_auc_score(holdout["default"], model.predict_proba(holdout.drop(columns="default"))[:, 1]))


def run(registry: Any, tmp_path: Path, credit_files: dict[str, Path], name: str, code: str, **register: Any) -> Any:
    version = python_model(registry, tmp_path / name, name, code, credit_files, copy_model=True, **register)
    return validate(registry, version.ref, reference="none")


def statuses(report: Any) -> dict[str, str]:
    return {c.id: c.status for c in report.checks}


def test_a_sound_model_passes_every_check(
    registry: Any, tmp_path: Path, credit_files: dict[str, Path], holdout_auc: float
) -> None:
    report = run(registry, tmp_path, credit_files, "sound", CORRECT, metrics={"auc": holdout_auc})
    assert report.passed, [(c.id, c.reason) for c in report.failed_checks] + [
        (c.case.id, c.reason) for c in report.failures
    ]
    assert statuses(report) == {check.id: "pass" for check in CHECKS}
    data = json.loads(report.to_json_bytes())
    for check in data["checks"]:
        assert set(check) == {"id", "status", "expect", "reason", "details"} and check["expect"]
    performance = report.check("reference_performance").details
    assert performance["metric"] == "auc" and performance["recorded"] == pytest.approx(holdout_auc)
    assert performance["measured"] > performance["recorded"] - performance["margin"]
    assert report.check("sensitivity").details["moved_by"] == ["income", "age", "debt_ratio", "purpose"]


def test_probabilities_that_sum_to_1_3_fail(registry: Any, tmp_path: Path, credit_files: dict[str, Path]) -> None:
    report = run(registry, tmp_path, credit_files, "sum13", SUM_TO_1_3)
    assert failed_checks(report) == {"probabilities"}
    check = report.check("probabilities")
    assert "sum to 1.3" in check.reason and check.details["bad_sums"] == check.details["rows_checked"] > 2000
    assert not report.failures  # each probability is in [0, 1]: only the check sees it


def test_a_label_that_contradicts_its_probabilities_fails(
    registry: Any, tmp_path: Path, credit_files: dict[str, Path]
) -> None:
    report = run(registry, tmp_path, credit_files, "contrary", LABEL_CONTRADICTS)
    assert failed_checks(report) == {"label_consistency"}
    assert "not the most probable class" in report.check("label_consistency").reason


def test_a_constant_model_fails_sensitivity(registry: Any, tmp_path: Path, credit_files: dict[str, Path]) -> None:
    report = run(registry, tmp_path, credit_files, "constant", CONSTANT)
    assert "sensitivity" in failed_checks(report)
    check = report.check("sensitivity")
    assert "constant model" in check.reason and check.details["constant"] is True
    assert check.details["moved_by"] == [] and len(check.details["never_moved_by"]) == 4


def test_a_model_that_ignores_its_inputs_fails_sensitivity(
    registry: Any, tmp_path: Path, credit_files: dict[str, Path]
) -> None:
    report = run(registry, tmp_path, credit_files, "ignorant", IGNORES_INPUTS)
    check = report.check("sensitivity")
    assert check.status == "fail" and "ignores its inputs" in check.reason and check.details["constant"] is False
    assert report.check("batch_invariance").status == "fail"  # its scores depend on the row's position


def test_swapped_columns_fail_against_the_recorded_metric(
    registry: Any, tmp_path: Path, credit_files: dict[str, Path], holdout_auc: float
) -> None:
    report = run(registry, tmp_path, credit_files, "swapped", SWAPPED_COLUMNS, metrics={"auc": holdout_auc})
    # incomes where ages belong saturate the logistic regression, so sensitivity may fail too
    assert "reference_performance" in failed_checks(report) <= {"reference_performance", "sensitivity"}
    check = report.check("reference_performance")
    assert check.details["measured"] < 0.6 < holdout_auc
    assert f"{check.details['measured']:.4f}" in check.reason and f"{holdout_auc:.4f}" in check.reason
    assert not report.failures  # every case is within the contract: no golden file, yet caught


def test_a_case_slower_than_the_budget_fails_latency(
    registry: Any, tmp_path: Path, credit_files: dict[str, Path]
) -> None:
    report = run(registry, tmp_path, credit_files, "slow", SLOW)
    assert "latency" in failed_checks(report)
    over = {c["case"]: c for c in report.check("latency").details["over_budget"]}
    # age has no maximum rule: the cases past its training range (79) are scored, slowly
    assert "age:above_observed" in over and over["age:above_observed"]["best_ms"] >= 1500
    assert report.settings.latency_budget_ms == 300.0  # the version's budget, recorded in the report
    assert json.loads(report.to_json_bytes())["settings"]["latency_budget_ms"] == 300.0
    # a budget passed in covers it
    relaxed = validate(registry, "slow@1", reference="none", latency_budget_ms=5000)
    assert relaxed.check("latency").status == "pass"


def test_memory_that_grows_per_call_fails(registry: Any, tmp_path: Path, credit_files: dict[str, Path]) -> None:
    report = run(registry, tmp_path, credit_files, "leaky", LEAKY)
    assert failed_checks(report) == {"memory"}
    details = report.check("memory").details
    assert details["growth_mb"] > 150 and details["calls_that_grew"] >= details["calls"] // 2
    # the limit is a setting
    lenient = validate(registry, "leaky@1", reference="none", memory_calls=4, memory_limit_mb=1000)
    assert lenient.check("memory").status == "pass"


def test_nondeterministic_scores_fail_determinism(registry: Any, tmp_path: Path, credit_files: dict[str, Path]) -> None:
    report = run(registry, tmp_path, credit_files, "noisy", NOISY)
    assert "determinism" in failed_checks(report)
    assert "change between identical calls" in report.check("determinism").reason


def test_scores_that_depend_on_the_batch_fail_batch_invariance(
    registry: Any, tmp_path: Path, credit_files: dict[str, Path]
) -> None:
    report = run(registry, tmp_path, credit_files, "batchy", BATCH_DEPENDENT)
    assert failed_checks(report) == {"batch_invariance"}
    example = report.check("batch_invariance").details["examples"][0]
    assert abs(example["in_batch"] - example["alone"]) == pytest.approx(0.01, abs=1e-9)


def test_checks_needing_the_process_are_skipped_for_http(registry: Any, good: Any) -> None:
    from scoregate.serving import local_server
    from scoregate.validation import HttpTarget

    with local_server(registry, good.ref) as base:
        target = HttpTarget(base, good.name, good.version, good.input_schema)
        try:
            report = validate(registry, good.ref, target=target, reference="none", reference_rows=20)
        finally:
            target.close()
    memory = report.check("memory")
    assert memory.status == "skip" and "runs in another process" in memory.reason
    assert report.settings.target == "http"
    assert {c.id for c in report.checks if c.status == "fail"} == set()
    assert report.check("batch_invariance").status == "pass" and report.check("determinism").status == "pass"


#: every probability above 1: each case fails, and the check still sees them
ABOVE_ONE = scorer("""
    p = self.scores(frame)
    return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_0": 1 - p, "proba_1": p + 1.0})
""")


def test_probabilities_outside_0_1_fail_the_cases_and_the_check(
    registry: Any, tmp_path: Path, credit_files: dict[str, Path]
) -> None:
    report = run(registry, tmp_path, credit_files, "above", ABOVE_ONE)
    assert {"probabilities", "output_contract"} <= failed_checks(report)
    check = report.check("probabilities")
    assert check.details["out_of_range"] == check.details["rows_checked"] > 2000
    assert all("is outside [0, 1]" in c.reason for c in report.failures)
