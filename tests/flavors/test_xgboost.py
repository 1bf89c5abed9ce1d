from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

xgb = pytest.importorskip("xgboost")

from scoregate.errors import FlavorError  # noqa: E402
from scoregate.flavors import get_flavor, load_scorer  # noqa: E402


def test_binary_classifier_json(tmp_path, numeric_data):
    frame, binary, _ = numeric_data
    model = xgb.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1).fit(frame, binary)
    path = tmp_path / "model.json"
    model.save_model(path)

    out = load_scorer("xgboost", path).predict(frame)

    assert list(out.columns) == ["prediction", "proba_0", "proba_1"]
    np.testing.assert_array_equal(out[["proba_0", "proba_1"]].to_numpy(), model.predict_proba(frame))
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(frame))
    assert out["prediction"].dtype == np.int64


def test_multiclass_booster_ubj(tmp_path, numeric_data):
    frame, _, multi = numeric_data
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(frame, label=multi), num_boost_round=6)
    path = tmp_path / "model.ubj"
    booster.save_model(path)

    out = load_scorer("xgboost", path).predict(frame)

    expected = booster.predict(xgb.DMatrix(frame))
    assert list(out.columns) == ["prediction", "proba_0", "proba_1", "proba_2"]
    np.testing.assert_array_equal(out.iloc[:, 1:].to_numpy(), expected)
    np.testing.assert_array_equal(out["prediction"].to_numpy(), expected.argmax(axis=1))


def test_regression_and_directory(tmp_path, numeric_data):
    frame, _, _ = numeric_data
    model = xgb.XGBRegressor(n_estimators=5, max_depth=2, n_jobs=1).fit(frame, frame["x1"] * 3)
    model.save_model(tmp_path / "model.json")

    out = load_scorer("xgboost", tmp_path).predict(frame)

    assert list(out.columns) == ["prediction"]
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(frame))


def test_string_category_feature(tmp_path, mixed_data):
    frame, labels = mixed_data
    train = frame.assign(colour=pd.Categorical(frame["colour"]))
    model = xgb.XGBClassifier(n_estimators=5, max_depth=3, enable_categorical=True, n_jobs=1)
    model.fit(train, (labels == "yes").astype(int))
    path = tmp_path / "model.json"
    model.save_model(path)

    batch = frame.iloc[[5, 1, 9, 3]].reset_index(drop=True)  # strings, some levels absent
    out = load_scorer("xgboost", path).predict(batch)

    expected = model.predict_proba(train.iloc[[5, 1, 9, 3]])
    np.testing.assert_allclose(out[["proba_0", "proba_1"]].to_numpy(), expected, rtol=1e-6)


def test_packages():
    assert get_flavor("xgboost").packages == ("xgboost", "numpy")


def test_text_file_is_rejected(tmp_path):
    path = tmp_path / "model.json"
    path.write_text('{"hello": "world"}')
    with pytest.raises(FlavorError, match="xgboost flavor"):
        load_scorer("xgboost", path)


def test_wrong_feature_names(tmp_path, numeric_data):
    frame, binary, _ = numeric_data
    model = xgb.XGBClassifier(n_estimators=2, n_jobs=1).fit(frame, binary)
    model.save_model(tmp_path / "model.json")
    scorer = load_scorer("xgboost", tmp_path / "model.json")
    with pytest.raises(FlavorError, match="xgboost flavor"):
        scorer.predict(frame.rename(columns={"x1": "other"}))
