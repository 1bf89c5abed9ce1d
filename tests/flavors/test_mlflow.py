from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from scoregate.errors import FlavorError
from scoregate.flavors import get_flavor, load_scorer
from scoregate.flavors.mlflow import mlflow_signature_schema
from scoregate.schema import FeatureType

mlflow_sklearn = pytest.importorskip("mlflow.sklearn")


@pytest.fixture(scope="module")
def saved_sklearn(tmp_path_factory, numeric_data):
    from mlflow.models import infer_signature

    frame, binary, _ = numeric_data
    model = LogisticRegression().fit(frame, binary)
    path = tmp_path_factory.mktemp("mlflow") / "model"
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow_sklearn.save_model(
            model,
            path,
            serialization_format="cloudpickle",
            signature=infer_signature(frame, binary),
            pip_requirements=["scikit-learn"],  # skip requirement inference (slow)
        )
    return model, path


def test_sklearn_model(saved_sklearn, numeric_data):
    frame, _, _ = numeric_data
    model, path = saved_sklearn

    scorer = load_scorer("mlflow", path)
    out = scorer.predict(frame)

    assert scorer.flavor == "sklearn"
    assert list(out.columns) == ["prediction", "proba_0", "proba_1"]
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(frame))
    np.testing.assert_allclose(out[["proba_0", "proba_1"]].to_numpy(), model.predict_proba(frame), rtol=1e-6)


def test_signature_schema(saved_sklearn):
    _, path = saved_sklearn
    schema = mlflow_signature_schema(path)
    assert schema is not None
    assert schema.feature_names == ["x1", "x2", "k"]
    assert [f.type for f in schema.features] == [FeatureType.FLOAT, FeatureType.FLOAT, FeatureType.INT]
    assert not any(f.nullable for f in schema.features)


def _write_mlmodel(path, document):
    path.mkdir(parents=True, exist_ok=True)
    (path / "MLmodel").write_text(yaml.safe_dump(document))


def test_signature_types_and_absence(tmp_path):
    columns = [
        {"type": "double", "name": "a", "required": True},
        {"type": "long", "name": "b", "required": False},
        {"type": "boolean", "name": "c"},
        {"type": "string", "name": "d"},
        {"type": "datetime", "name": "e"},
        {"type": "float", "name": "f"},
        {"type": "integer", "name": "g"},
    ]
    _write_mlmodel(tmp_path / "m", {"flavors": {}, "signature": {"inputs": json.dumps(columns)}})
    schema = mlflow_signature_schema(tmp_path / "m")
    assert [f.type.value for f in schema.features] == ["float", "int", "bool", "string", "datetime", "float", "int"]
    assert [f.nullable for f in schema.features] == [False, True, False, False, False, False, False]

    _write_mlmodel(tmp_path / "n", {"flavors": {}})
    assert mlflow_signature_schema(tmp_path / "n") is None

    tensor = [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 3]}}]
    _write_mlmodel(tmp_path / "t", {"flavors": {}, "signature": {"inputs": json.dumps(tensor)}})
    with pytest.raises(FlavorError, match="tensor-based"):
        mlflow_signature_schema(tmp_path / "t")

    _write_mlmodel(tmp_path / "b", {"flavors": {}, "signature": {"inputs": '[{"type": "binary", "name": "x"}]'}})
    with pytest.raises(FlavorError, match="'binary'"):
        mlflow_signature_schema(tmp_path / "b")


def test_xgboost_model_is_delegated(tmp_path, numeric_data):
    xgb = pytest.importorskip("xgboost")
    frame, binary, _ = numeric_data
    model = xgb.XGBClassifier(n_estimators=3, n_jobs=1).fit(frame, binary)
    model.save_model(tmp_path / "model.ubj")
    _write_mlmodel(tmp_path, {"flavors": {"xgboost": {"data": "model.ubj", "model_class": "xgboost.XGBClassifier"}}})

    scorer = load_scorer("mlflow", tmp_path)

    assert scorer.flavor == "xgboost"
    np.testing.assert_array_equal(scorer.predict(frame)[["proba_0", "proba_1"]].to_numpy(), model.predict_proba(frame))


def test_packages():
    assert get_flavor("mlflow").packages == ("pyyaml", "cloudpickle", "numpy")


def test_directory_without_mlmodel(tmp_path):
    (tmp_path / "model.pkl").write_bytes(b"\x80\x04.")
    with pytest.raises(FlavorError, match=r"mlflow flavor.*MLmodel"):
        load_scorer("mlflow", tmp_path)


def test_file_is_rejected(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text("hello")
    with pytest.raises(FlavorError, match=r"mlflow flavor.*found a file"):
        load_scorer("mlflow", path)


def test_unknown_flavor_without_native_loader(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow.pyfunc", None)  # as if mlflow were not installed
    _write_mlmodel(tmp_path, {"flavors": {"keras": {"data": "model.keras"}}})
    with pytest.raises(FlavorError, match="mlflow flavor: MLmodel has flavors keras"):
        load_scorer("mlflow", tmp_path)
