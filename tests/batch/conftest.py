"""Batch fixtures: a float model and its applicants in Parquet, registered in a fresh home."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from scoregate.config import Settings
from scoregate.registry import Registry

FEATURES = [f"x{i}" for i in range(5)]


def applicants(n: int, seed: int = 0, start_id: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(0, 1, (n, len(FEATURES))).clip(-4, 4), columns=FEATURES)
    frame.insert(0, "id", np.arange(start_id, start_id + n, dtype=np.int64))
    frame["customer_id"] = [f"c{i:07d}" for i in range(start_id, start_id + n)]
    return frame


def write_parquet(frame: pd.DataFrame, path: Path, row_group_rows: int) -> Path:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_rows)
    return path


@pytest.fixture
def batch_home(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def float_model(tmp_path: Path, batch_home: Settings):  # type: ignore[no-untyped-def]
    """credit-float@1: a HistGradientBoosting classifier on five floats, fitted on arrays."""
    train = applicants(2000, seed=1)
    train.loc[0, FEATURES], train.loc[1, FEATURES] = -4.0, 4.0  # the schema's ranges: [-4, 4]
    target = (train["x0"] + train["x1"] * 0.5 > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(train[FEATURES].to_numpy(), target)
    folder = tmp_path / "model"
    folder.mkdir()
    joblib.dump(model, folder / "model.joblib")
    data = train[FEATURES].assign(default=target)
    data.to_parquet(folder / "train.parquet", index=False)
    registry = Registry.open(batch_home)
    version = registry.register(
        "credit-float", folder / "model.joblib", flavor="sklearn", train_data=folder / "train.parquet", target="default"
    )
    registry.close()
    return version


CRASHER = '''
import os

import numpy as np
import pandas as pd


class Scorer:
    """Scores x0 + x1; a row whose x0 is exactly 77 kills the process, as a crash in native code would."""

    def predict(self, frame):
        if (frame["x0"] == 77.0).any():
            os._exit(3)
        return pd.DataFrame({"score": frame["x0"].to_numpy() + frame["x1"].to_numpy()})
'''


@pytest.fixture
def crasher(tmp_path: Path, batch_home: Settings):  # type: ignore[no-untyped-def]
    """credit-crash@1: a plain Python scorer that kills its process on x0 == 77."""
    path = tmp_path / "crasher.py"
    path.write_text(CRASHER)
    from scoregate.schema import ModelSchema

    schema = ModelSchema.model_validate({"features": [{"name": name, "type": "float"} for name in FEATURES]})
    registry = Registry.open(batch_home)
    version = registry.register("credit-crash", path, flavor="python", schema=schema)
    registry.close()
    return version
