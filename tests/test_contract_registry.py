"""The contract through the registry: Client.load and `scoregate predict` flag, a stored legacy schema refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from scoregate.client import Client
from scoregate.config import Settings
from scoregate.errors import SchemaViolationError
from scoregate.schema import UnseenCategories

GOOD = {"income": 50_000.0, "age": 40, "debt_ratio": 0.3, "purpose": "car"}


def _register(client: Client, credit_files: dict[str, Path]) -> Any:
    return client.register(
        "credit-risk", credit_files["model"], flavor="sklearn", train_data=credit_files["train"], target="default"
    )


def test_client_load_scores_past_the_training_range_and_names_the_flags(
    sqlite_settings: Settings, credit_files: dict[str, Path]
) -> None:
    with Client(settings=sqlite_settings) as client:
        version = _register(client, credit_files)
        observed = version.input_schema.feature("income").observed
        loaded = client.load("credit-risk@1")
        rows = [GOOD, GOOD | {"income": observed.maximum + 1, "purpose": "boat"}, GOOD | {"debt_ratio": 0.0}]
        result = loaded.predict(rows)
        assert len(result) == 3
        flags = {(f["row"], f["feature"], f["kind"]) for f in result.attrs["flags"]}
        assert (1, "income", "above_observed") in flags and (1, "purpose", "unseen_category") in flags
        low = version.input_schema.feature("debt_ratio").observed.minimum
        assert ((2, "debt_ratio", "below_observed") in flags) == (low > 0)
        # the frame path flags the same way
        assert loaded.predict(pd.DataFrame(rows)).attrs["flags"] == result.attrs["flags"]
        assert loaded.predict([GOOD]).attrs["flags"] == []
        with pytest.raises(SchemaViolationError, match=r"age \(row 0\): value -1 is below the minimum 0\.0"):
            loaded.predict([GOOD | {"age": -1}])


def test_a_version_stored_before_the_profile_keeps_refusing(
    sqlite_settings: Settings, credit_files: dict[str, Path]
) -> None:
    """Such a version's input schema has the training ranges as limits and no observed section.

    It cannot be written into the database by hand (the audit log would call it tampered),
    so it is registered the way it was stored: as a schema with those limits.
    """
    with Client(settings=sqlite_settings) as client:
        inferred = _register(client, credit_files).input_schema
        features = []
        for feature in inferred.features:
            observed = feature.observed
            update: dict[str, Any] = {"observed": None, "unseen": UnseenCategories.REFUSE}
            if observed is not None and observed.minimum is not None:
                update |= {"minimum": observed.minimum, "maximum": observed.maximum}
            features.append(feature.model_copy(update=update))
        legacy_schema = inferred.model_copy(update={"features": features, "outputs": [], "output_contract": None})
        client.register(
            "credit-risk",
            credit_files["model"],
            flavor="sklearn",
            train_data=credit_files["train"],
            schema=legacy_schema,
        )
        legacy = client.load("credit-risk@2")
        stored = legacy.version.input_schema
        assert not stored.has_profile and stored.feature("purpose").unseen == "refuse"  # declared: kept closed
        top = stored.feature("income").maximum
        with pytest.raises(SchemaViolationError, match=r"income \(row 0\).*\[rule: maximum\]"):
            legacy.predict([GOOD | {"income": top + 1}])
        with pytest.raises(SchemaViolationError, match=r"\[rule: categories\]"):
            legacy.predict([GOOD | {"purpose": "boat"}])
        assert legacy.predict([GOOD]).attrs["flags"] == []


def test_predict_cli_prints_one_flag_line_and_show_separates_rules_from_profile(
    run: Any, credit_files: dict[str, Path], tmp_path: Path
) -> None:
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
    code, out, _ = run("models", "show", "credit-risk@1")
    assert code == 0 and "validity rules" in out and "observed in training" in out
    income_line = next(line for line in out.splitlines() if "income" in line and "float" in line)
    assert "│ -" in income_line and "[" in income_line  # no rule, an observed range
    train = pd.read_parquet(f["train"])
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([GOOD, GOOD | {"income": float(train["income"].max()) + 1.0}]))
    code, out, _ = run("predict", "credit-risk@1", "--input", rows)
    assert code == 0, out
    assert "1 of 2 rows outside the training data's profile (scored, flagged): income above_observed x1" in out
    code, out, _ = run("predict", "credit-risk@1", "--input", rows, "--output", tmp_path / "out.csv")
    assert code == 0 and "income above_observed x1" in out and "wrote 2 predictions" in out
    code, out, _ = run("predict", "credit-risk@1", "--input", f["rows"])
    assert code == 0 and "outside the training data's profile" not in out
