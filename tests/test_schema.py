"""The input contract: inference from data, and one set of rules for frames and JSON rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from scoregate.errors import SchemaViolationError
from scoregate.schema import (
    Feature,
    FeatureType,
    ModelSchema,
    Observed,
    RecordValidator,
    infer_schema,
    prepare_columns,
    prepare_frame,
    prepare_records,
)


@pytest.fixture
def training() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": [0.5, 1.5, np.nan, 3.0],
            "n": [1, 2, 3, 4],
            "flag": [True, False, True, True],
            "colour": pd.Series(["red", "blue", "red", "green"]),
            "comment": [f"free text {i}" for i in range(4)],
            "when": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]),
            "y": [0, 1, 0, 1],
        }
    )


def test_infer_types_ranges_categories_and_nullability(training: pd.DataFrame) -> None:
    schema = infer_schema(training, target="y", max_category_levels=3)
    assert schema.feature_names == ["x", "n", "flag", "colour", "comment", "when"]
    by_name = {f.name: f for f in schema.features}
    # what training held is the observed profile; only what inference is sure of is a rule
    assert by_name["x"] == Feature(
        name="x", type=FeatureType.FLOAT, nullable=True, observed=Observed(minimum=0.5, maximum=3.0)
    )
    assert by_name["n"].type == "int" and (by_name["n"].minimum, by_name["n"].maximum) == (0, None)
    assert (by_name["n"].observed.minimum, by_name["n"].observed.maximum) == (1, 4)
    assert by_name["flag"].type == "bool"
    assert by_name["colour"].categories == ["blue", "green", "red"]
    assert by_name["comment"].type == "string"
    assert by_name["when"].type == "datetime"
    assert schema.target == "y"
    assert ModelSchema.model_validate_json(schema.model_dump_json()) == schema
    assert schema.digest() == infer_schema(training, target="y", max_category_levels=3).digest()


def test_unknown_target_is_refused(training: pd.DataFrame) -> None:
    with pytest.raises(SchemaViolationError, match="target column 'label' is not in the training data"):
        infer_schema(training, target="label")


def test_schema_rules_are_checked_when_edited() -> None:
    with pytest.raises(ValidationError, match=r"minimum 5\.0 is above maximum 1\.0"):
        Feature(name="x", type="float", minimum=5, maximum=1)
    with pytest.raises(ValidationError, match="needs its list of categories"):
        Feature(name="c", type="category")
    with pytest.raises(ValidationError, match="duplicate feature names: a"):
        ModelSchema(features=[Feature(name="a", type="int"), Feature(name="a", type="float")])


SCHEMA = ModelSchema(
    features=[
        Feature(name="amount", type="float", minimum=0, maximum=100),
        Feature(name="count", type="int", nullable=True),
        Feature(name="kind", type="category", categories=["a", "b"]),
        Feature(name="ok", type="bool"),
    ]
)
GOOD = {"amount": 10.0, "count": 2, "kind": "a", "ok": True}

BAD_CASES = [
    ({"amount": "ten"}, "amount", "type"),
    ({"amount": True}, "amount", "type"),
    ({"amount": -1.0}, "amount", "minimum"),
    ({"amount": 100.5}, "amount", "maximum"),
    ({"amount": math.inf}, "amount", "finite"),
    ({"amount": None}, "amount", "required"),
    ({"count": 2.5}, "count", "type"),
    ({"kind": "c"}, "kind", "categories"),
    ({"kind": 3}, "kind", "type"),
    ({"ok": "yes"}, "ok", "type"),
]


@pytest.mark.parametrize(("change", "field", "rule"), BAD_CASES)
def test_each_rule_names_field_and_rule_for_rows_and_frames(change, field, rule) -> None:  # type: ignore[no-untyped-def]
    row = GOOD | change
    with pytest.raises(SchemaViolationError) as from_records:
        prepare_records(SCHEMA, [GOOD, row])
    assert {(d["row"], d["field"], d["rule"]) for d in from_records.value.details} == {(1, field, rule)}
    assert f"[rule: {rule}]" in from_records.value.message
    # the vectorised path (files) and the per-row path (server) agree on which field breaks
    frame = pd.DataFrame([GOOD, row])
    with pytest.raises(SchemaViolationError) as from_frame:
        prepare_frame(SCHEMA, frame)
    assert field in {d["field"] for d in from_frame.value.details}


def test_missing_field_and_null_for_nullable() -> None:
    frame = prepare_records(SCHEMA, [{"amount": 1.0, "kind": "b", "ok": False}, GOOD])
    assert math.isnan(frame["count"][0]) and frame["count"][1] == 2
    with pytest.raises(SchemaViolationError, match="value is missing"):
        prepare_records(SCHEMA, [{"count": 1, "kind": "a", "ok": True}])
    with pytest.raises(SchemaViolationError, match="missing column 'ok'"):
        prepare_frame(SCHEMA, pd.DataFrame([{"amount": 1.0, "count": 1, "kind": "a"}]))


def test_conversion_types_and_extra_columns_dropped() -> None:
    frame = prepare_frame(SCHEMA, pd.DataFrame([GOOD | {"customer_id": 7}]))
    assert list(frame.columns) == ["amount", "count", "kind", "ok"]
    assert frame.dtypes.astype(str).tolist() == ["float64", "int64", "object", "bool"]
    records = RecordValidator(SCHEMA).frame([GOOD, GOOD])
    pd.testing.assert_frame_equal(records, prepare_frame(SCHEMA, pd.DataFrame([GOOD, GOOD])))


def test_columnar_input() -> None:
    frame = prepare_columns(SCHEMA, {"amount": [1.0, 2.0], "count": [1, None], "kind": ["a", "b"], "ok": [True, False]})
    assert len(frame) == 2
    with pytest.raises(SchemaViolationError, match="has 1 values, expected 2"):
        prepare_columns(SCHEMA, {"amount": [1.0, 2.0], "count": [1], "kind": ["a", "b"], "ok": [True, False]})


def test_non_object_row() -> None:
    with pytest.raises(SchemaViolationError, match="each row must be a JSON object"):
        prepare_records(SCHEMA, [[1, 2, 3]])  # type: ignore[list-item]


def test_inline_float_path_agrees_with_the_full_check() -> None:
    schema = ModelSchema(
        features=[Feature(name="a", type="float"), Feature(name="b", type="float", minimum=0, maximum=1)]
    )
    validator = RecordValidator(schema)
    assert validator.check({"a": 1e308, "b": 0.5}) == []
    for bad, rule in [
        ({"a": math.inf, "b": 0.5}, "finite"),
        ({"a": -math.inf, "b": 0.5}, "finite"),
        ({"a": math.nan, "b": 0.5}, "finite"),
        ({"a": 1.0, "b": 1.5}, "maximum"),
        ({"a": 1.0, "b": None}, "required"),
        ({"a": 1.0}, "required"),
        ({"a": "1", "b": 0.5}, "type"),
    ]:
        assert [v.rule for v in validator.check(bad, 0)] == [rule], bad
    assert validator.check({"a": 1, "b": 0}) == []  # ints are numbers too (full path)
