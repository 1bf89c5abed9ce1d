"""A credit model registered with 5,000 training rows, and current data files beside it."""

from __future__ import annotations

from pathlib import Path

import joblib
import pytest
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from scoregate.config import Settings
from scoregate.registry import Registry
from tests.conftest import make_credit_data


@pytest.fixture
def credit(tmp_path: Path, home: Path) -> dict[str, Path]:
    """credit-risk@1 registered in ``home`` (the CLI's), with train.parquet and shifted/unshifted current files."""
    frame = make_credit_data(5_000, seed=0)
    features = frame.drop(columns="default")
    model = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["purpose"]), remainder=StandardScaler()),
        LogisticRegression(max_iter=500),
    ).fit(features, frame["default"])
    folder = tmp_path / "data"
    folder.mkdir()
    paths = {"model": folder / "model.joblib", "train": folder / "train.parquet"}
    joblib.dump(model, paths["model"])
    frame.to_parquet(paths["train"], index=False)
    same = make_credit_data(3_000, seed=1)
    same.to_parquet(folder / "same.parquet", index=False)
    same.to_csv(folder / "same.csv", index=False)
    shifted = make_credit_data(3_000, seed=2)
    shifted["income"] = shifted["income"] + 12_000  # one standard deviation
    shifted.to_parquet(folder / "shifted.parquet", index=False)
    paths |= {"same": folder / "same.parquet", "same_csv": folder / "same.csv", "shifted": folder / "shifted.parquet"}
    registry = Registry(Settings(home=home))
    try:
        registry.register("credit-risk", paths["model"], flavor="sklearn", train_data=paths["train"], target="default")
    finally:
        registry.close()
    return paths
