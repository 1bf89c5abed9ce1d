"""The serving shortcuts of the flavors: ``predict_columns`` and, for positional numeric
models, ``predict_matrix`` give exactly what ``predict`` gives (ONNX: one float32 input)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from scoregate.flavors import load_scorer


def same_outputs(scorer: Any, frame: pd.DataFrame) -> None:
    expected = scorer.predict(frame)
    columns = scorer.predict_columns(frame)
    assert list(columns) == list(expected.columns)
    for name, values in columns.items():
        np.testing.assert_array_equal(values, expected[name].to_numpy())
    if scorer.takes_matrix:
        matrix = scorer.predict_matrix(frame.to_numpy(dtype=np.float64))
        assert list(matrix) == list(expected.columns)
        for name, values in matrix.items():
            np.testing.assert_array_equal(values, expected[name].to_numpy())


def saved(tmp_path: Path, flavor: str, model: Any, frame: pd.DataFrame, y: np.ndarray, *, named: bool) -> Any:
    data = frame if named else frame.to_numpy(dtype=np.float64)
    if flavor == "sklearn":
        path = tmp_path / "model.joblib"
        joblib.dump(model.fit(data, y), path)
    elif flavor == "xgboost":
        path = tmp_path / "model.json"
        model.fit(data, y).save_model(path)
    elif flavor == "lightgbm":
        path = tmp_path / "model.txt"
        model.fit(data, y).booster_.save_model(path)
    else:
        skl2onnx = pytest.importorskip("skl2onnx")
        fitted = model.fit(data, y)
        path = tmp_path / "model.onnx"
        path.write_bytes(skl2onnx.to_onnx(fitted, data[:1].astype(np.float32)).SerializeToString())
    return load_scorer(flavor, path)


def models(flavor: str) -> Any:
    if flavor == "sklearn":
        return HistGradientBoostingClassifier(max_iter=10, random_state=0)
    if flavor == "xgboost":
        xgb = pytest.importorskip("xgboost")
        return xgb.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1)
    if flavor == "lightgbm":
        lgb = pytest.importorskip("lightgbm")
        return lgb.LGBMClassifier(n_estimators=8, num_leaves=7, verbose=-1, n_jobs=1)
    pytest.importorskip("onnxruntime")
    return LogisticRegression(max_iter=500)


@pytest.mark.parametrize("flavor", ["sklearn", "xgboost", "lightgbm", "onnx"])
def test_fitted_on_arrays_takes_a_matrix_with_the_same_outputs(tmp_path: Path, numeric_data: Any, flavor: str) -> None:
    frame, binary, _ = numeric_data
    frame = frame.astype(np.float64)
    scorer = saved(tmp_path, flavor, models(flavor), frame, binary, named=False)
    assert scorer.takes_matrix
    same_outputs(scorer, frame)
    with_nan = frame.head(5).copy()
    with_nan.iloc[0, 0] = np.nan
    same_outputs(scorer, with_nan)


@pytest.mark.parametrize("flavor", ["sklearn", "xgboost"])
def test_fitted_on_named_columns_keeps_the_frame(tmp_path: Path, numeric_data: Any, flavor: str) -> None:
    frame, binary, _ = numeric_data
    frame = frame.astype(np.float64)
    scorer = saved(tmp_path, flavor, models(flavor), frame, binary, named=True)
    assert not scorer.takes_matrix  # its feature names are checked against the frame's
    same_outputs(scorer, frame)
