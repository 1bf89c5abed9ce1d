"""Every format MLflow 3.x writes, saved by MLflow itself, loaded by scoregate with MLflow's numbers.

Each model is saved with ``mlflow.<flavor>.save_model`` in this test environment; the
reference is ``mlflow.pyfunc.load_model(path).predict`` on the same frame, and scoregate's
``pyfunc_outputs`` columns must equal it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from scoregate.errors import FlavorError
from scoregate.flavors import load_scorer
from scoregate.flavors.mlflow import mlflow_signature_params, mlflow_signature_schema

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("skops")


@pytest.fixture(autouse=True)
def _mlflow_may_unpickle(monkeypatch):
    # MLflow 3 refuses to deserialize any sklearn model (skops included) without this flag
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    logging.getLogger("mlflow").setLevel(logging.ERROR)


def _save(kind: str, model, path: Path, frame: pd.DataFrame, **kwargs) -> Path:
    from mlflow.models import infer_signature

    module = getattr(__import__(f"mlflow.{kind}"), kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module.save_model(model, path, signature=infer_signature(frame), pip_requirements=[kind], **kwargs)
    return path


def _pyfunc(path: Path, frame: pd.DataFrame) -> np.ndarray:
    import mlflow.pyfunc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(mlflow.pyfunc.load_model(str(path)).predict(frame))


def _scoregate(path: Path, frame: pd.DataFrame) -> tuple[object, np.ndarray]:
    scorer = load_scorer("mlflow", path)
    out = scorer.predict(frame)
    columns = list(scorer.pyfunc_outputs or ["prediction"])
    values = out[columns].to_numpy()
    return scorer, values[:, 0] if len(columns) == 1 else values


def _flavor_conf(path: Path, flavor: str) -> dict:
    return yaml.safe_load((path / "MLmodel").read_text())["flavors"][flavor]


@pytest.fixture(scope="module")
def frame(numeric_data):
    return numeric_data[0].astype({"k": "float64"})


def test_sklearn_default_format_is_skops_and_loads(tmp_path, frame, numeric_data):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(frame, numeric_data[1])
    path = _save("sklearn", model, tmp_path / "m", frame)  # MLflow 3's default: skops
    assert _flavor_conf(path, "sklearn")["serialization_format"] == "skops"
    assert (path / "model.skops").is_file()

    scorer, values = _scoregate(path, frame)

    assert scorer.flavor == "sklearn"
    assert "skops" in scorer.packages
    np.testing.assert_array_equal(values, _pyfunc(path, frame))


@pytest.mark.parametrize("serialization", ["pickle", "cloudpickle"])
def test_sklearn_pickle_formats(tmp_path, frame, numeric_data, serialization):
    from sklearn.ensemble import RandomForestRegressor

    model = RandomForestRegressor(n_estimators=5, random_state=0).fit(frame, numeric_data[1])
    path = _save("sklearn", model, tmp_path / "m", frame, serialization_format=serialization)

    _, values = _scoregate(path, frame)

    np.testing.assert_allclose(values, _pyfunc(path, frame), rtol=0, atol=0)


def test_sklearn_predict_proba_as_pyfunc(tmp_path, frame, numeric_data):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(frame, numeric_data[2])
    path = _save("sklearn", model, tmp_path / "m", frame, pyfunc_predict_fn="predict_proba")

    scorer, values = _scoregate(path, frame)

    assert scorer.pyfunc_outputs == ("proba_0", "proba_1", "proba_2")
    np.testing.assert_allclose(values, _pyfunc(path, frame), rtol=1e-12)


def test_lightgbm_classifier_in_skops(tmp_path, frame, numeric_data):
    lgb = pytest.importorskip("lightgbm")
    model = lgb.LGBMClassifier(n_estimators=5, verbose=-1, n_jobs=1).fit(frame, numeric_data[2])
    path = _save("lightgbm", model, tmp_path / "m", frame)
    assert _flavor_conf(path, "lightgbm")["serialization_format"] == "skops"

    scorer, values = _scoregate(path, frame)

    assert set(scorer.packages) >= {"skops", "lightgbm"}
    np.testing.assert_array_equal(values, _pyfunc(path, frame))


def test_lightgbm_booster_gives_the_probability(tmp_path, frame, numeric_data):
    lgb = pytest.importorskip("lightgbm")
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1}, lgb.Dataset(frame, numeric_data[1]), 5
    )
    path = _save("lightgbm", booster, tmp_path / "m", frame)

    scorer, values = _scoregate(path, frame)

    assert scorer.pyfunc_outputs == ("proba_1",)
    expected = _pyfunc(path, frame)
    assert not np.isin(expected, [0, 1]).all()  # MLflow returns probabilities, not labels
    np.testing.assert_allclose(values, expected, rtol=1e-12)


@pytest.mark.parametrize("objective", ["binary:logistic", "multi:softprob", "reg:squarederror"])
def test_xgboost_booster(tmp_path, frame, numeric_data, objective):
    xgb = pytest.importorskip("xgboost")
    params = {"objective": objective, "nthread": 1}
    label = numeric_data[1]
    if objective == "multi:softprob":
        params["num_class"] = 3
        label = numeric_data[2]
    booster = xgb.train(params, xgb.DMatrix(frame, label), 3)
    path = _save("xgboost", booster, tmp_path / "m", frame)

    _, values = _scoregate(path, frame)

    np.testing.assert_allclose(values, _pyfunc(path, frame), rtol=1e-6)


def test_xgboost_classifier(tmp_path, frame, numeric_data):
    xgb = pytest.importorskip("xgboost")
    model = xgb.XGBClassifier(n_estimators=3, n_jobs=1).fit(frame, numeric_data[2])
    path = _save("xgboost", model, tmp_path / "m", frame)

    _, values = _scoregate(path, frame)

    np.testing.assert_array_equal(values, _pyfunc(path, frame))


def test_onnx_model(tmp_path, frame, numeric_data):
    pytest.importorskip("onnxruntime")
    skl2onnx = pytest.importorskip("skl2onnx")
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(frame, numeric_data[1].astype(float))
    onx = skl2onnx.convert_sklearn(model, initial_types=[("input", FloatTensorType([None, 3]))])
    import mlflow.onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.onnx.save_model(onx, tmp_path / "m", pip_requirements=["onnx"])
    scorer = load_scorer("mlflow", tmp_path / "m")

    out = scorer.predict(frame.astype("float32"))
    expected = mlflow.pyfunc.load_model(str(tmp_path / "m")).predict(frame.astype("float32"))

    assert scorer.flavor == "onnx"
    np.testing.assert_allclose(out.iloc[:, 0].to_numpy(), expected.iloc[:, 0].to_numpy(), rtol=1e-6)


class _Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input["x1"] * 2 + model_input["k"]


def test_custom_pyfunc(tmp_path, frame):
    import mlflow.pyfunc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.pyfunc.save_model(tmp_path / "m", python_model=_Doubler(), pip_requirements=["pandas"])

    scorer, values = _scoregate(tmp_path / "m", frame)

    assert scorer.flavor == "mlflow"
    assert "mlflow-skinny" in scorer.packages
    np.testing.assert_allclose(values, _pyfunc(tmp_path / "m", frame))


def test_skops_without_the_package(tmp_path, frame, numeric_data, monkeypatch):
    import sys

    from sklearn.linear_model import LogisticRegression

    path = _save("sklearn", LogisticRegression().fit(frame, numeric_data[1]), tmp_path / "m", frame)
    monkeypatch.setitem(sys.modules, "skops", None)
    monkeypatch.setitem(sys.modules, "skops.io", None)
    with pytest.raises(FlavorError, match=r"skops format, which needs the skops package: pip install"):
        load_scorer("mlflow", path)


def _shift(values):
    return values + 1.0


def test_skops_untrusted_type_is_refused(tmp_path, frame, numeric_data):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    pipeline = make_pipeline(FunctionTransformer(_shift), LogisticRegression()).fit(frame, numeric_data[1])
    path = tmp_path / "m"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.sklearn.save_model(
            pipeline, path, pip_requirements=["scikit-learn"], skops_trusted_types=[f"{__name__}._shift"]
        )
    assert load_scorer("mlflow", path).predict(frame.head(2)) is not None  # trusted as MLflow recorded
    document = yaml.safe_load((path / "MLmodel").read_text())
    document["flavors"]["sklearn"]["skops_trusted_types"] = None  # the allow-list edited away
    (path / "MLmodel").write_text(yaml.safe_dump(document))
    with pytest.raises(FlavorError, match=r"cannot load the sklearn model 'model.skops'.*Untrusted"):
        load_scorer("mlflow", path)


def test_signature_refusals_name_the_type(tmp_path):
    def write(name, inputs, params=None):
        signature = {"inputs": inputs, "params": params}
        (tmp_path / name).mkdir()
        (tmp_path / name / "MLmodel").write_text(yaml.safe_dump({"flavors": {}, "signature": signature}))
        return tmp_path / name

    array = write("a", '[{"type": "array", "items": {"type": "double"}, "name": "v", "required": true}]')
    with pytest.raises(FlavorError, match=r"'v' has type 'array' of 'double'.*--train-data or --schema"):
        mlflow_signature_schema(array)
    binary = write("b", '[{"type": "binary", "name": "img"}]')
    with pytest.raises(FlavorError, match=r"'img' has type 'binary'"):
        mlflow_signature_schema(binary)
    tensor = write("t", '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 3]}}]')
    with pytest.raises(FlavorError, match=r"tensor-based \(dtype 'float64', shape \[-1, 3\]\)"):
        mlflow_signature_schema(tensor)
    params = '[{"name": "temperature", "type": "double", "default": 0.5, "shape": null}]'
    with_params = write("p", '[{"type": "double", "name": "x"}]', params)
    assert mlflow_signature_schema(with_params).feature_names == ["x"]
    assert mlflow_signature_params(with_params) == [
        {"name": "temperature", "type": "double", "default": 0.5, "shape": None}
    ]


def test_registered_skops_model_records_skops(registry, tmp_path, frame, numeric_data):
    from sklearn.linear_model import LogisticRegression

    path = _save("sklearn", LogisticRegression().fit(frame, numeric_data[1]), tmp_path / "m", frame)

    version = registry.register("mlflow-skops", path, flavor="mlflow")

    packages = version.environment["flavor_packages"]
    assert packages["skops"] is not None
    assert registry.load(version.ref).predict(frame.head(3)) is not None
