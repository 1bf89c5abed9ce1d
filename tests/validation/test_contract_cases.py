"""Validation follows the split: past a validity limit refused, past the training range scored and flagged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from scoregate.schema import ModelSchema, open_categories
from scoregate.validation import generate_cases, validate
from scoregate.validation.cases import REFUSE, SCORE, case_set_digest
from tests.validation.helpers import credit_schema, failed_ids, python_model

#: A schema as versions stored it before the observed profile existed, and the digests of its
#: cases computed by scoregate before this change: a gate recomputing them must get the same.
LEGACY = {
    "features": [
        {"name": "income", "type": "float", "minimum": 12000.0, "maximum": 248859.0},
        {"name": "age", "type": "int", "minimum": 18, "maximum": 75, "nullable": True},
        {"name": "purpose", "type": "category", "categories": ["car", "home"]},
    ],
    "target": "default",
}
LEGACY_FRAME = pd.DataFrame(
    {
        "income": [12000.0, 50000.0, 248859.0],
        "age": [18, None, 75],
        "purpose": ["car", "home", "car"],
        "default": [0, 1, 0],
    }
)
LEGACY_CASES = "20e1337f06cedcfb65d6f0dcff56c1fadd3673df3abffa90559269c9847b9fee"
LEGACY_CASES_NO_REFERENCE = "1cea93355546d65549dc8929a1d338665be9506ad62f3ecba268c18851949f0d"


def test_cases_expect_a_score_and_a_flag_past_the_training_range(credit_files: dict[str, Path]) -> None:
    schema = credit_schema(credit_files)
    frame = pd.read_parquet(credit_files["train"])
    by_id = {c.id: c for c in generate_cases(schema, frame)}
    income = schema.feature("income").observed
    above = by_id["income:above_observed"]
    assert above.expect == SCORE and above.flag == "above_observed" and above.rows[0]["income"] > income.maximum
    assert above.rows[0]["income"] - income.maximum < (income.maximum - income.minimum) * 0.01  # just above
    far = by_id["income:far_above_observed"].rows[0]["income"]
    assert income.maximum < far < 1e9  # far, yet a sane number
    assert by_id["income:below_observed"].flag == "below_observed"
    # age: a count, so minimum 0 is a validity rule
    assert by_id["age:below_minimum"].expect == REFUSE and by_id["age:below_minimum"].rows[0]["age"] == -1
    assert by_id["age:above_observed"].expect == SCORE
    # a closed category refuses an unknown level, an open one scores and flags it
    assert by_id["purpose:unseen_category"].expect == REFUSE
    opened = {c.id: c for c in generate_cases(open_categories(schema, ["purpose"]), frame)}
    assert opened["purpose:unseen_category"].expect == SCORE
    assert opened["purpose:unseen_category"].flag == "unseen_category"


def test_a_legacy_schema_generates_the_cases_it_always_did() -> None:
    schema = ModelSchema.model_validate(LEGACY)
    assert case_set_digest(schema, LEGACY_FRAME, 0, 100) == LEGACY_CASES
    assert case_set_digest(schema, None, 0, 100) == LEGACY_CASES_NO_REFERENCE
    by_id = {c.id: c for c in generate_cases(schema, LEGACY_FRAME)}
    assert by_id["income:above_maximum"].expect == REFUSE and "income:above_observed" not in by_id


REFUSES_PAST_TRAINING = """
    import numpy as np
    import pandas as pd

    class Scorer:
        def predict(self, frame):
            income = frame["income"].to_numpy(dtype=float)
            if (income > INCOME_MAX).any():
                raise ValueError("income above anything seen in training")
            p = 1 / (1 + np.exp(-(3 * frame["debt_ratio"].to_numpy(dtype=float) - income / 50000)))
            return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_1": p})
"""

SCORES_EVERYTHING = """
    import numpy as np
    import pandas as pd

    class Scorer:
        def predict(self, frame):
            income = frame["income"].to_numpy(dtype=float)
            p = 1 / (1 + np.exp(-(3 * frame["debt_ratio"].to_numpy(dtype=float) - income / 50000)))
            return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_1": p})
"""


def test_validate_fails_a_model_that_cannot_score_past_the_training_range(
    registry: Any, credit_files: dict[str, Path], tmp_path: Path
) -> None:
    schema = credit_schema(credit_files)
    top = schema.feature("income").observed.maximum
    code = REFUSES_PAST_TRAINING.replace("INCOME_MAX", repr(top))
    version = python_model(registry, tmp_path / "narrow", "narrow", code, credit_files)
    report = validate(registry, version.ref, reference="none")
    assert failed_ids(report) == {"income:above_observed", "income:far_above_observed"}
    for case in report.failures:
        assert "income above anything seen in training" in case.reason
    fine = python_model(registry, tmp_path / "fine", "fine", SCORES_EVERYTHING, credit_files)
    report = validate(registry, fine.ref, reference="none")
    assert report.passed, [(c.case.id, c.reason) for c in report.failures]
    assert {c.case.id: c.status for c in report.cases}["income:above_observed"] == "pass"
