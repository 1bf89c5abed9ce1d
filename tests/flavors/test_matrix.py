"""The serving shortcuts of the flavors: ``predict_columns`` and, for positional numeric
models, ``predict_matrix`` give exactly what ``predict`` gives (ONNX: one float32 input)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.tree import DecisionTreeRegressor

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


def test_fitted_on_named_columns_keeps_the_frame(tmp_path: Path, numeric_data: Any) -> None:
    frame, binary, _ = numeric_data
    frame = frame.astype(np.float64)
    scorer = saved(tmp_path, "xgboost", models("xgboost"), frame, binary, named=True)
    assert not scorer.takes_matrix  # its feature names are checked against the frame's
    same_outputs(scorer, frame)


POSITIONAL = {
    "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(max_iter=20, random_state=0),
    "random_forest": lambda: RandomForestClassifier(n_estimators=10, random_state=0),
    "gradient_boosting": lambda: GradientBoostingClassifier(n_estimators=10, random_state=0),
    "logistic_regression": lambda: LogisticRegression(max_iter=500),
    "decision_tree_regressor": lambda: DecisionTreeRegressor(max_depth=4, random_state=0),
    "ridge": lambda: Ridge(),
}


@pytest.mark.parametrize("kind", POSITIONAL)
def test_fitted_on_a_dataframe_takes_a_matrix_in_its_fitted_order_with_identical_outputs(
    tmp_path: Path, numeric_data: Any, kind: str
) -> None:
    """The serving path of a DataFrame-fitted model gives what sklearn gives on the DataFrame, bit for bit."""
    from scoregate.schema import RecordValidator, infer_schema
    from scoregate.serving.batcher import Batcher

    frame, binary, _ = numeric_data
    frame = frame.astype(np.float64)
    frame.iloc[3, 1] = np.nan if kind == "hist_gradient_boosting" else frame.iloc[3, 1]
    model = POSITIONAL[kind]().fit(frame, binary if not kind.endswith(("regressor", "ridge")) else frame["x1"])
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    scorer = load_scorer("sklearn", path)
    assert scorer.takes_matrix and scorer.matrix_features == ["x1", "x2", "k"]
    expected = (model.predict_proba if hasattr(model, "predict_proba") else model.predict)(frame)
    columns = scorer.predict_matrix(frame.to_numpy(dtype=np.float64))
    got = np.column_stack([columns[c] for c in columns if c.startswith("proba_")]) if "proba_1" in columns else None
    np.testing.assert_array_equal(got if got is not None else columns["prediction"], expected)
    # through the server's batcher, with the schema's features in another order than the fit
    schema = infer_schema(frame[["k", "x2", "x1"]].assign(k=frame["k"].astype(np.float64)))
    batcher = Batcher(scorer, RecordValidator(schema), name="m@1", inline=True)
    records = frame.to_dict(orient="records")
    outputs = batcher.score_now(records)
    served = {name: np.asarray(values) for name, values in zip(outputs.names, outputs.columns, strict=True)}
    reference = scorer.predict(frame)  # sklearn on the DataFrame, names checked
    for name in reference.columns:
        np.testing.assert_array_equal(served[name], reference[name].to_numpy())
    batcher.close()


def test_models_that_need_their_names_keep_the_frame(tmp_path: Path, numeric_data: Any) -> None:
    from sklearn.ensemble import VotingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame, binary, _ = numeric_data
    frame = frame.astype(np.float64)
    categorical = frame.assign(k=frame["k"].astype(int).astype("category"))
    for model, data in (
        (VotingClassifier([("a", LogisticRegression()), ("b", LogisticRegression(C=0.1))], voting="soft"), frame),
        (make_pipeline(StandardScaler(), LogisticRegression()), frame),
        (HistGradientBoostingClassifier(max_iter=5, categorical_features="from_dtype"), categorical),
    ):
        path = tmp_path / "model.joblib"
        joblib.dump(model.fit(data, binary), path)
        scorer = load_scorer("sklearn", path)
        assert not scorer.takes_matrix, type(model).__name__
        same_outputs(scorer, data)
