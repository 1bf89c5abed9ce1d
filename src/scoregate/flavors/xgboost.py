"""XGBoost native model files (``.json``/``.ubj``, ``Booster`` or ``XGBClassifier.save_model``).

Loaded as a plain ``Booster`` so that the sklearn wrapper is not needed at serving
time; the objective is read once at load to decide the output columns the same
way ``XGBClassifier.predict``/``predict_proba`` would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scoregate.errors import FlavorError
from scoregate.flavors._files import single_model_file
from scoregate.flavors._outputs import classifier_columns, one_line, output_frame, raw_columns
from scoregate.flavors.base import Flavor, Scorer

_MODEL_SUFFIXES = {".json", ".ubj", ".xgb", ".model", ".bin"}


class XGBoostScorer(Scorer):
    flavor = "xgboost"

    def __init__(self, booster: Any) -> None:
        import xgboost

        self._xgb = xgboost
        self.booster = booster
        config = json.loads(booster.save_config())
        learner = config["learner"]
        self.objective: str = learner["objective"]["name"]
        self._num_class = int(float(learner["learner_model_param"].get("num_class", "0") or 0))
        self._named = booster.feature_names is not None
        types = booster.feature_types or []
        names = booster.feature_names or []
        self._names = list(names)
        self._types = list(types) if types else None
        self._categorical = [n for n, t in zip(names, types, strict=False) if t == "c"]
        if self.objective == "binary:logistic":
            self._columns = ["proba_0", "proba_1"]
        elif self.objective == "multi:softprob":
            self._columns = [f"proba_{i}" for i in range(self._num_class)]
        else:
            self._columns = []
        # A positional model (no feature names) of numeric features reads a matrix as is.
        self.takes_matrix = not self._named and not self._categorical

    def _matrix(self, frame: pd.DataFrame) -> Any:
        if self._categorical:
            columns = {
                name: (
                    pd.Categorical(frame[name])
                    if name in self._categorical and not isinstance(frame[name].dtype, pd.CategoricalDtype)
                    else frame[name]
                )
                for name in frame.columns
            }
            frame = pd.DataFrame(columns, index=frame.index, copy=False)
            return self._xgb.DMatrix(frame, enable_categorical=True)
        values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
        if self._named:
            # a numeric DMatrix built from one array is about twice as fast as xgboost's
            # per-column pandas path, with identical results; names are checked here instead
            if list(frame.columns) != self._names:
                raise FlavorError(
                    f"xgboost flavor: the batch columns {list(frame.columns)} do not match the model's "
                    f"features {self._names}"
                )
            return self._xgb.DMatrix(values, feature_names=self._names, feature_types=self._types)
        return self._xgb.DMatrix(values)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return output_frame(self.predict_columns(frame), len(frame))

    def predict_columns(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        return self._outputs(lambda: self._matrix(frame))

    def predict_matrix(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        return self._outputs(lambda: self._xgb.DMatrix(matrix))

    def _outputs(self, dmatrix: Any) -> dict[str, np.ndarray]:
        try:
            raw = self.booster.predict(dmatrix())
        except ValueError as exc:  # feature names / count mismatch
            raise FlavorError(f"xgboost flavor: the input does not fit the model: {one_line(exc)}") from None
        if self.objective == "binary:logistic":
            proba = np.column_stack((1.0 - raw, raw))
            return classifier_columns((raw > 0.5).astype(np.int64), proba, self._columns)
        if self.objective == "multi:softprob":
            return classifier_columns(np.argmax(raw, axis=1), raw, self._columns)
        if self.objective == "multi:softmax":
            return raw_columns(raw.astype(np.int64))
        return raw_columns(raw, prefix="output")


class XGBoostFlavor(Flavor):
    name = "xgboost"
    packages = ("xgboost", "numpy")

    def load(self, path: Path) -> Scorer:
        path = _model_file(Path(path))
        try:
            import xgboost
        except ImportError:
            raise FlavorError("xgboost flavor: the xgboost package is not installed") from None
        try:
            booster = xgboost.Booster(model_file=str(path))
        except Exception as exc:
            with path.open("rb") as handle:
                head = handle.read(16)
            raise FlavorError(
                f"xgboost flavor: {path.name!r} is not an XGBoost model file (starts with {head!r}; {one_line(exc)})"
            ) from None
        return XGBoostScorer(booster)


def _model_file(path: Path) -> Path:
    return single_model_file(path, flavor="xgboost", suffixes=_MODEL_SUFFIXES, what=".json/.ubj model file")


__all__ = ["XGBoostFlavor", "XGBoostScorer"]
