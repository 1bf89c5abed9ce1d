"""The server scores values past the training data's range and flags them; only validity rules refuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from scoregate.flavors import load_scorer
from scoregate.schema import ModelSchema, open_categories
from scoregate.serving import InMemorySource
from scoregate.serving.openapi import feature_schema

from .conftest import FEATURES, sample_rows, serve, training_frame

pytestmark = pytest.mark.anyio


def _flags(body: dict[str, Any]) -> set[tuple[int, str, str]]:
    return {(f["row"], f["feature"], f["kind"]) for f in body.get("flags", [])}


async def test_past_the_training_range_scores_with_flags_and_counts(source: InMemorySource, schema: Any) -> None:
    good = sample_rows(1, seed=0)[0]
    top = schema.feature("income").observed.maximum
    assert schema.feature("debt").observed.minimum > 0  # so debt 0.0 lies below what training held
    rows = [
        good,
        dict(good, income=top + 10),
        dict(good, debt=0.0),
        dict(good, age=schema.feature("age").observed.maximum + 1),
    ]
    async with serve(source) as s:
        r = await s.client.post("/models/credit@1/predict", json={"rows": rows})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["predictions"]) == 4
        assert _flags(body) == {
            (1, "income", "above_observed"),
            (2, "debt", "below_observed"),
            (3, "age", "above_observed"),
        }
        r = await s.client.post("/models/credit@1/predict", json={"rows": [good]})
        assert r.status_code == 200 and "flags" not in r.json()  # nothing outside: no flags key
        # V2 carries them in the response's parameters
        v2 = {
            "inputs": [
                {"name": "income", "shape": [1], "datatype": "FP64", "data": [top + 10]},
                {"name": "debt", "shape": [1], "datatype": "FP64", "data": [good["debt"]]},
                {"name": "age", "shape": [1], "datatype": "INT64", "data": [good["age"]]},
                {"name": "segment", "shape": [1], "datatype": "BYTES", "data": [good["segment"]]},
            ]
        }
        r = await s.client.post("/v2/models/credit/versions/1/infer", json=v2)
        assert r.status_code == 200, r.text
        assert r.json()["parameters"]["flags"] == [{"row": 0, "feature": "income", "kind": "above_observed"}]
        metrics = (await s.client.get("/metrics")).text
    assert (
        'scoregate_input_flags_total{feature="income",kind="above_observed",model="credit",version="1"} 2.0' in metrics
    )
    assert 'scoregate_input_flags_total{feature="debt",kind="below_observed",model="credit",version="1"} 1.0' in metrics


async def test_a_validity_rule_refuses_naming_field_and_rule_without_the_training_range(
    source: InMemorySource, schema: Any
) -> None:
    good = sample_rows(1, seed=0)[0]
    observed = schema.feature("age").observed
    async with serve(source) as s:
        r = await s.client.post("/models/credit@1/predict", json={"rows": [dict(good, age=-1)]})
    assert r.status_code == 422
    assert r.json()["details"] == [
        {"field": "age", "rule": "minimum", "message": "value -1 is below the minimum 0.0", "row": 0}
    ]
    for bound in (observed.minimum, observed.maximum, schema.feature("income").observed.maximum):
        assert f"{bound:g}" not in r.text and repr(bound) not in r.text


@pytest.fixture(scope="module")
def open_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = training_frame(0)
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", "passthrough", ["income", "debt", "age"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["segment"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(frame[FEATURES], frame["default"])
    path = tmp_path_factory.mktemp("open") / "open.joblib"
    joblib.dump(pipe, path)
    return path


async def test_an_unseen_category_scores_when_the_model_takes_it_and_is_refused_when_closed(
    open_model: Path, artifacts: dict[str, Path], schema: ModelSchema
) -> None:
    scorer = load_scorer("sklearn", open_model)
    assert scorer.accepts_unseen() == {"segment"}
    assert load_scorer("sklearn", artifacts["v1"]).accepts_unseen() == set()  # OneHotEncoder() raises on unknowns
    src = InMemorySource()
    src.add("open", 1, scorer, open_categories(schema, scorer.accepts_unseen()))
    src.add("closed", 1, load_scorer("sklearn", artifacts["v1"]), schema)
    src.set_alias("open", "production", 1)
    src.set_alias("closed", "production", 1)
    row = dict(sample_rows(1, seed=0)[0], segment="public-sector")
    async with serve(src) as s:
        r = await s.client.post("/models/open@1/predict", json={"rows": [row]})
        assert r.status_code == 200, r.text
        assert _flags(r.json()) == {(0, "segment", "unseen_category")}
        r = await s.client.post("/models/closed@1/predict", json={"rows": [row]})
        assert r.status_code == 422
        assert (r.json()["details"][0]["field"], r.json()["details"][0]["rule"]) == ("segment", "categories")
    # the OpenAPI document promises what the server does: any string for the open feature
    assert "enum" not in feature_schema(open_categories(schema, {"segment"}).feature("segment"))
    assert "enum" in feature_schema(schema.feature("segment"))


async def test_a_version_stored_before_the_profile_refuses_as_it_always_did(
    artifacts: dict[str, Path], schema: ModelSchema
) -> None:
    # the schema such a version stored: the training ranges were written as its limits
    legacy = ModelSchema(
        features=[
            f.model_copy(
                update={
                    "minimum": f.observed.minimum if f.observed and f.observed.minimum is not None else None,
                    "maximum": f.observed.maximum if f.observed and f.observed.maximum is not None else None,
                    "observed": None,
                }
            )
            for f in schema.features
        ],
        target=schema.target,
    )
    src = InMemorySource()
    src.add("legacy", 1, load_scorer("sklearn", artifacts["v1"]), legacy)
    src.set_alias("legacy", "production", 1)
    good = sample_rows(1, seed=0)[0]
    async with serve(src) as s:
        r = await s.client.post(
            "/models/legacy@1/predict", json={"rows": [dict(good, income=legacy.feature("income").maximum + 10)]}
        )
        assert r.status_code == 422
        assert (r.json()["details"][0]["field"], r.json()["details"][0]["rule"]) == ("income", "maximum")
        r = await s.client.post("/models/legacy@1/predict", json={"rows": [good]})
        assert r.status_code == 200 and "flags" not in r.json()
