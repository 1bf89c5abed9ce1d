from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

lgb = pytest.importorskip("lightgbm")

from scoregate.errors import FlavorError  # noqa: E402
from scoregate.flavors import get_flavor, load_scorer  # noqa: E402

PARAMS = {"verbose": -1, "num_threads": 1, "num_leaves": 7, "min_data_in_leaf": 5}


def test_binary_sklearn_api(tmp_path, numeric_data):
    frame, binary, _ = numeric_data
    model = lgb.LGBMClassifier(n_estimators=10, **PARAMS).fit(frame, binary)
    path = tmp_path / "model.txt"
    model.booster_.save_model(path)

    out = load_scorer("lightgbm", path).predict(frame)

    assert list(out.columns) == ["prediction", "proba_0", "proba_1"]
    np.testing.assert_allclose(out[["proba_0", "proba_1"]].to_numpy(), model.predict_proba(frame), rtol=1e-6)
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(frame))


def test_regression_from_directory(tmp_path, numeric_data):
    frame, _, _ = numeric_data
    booster = lgb.train({"objective": "regression", **PARAMS}, lgb.Dataset(frame, frame["x1"] * 2), 10)
    booster.save_model(tmp_path / "model.txt")

    out = load_scorer("lightgbm", tmp_path).predict(frame)

    assert list(out.columns) == ["prediction"]
    np.testing.assert_allclose(out["prediction"].to_numpy(), booster.predict(frame), rtol=1e-6)


def test_multiclass(tmp_path, numeric_data):
    frame, _, multi = numeric_data
    booster = lgb.train({"objective": "multiclass", "num_class": 3, **PARAMS}, lgb.Dataset(frame, multi), 5)
    booster.save_model(tmp_path / "model.txt")

    out = load_scorer("lightgbm", tmp_path / "model.txt").predict(frame)

    expected = booster.predict(frame)
    assert list(out.columns) == ["prediction", "proba_0", "proba_1", "proba_2"]
    np.testing.assert_allclose(out.iloc[:, 1:].to_numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(out["prediction"].to_numpy(), expected.argmax(axis=1))


def test_string_category_feature(tmp_path, mixed_data):
    frame, labels = mixed_data
    train = frame.assign(colour=pd.Categorical(frame["colour"]))
    target = (labels == "yes").astype(int)
    booster = lgb.train({"objective": "binary", **PARAMS}, lgb.Dataset(train, target), 10)
    booster.save_model(tmp_path / "model.txt")

    rows = [5, 1, 9, 3, 0, 2]
    batch = frame.iloc[rows].reset_index(drop=True)  # Python str values, as serving passes them
    batch.loc[2, "colour"] = "purple"  # unseen level: missing, as in LightGBM's pandas path
    scorer = load_scorer("lightgbm", tmp_path / "model.txt")
    assert scorer.accepts_unseen() == {"colour"}  # native categoricals: registration opens the feature
    out = scorer.predict(batch)

    reference = train.iloc[rows].reset_index(drop=True)
    reference["colour"] = reference["colour"].cat.set_categories(["blue", "green", "red"])
    reference.loc[2, "colour"] = np.nan
    np.testing.assert_allclose(out["proba_1"].to_numpy(), booster.predict(reference), rtol=1e-6)


def test_packages():
    assert get_flavor("lightgbm").packages == ("lightgbm", "numpy")


@pytest.mark.parametrize("content", ["not a model\n", "tree\nversion=v4\ngarbage\n"])
def test_wrong_file_is_rejected(tmp_path, content):
    path = tmp_path / "model.txt"
    path.write_text(content)
    with pytest.raises(FlavorError, match="lightgbm flavor"):
        load_scorer("lightgbm", path)
