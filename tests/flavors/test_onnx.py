from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression

skl2onnx = pytest.importorskip("skl2onnx")
pytest.importorskip("onnxruntime")

from scoregate.errors import FlavorError  # noqa: E402
from scoregate.flavors import get_flavor, load_scorer  # noqa: E402


def _save(model, sample, path, **kwargs):
    onx = skl2onnx.to_onnx(model, sample, **kwargs)
    path.write_bytes(onx.SerializeToString())
    return path


@pytest.mark.parametrize("zipmap", [False, True])
def test_classifier_string_labels(tmp_path, numeric_data, zipmap):
    frame, binary, _ = numeric_data
    X = frame.to_numpy()
    labels = np.where(binary == 1, "yes", "no")
    model = LogisticRegression().fit(X, labels)
    path = _save(model, X[:1].astype(np.float32), tmp_path / "model.onnx", options={id(model): {"zipmap": zipmap}})

    out = load_scorer("onnx", path).predict(frame)

    assert list(out.columns) == ["prediction", "proba_no", "proba_yes"]
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(X))
    np.testing.assert_allclose(out[["proba_no", "proba_yes"]].to_numpy(), model.predict_proba(X), atol=1e-5)


def test_multiclass_int_labels_zipmap(tmp_path, numeric_data):
    frame, _, multi = numeric_data
    X = frame.to_numpy()
    model = LogisticRegression(max_iter=500).fit(X, multi)
    path = _save(model, X[:1].astype(np.float32), tmp_path / "model.onnx")

    out = load_scorer("onnx", path).predict(frame)

    assert list(out.columns) == ["prediction", "proba_0", "proba_1", "proba_2"]
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(X))
    np.testing.assert_allclose(out.iloc[:, 1:].to_numpy(), model.predict_proba(X), atol=1e-5)


def test_regressor(tmp_path, numeric_data):
    frame, _, _ = numeric_data
    X = frame.to_numpy()
    model = RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0).fit(X, frame["x1"] * 2)
    path = _save(model, X[:1].astype(np.float32), tmp_path / "model.onnx")

    out = load_scorer("onnx", path).predict(frame)

    assert list(out.columns) == ["prediction"]
    np.testing.assert_allclose(out["prediction"].to_numpy(), model.predict(X), rtol=1e-5, atol=1e-5)


def test_one_input_per_column(tmp_path, mixed_data):
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, labels = mixed_data
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer([("num", StandardScaler(), ["x1", "k"]), ("cat", OneHotEncoder(), ["colour"])]),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(frame, labels)
    types = [
        ("x1", FloatTensorType([None, 1])),
        ("k", Int64TensorType([None, 1])),
        ("colour", StringTensorType([None, 1])),
    ]
    onx = skl2onnx.convert_sklearn(model, initial_types=types, options={id(model): {"zipmap": False}})
    path = tmp_path / "model.onnx"
    path.write_bytes(onx.SerializeToString())

    out = load_scorer("onnx", path).predict(frame)

    assert list(out.columns) == ["prediction", "proba_no", "proba_yes"]
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(frame))
    np.testing.assert_allclose(out[["proba_no", "proba_yes"]].to_numpy(), model.predict_proba(frame), atol=1e-5)


def test_packages():
    assert get_flavor("onnx").packages == ("onnxruntime", "onnx", "numpy")


def test_text_file_is_rejected(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_text("definitely not onnx")
    with pytest.raises(FlavorError, match="onnx flavor") as info:
        load_scorer("onnx", path)
    assert "\n" not in info.value.message


def test_xgboost_file_is_rejected(tmp_path, numeric_data):
    xgb = pytest.importorskip("xgboost")
    frame, binary, _ = numeric_data
    xgb.XGBClassifier(n_estimators=2, n_jobs=1).fit(frame, binary).save_model(tmp_path / "model.json")
    with pytest.raises(FlavorError, match="onnx flavor"):
        load_scorer("onnx", tmp_path / "model.json")
