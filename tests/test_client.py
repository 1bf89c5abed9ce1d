"""The Python client as an MLflow user drives it: one alias signature, search, tags and
descriptions (audited), the flavor found in an MLflow directory, predict on every shape."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest

from scoregate import Client
from scoregate.errors import InvalidInputError, InvalidReferenceError, NotFoundError, SchemaViolationError
from scoregate.governance.audit import iter_events, verify


@pytest.fixture
def client(sqlite_settings, credit_files):
    with Client(settings=sqlite_settings) as c:
        for _ in range(3):
            c.register(
                "credit-risk",
                credit_files["model"],
                flavor="sklearn",
                train_data=credit_files["train"],
                target="default",
                tags={"team": "retail"},
            )
        c.register("churn", credit_files["model"], flavor="sklearn", train_data=credit_files["train"])
        yield c


def test_one_alias_signature_and_mlflow_keywords(client):
    assert client.set_alias("credit-risk@3", "staging").version == 3
    assert client.set_alias("credit-risk@staging", "challenger").version == 3  # an alias names its version
    assert client.set_alias(name="credit-risk", alias="canary", version=2).version == 2
    assert client.get("credit-risk@canary").version == 2

    client.delete_alias("credit-risk@staging")
    client.delete_alias(name="credit-risk", alias="canary")
    client.delete_alias("credit-risk", "challenger")  # the older two-argument form still works
    assert client.get("credit-risk@1").aliases == [] and client.get("credit-risk@3").aliases == []

    with pytest.raises(InvalidInputError, match="needs an alias, not a version"):
        client.delete_alias("credit-risk@2")
    with pytest.raises(InvalidInputError, match="not both"):
        client.set_alias("credit-risk@2", "x", name="credit-risk", version=2)
    with pytest.raises(InvalidInputError, match="needs a reference"):
        client.set_alias(alias="x", name="credit-risk")
    with pytest.raises(InvalidReferenceError):
        client.delete_alias("credit-risk@")


def test_search_models_and_versions(client):
    client.set_alias("credit-risk@2", "staging")
    client.set_tag("credit-risk@3", "team", "sme")

    assert [m.name for m in client.search_models()] == ["churn", "credit-risk"]
    assert [m.name for m in client.search_models("credit-*")] == ["credit-risk"]
    assert [m.name for m in client.search_models(alias="staging")] == ["credit-risk"]
    assert client.search_models("nothing*") == []

    assert [v.ref for v in client.search_versions("credit-risk")] == ["credit-risk@3", "credit-risk@2", "credit-risk@1"]
    assert [v.ref for v in client.search_versions(tags={"team": "retail"}, name="credit-*")] == [
        "credit-risk@2",
        "credit-risk@1",
    ]
    assert [v.ref for v in client.search_versions(alias="staging")] == ["credit-risk@2"]
    assert [v.ref for v in client.search_versions(flavor="sklearn", max_results=1)] == ["churn@1"]
    assert client.search_versions(flavor="onnx") == []
    with pytest.raises(InvalidInputError, match="invalid status"):
        client.search_versions(status="live")
    with pytest.raises(InvalidInputError, match="max_results"):
        client.search_versions(max_results=0)


def test_tags_and_descriptions_are_audited(client):
    client.set_tag("credit-risk@1", "stage", "pilot")
    client.delete_tag("credit-risk@1", "stage")
    client.set_description("credit-risk", "PD model for retail loans")
    client.set_description("credit-risk@2", "refit on Q3 data")

    assert "stage" not in client.get("credit-risk@1").tags
    assert [m.description for m in client.search_models("credit-risk")] == ["PD model for retail loans"]
    assert client.get("credit-risk@2").description == "refit on Q3 data"
    with pytest.raises(NotFoundError, match="has no tag 'stage'"):
        client.delete_tag("credit-risk@1", "stage")
    with pytest.raises(InvalidInputError, match="at most 10000 characters"):
        client.set_description("credit-risk", "x" * 10_001)

    with client.registry.reading() as session:
        actions = [e.action for e in iter_events(session)]
        assert verify(session).ok  # the rows changed agree with the log
    assert actions.count("description.set") == 2
    assert "tag.delete" in actions


def test_predict_takes_every_shape_in_the_schema_order(client, credit_files):
    rows = pd.read_json(credit_files["rows"]).to_dict(orient="records")
    model = client.load("credit-risk@1")
    expected = model.predict(pd.DataFrame(rows))
    features = model.version.input_schema.feature_names
    import pyarrow as pa

    shapes = {
        "list of dicts": rows,
        "dict of lists": {k: [r[k] for r in rows] for k in features},
        "pyarrow table": pa.Table.from_pylist(rows),
        "2-D array": np.array([[r[k] for k in features] for r in rows], dtype=object),
        "list of lists": [[r[k] for k in features] for r in rows],
    }
    for shape, data in shapes.items():
        pd.testing.assert_frame_equal(model.predict(data), expected, obj=shape)
    pd.testing.assert_frame_equal(client.predict("credit-risk@1", rows[0]), expected.head(1), obj="one dict")

    with pytest.raises(InvalidInputError, match="cannot score a str: give a pandas DataFrame, a pyarrow Table"):
        model.predict("income=1")
    with pytest.raises(InvalidInputError, match="the array has 2 columns; the model takes 4"):
        model.predict(np.zeros((3, 2)))
    with pytest.raises(InvalidInputError, match="cannot score a 1-D array"):
        model.predict(np.zeros(4))
    with pytest.raises(SchemaViolationError):
        model.predict({**rows[0], "age": "old"})


def test_flavor_found_in_an_mlflow_directory(client, tmp_path, credit_files):
    mlflow_sklearn = pytest.importorskip("mlflow.sklearn")
    pytest.importorskip("skops")
    import joblib

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow_sklearn.save_model(joblib.load(credit_files["model"]), tmp_path / "m", pip_requirements=["scikit-learn"])
    version = client.register("from-mlflow", tmp_path / "m", train_data=credit_files["train"], target="default")
    assert version.flavor == "mlflow"
    with pytest.raises(InvalidInputError, match=r"give the flavor of 'model\.joblib'"):
        client.register("needs-flavor", credit_files["model"])
