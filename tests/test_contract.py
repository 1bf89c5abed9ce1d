"""Validity rules refuse; the observed profile of the training data only flags (issue 11, item 1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from scoregate.errors import SchemaViolationError
from scoregate.schema import (
    Feature,
    FlagKind,
    ModelSchema,
    Observed,
    RecordFlagger,
    RecordValidator,
    UnseenCategories,
    flag_frame,
    infer_schema,
    open_categories,
    prepare_frame,
    prepare_records,
)

TRAINING = pd.DataFrame(
    {
        "income": [12_000.0, 55_000.0, 248_859.0, 80_000.0],
        "debt_ratio": [0.05, 0.3, 0.9, 0.41],
        "age": [21, 35, 75, 52],
        "delta": [-3, 0, 2, 1],
        "purpose": ["car", "home", "car", "education"],
    }
)
ROW = {"income": 55_000.0, "debt_ratio": 0.3, "age": 35, "delta": 0, "purpose": "car"}

#: A schema as versions stored it before the observed profile existed: the training ranges were rules.
LEGACY = {
    "features": [
        {"name": "income", "type": "float", "minimum": 12000.0, "maximum": 248859.0},
        {"name": "age", "type": "int", "minimum": 18, "maximum": 75},
        {"name": "purpose", "type": "category", "categories": ["car", "home"]},
    ],
    "target": "default",
    "output_contract": "inferred",
    "outputs": [{"name": "label", "type": "int"}],
}
#: Its digests, computed by scoregate before this change (evidence is bound to them).
LEGACY_DIGEST = "b54669198326199489b3686ad6e534dd84b7518c4258c2784e841118244060b3"
LEGACY_CONTRACT_DIGEST = "8b9012cbdda90801ab863f7eee4f7b34f1bdb0e3319c6c206fb2dceeeaf25f8f"


def test_inference_puts_training_ranges_in_the_observed_profile_not_the_rules() -> None:
    schema = infer_schema(TRAINING)
    income, debt, age, delta, purpose = schema.features
    assert (income.minimum, income.maximum) == (None, None)
    assert income.observed == Observed(minimum=12_000.0, maximum=248_859.0)
    assert (debt.minimum, debt.maximum) == (None, None)
    assert (age.minimum, age.maximum) == (0, None)  # a count: never negative in training
    assert age.observed == Observed(minimum=21, maximum=75)
    assert (delta.minimum, delta.maximum) == (None, None)  # negative in training: no rule inferred
    assert purpose.categories == ["car", "education", "home"] and purpose.unseen is UnseenCategories.REFUSE
    assert purpose.observed == Observed(categories=["car", "education", "home"])


def test_values_past_the_training_range_are_scored_and_flagged() -> None:
    schema = infer_schema(TRAINING)
    rows = [ROW, ROW | {"income": 260_000.0}, ROW | {"debt_ratio": 0.0}, ROW | {"age": 76}]
    frame = prepare_records(schema, rows)  # no refusal
    assert len(frame) == 4
    flags = RecordFlagger(schema).flag(rows)
    assert [(f.row, f.feature, f.kind) for f in flags.flags] == [
        (1, "income", FlagKind.ABOVE_OBSERVED),
        (2, "debt_ratio", FlagKind.BELOW_OBSERVED),
        (3, "age", FlagKind.ABOVE_OBSERVED),
    ]
    assert flags.counts() == {
        ("income", FlagKind.ABOVE_OBSERVED): 1,
        ("debt_ratio", FlagKind.BELOW_OBSERVED): 1,
        ("age", FlagKind.ABOVE_OBSERVED): 1,
    }
    # the vectorised flagger (files, Client.load) agrees with the per-row one (server)
    assert flag_frame(schema, prepare_frame(schema, pd.DataFrame(rows))) == flags
    assert "3 of 4 rows outside the training data's profile" in flags.summary()


def test_a_validity_rule_still_refuses_naming_the_field_and_rule_only() -> None:
    schema = infer_schema(TRAINING)
    with pytest.raises(SchemaViolationError) as refused:
        prepare_records(schema, [ROW | {"age": -1}])
    assert refused.value.details == [
        {"field": "age", "rule": "minimum", "message": "value -1 is below the minimum 0.0", "row": 0}
    ]
    assert "21" not in refused.value.message and "75" not in refused.value.message  # no training range
    with pytest.raises(SchemaViolationError, match=r"purpose.*\[rule: categories\]"):
        prepare_records(schema, [ROW | {"purpose": "boat"}])


def test_an_open_category_scores_unseen_levels_and_flags_them() -> None:
    schema = open_categories(infer_schema(TRAINING), ["purpose", "income"])  # income is no category: untouched
    assert schema.feature("purpose").unseen is UnseenCategories.SCORE
    assert schema.feature("income").unseen is UnseenCategories.REFUSE
    rows = [ROW | {"purpose": "boat"}]
    assert prepare_records(schema, rows)["purpose"].tolist() == ["boat"]
    assert prepare_frame(schema, pd.DataFrame(rows))["purpose"].tolist() == ["boat"]
    flags = RecordFlagger(schema).flag(rows)
    assert [(f.feature, f.kind) for f in flags.flags] == [("purpose", FlagKind.UNSEEN_CATEGORY)]
    with pytest.raises(SchemaViolationError, match=r"\[rule: type\]"):  # still a string
        prepare_records(schema, [ROW | {"purpose": 3}])


def test_a_legacy_schema_keeps_its_limits_as_rules_and_its_digests() -> None:
    schema = ModelSchema.model_validate(LEGACY)
    assert schema.digest() == LEGACY_DIGEST
    assert schema.contract_digest() == LEGACY_CONTRACT_DIGEST
    # stored back with the new fields at their defaults, it still hashes the same
    again = ModelSchema.model_validate_json(schema.model_dump_json())
    assert again.model_dump(mode="json")["features"][0]["unseen"] == "refuse"
    assert again.digest() == LEGACY_DIGEST and again.contract_digest() == LEGACY_CONTRACT_DIGEST
    row = {"income": 260_000.0, "age": 30, "purpose": "car"}
    with pytest.raises(SchemaViolationError, match=r"income.*\[rule: maximum\]"):
        prepare_records(schema, [row])
    with pytest.raises(SchemaViolationError, match=r"\[rule: categories\]"):
        prepare_records(schema, [row | {"income": 50_000.0, "purpose": "boat"}])
    assert not schema.has_profile and not RecordFlagger(schema).active


def test_a_profile_changes_the_digest_and_the_rules_are_checked() -> None:
    legacy = ModelSchema.model_validate(LEGACY)
    features = [legacy.features[0].model_copy(update={"observed": Observed(minimum=1, maximum=2)})]
    assert ModelSchema(features=features).digest() != ModelSchema(features=legacy.features[:1]).digest()
    with pytest.raises(ValidationError, match="unseen applies to category features only"):
        Feature(name="x", type="float", unseen="score")
    with pytest.raises(ValidationError, match="observed range applies to float and int"):
        Feature(name="c", type="category", categories=["a"], observed={"minimum": 1})
    with pytest.raises(ValidationError, match=r"observed minimum 3\.0 is above observed maximum 1\.0"):
        Observed(minimum=3, maximum=1)


def test_fast_path_and_text_helpers() -> None:
    schema = infer_schema(TRAINING[["income", "debt_ratio"]])
    validator = RecordValidator(schema)
    assert validator.check({"income": 1e12, "debt_ratio": -5.0}) == []  # floats have no inferred limits
    assert validator.check({"income": float("nan"), "debt_ratio": 0.1})[0].rule == "finite"
    income = schema.feature("income")
    assert income.limits_text() == "" and income.observed_text() == "[12000, 248859]"
    age = infer_schema(TRAINING[["age"]]).feature("age")
    assert age.limits_text() == ">= 0" and age.observed_text() == "[21, 75]"
    many = pd.DataFrame({"v": np.arange(10, dtype=float)})
    assert flag_frame(infer_schema(many), many).flags == ()
