"""LightGBM model text files (``Booster.save_model``), or a directory holding one.

The objective and the categorical features are read once at load time. Batches
are handed to LightGBM as one float64 array, with string categories turned into
the training category codes exactly as LightGBM's own pandas path does, which
avoids its per-call DataFrame inspection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scoregate.errors import FlavorError
from scoregate.flavors._files import single_model_file
from scoregate.flavors._outputs import classifier_columns, one_line, output_frame, raw_columns
from scoregate.flavors.base import Flavor, Scorer

_MODEL_SUFFIXES = {".txt", ".lgb", ".model"}


class LightGBMScorer(Scorer):
    flavor = "lightgbm"

    def __init__(self, booster: Any, objective: str) -> None:
        self.booster = booster
        self.objective = objective.split()[0] if objective else ""
        self.num_class = booster.num_model_per_iteration() if self.objective.startswith("multiclass") else 1
        names = booster.feature_name()
        categorical = _categorical_indices(booster, names)
        levels = booster.pandas_categorical or []
        # pandas_categorical lists the levels of the category columns in column order
        self._categories: dict[str, list[Any]] = {}
        if levels and len(levels) == len(categorical):
            self._categories = {names[i]: list(cats) for i, cats in zip(categorical, levels, strict=True)}
        if self.objective == "binary":
            self._columns = ["proba_0", "proba_1"]
        elif self.objective.startswith("multiclass"):
            self._columns = [f"proba_{i}" for i in range(self.num_class)]
        else:
            self._columns = []
        # Numeric features only: the batch matrix is what _array would build from a frame.
        self.takes_matrix = not self._categories

    def accepts_unseen(self) -> frozenset[str]:
        # An unknown level has no training code: it becomes NaN, which LightGBM sends down
        # each split's missing-value branch, exactly as its own pandas path does.
        return frozenset(self._categories)

    def _array(self, frame: pd.DataFrame) -> np.ndarray:
        if not self._categories:
            return frame.to_numpy(dtype=np.float64, na_value=np.nan)
        out = np.empty(frame.shape, dtype=np.float64)
        for j, name in enumerate(frame.columns):
            column = frame[name]
            cats = self._categories.get(name)
            if cats is None:
                out[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                codes = pd.Categorical(column, categories=cats).codes.astype(np.float64)
                codes[codes < 0] = np.nan
                out[:, j] = codes
        return out

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return output_frame(self.predict_columns(frame), len(frame))

    def predict_columns(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        return self.predict_matrix(self._array(frame))

    def predict_matrix(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        try:
            raw = self.booster.predict(matrix)
        except Exception as exc:
            raise FlavorError(f"lightgbm flavor: the input does not fit the model: {one_line(exc)}") from None
        if self.objective == "binary":
            proba = np.column_stack((1.0 - raw, raw))
            return classifier_columns((raw > 0.5).astype(np.int64), proba, self._columns)
        if self._columns:
            return classifier_columns(np.argmax(raw, axis=1), raw, self._columns)
        return raw_columns(raw, prefix="output")


def _categorical_indices(booster: Any, names: list[str]) -> list[int]:
    value = (booster.params or {}).get("categorical_feature")
    if value in (None, "", []):
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    indices = []
    for item in items:
        item = str(item).strip()
        if item.startswith("name:"):
            item = item[5:]
        if item.lstrip("-").isdigit():
            indices.append(int(item))
        elif item in names:
            indices.append(names.index(item))
    return sorted(set(indices))


def _objective(path: Path) -> str:
    """The ``objective=`` line of the model file's header (before the first tree)."""
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("objective="):
                return line.split("=", 1)[1].strip()
            if line.startswith("Tree="):
                break
    return ""


class LightGBMFlavor(Flavor):
    name = "lightgbm"
    packages = ("lightgbm", "numpy")

    def load(self, path: Path) -> Scorer:
        path = _model_file(Path(path))
        with path.open("rb") as handle:
            head = handle.read(16)
        if not head.startswith(b"tree\n") and not head.startswith(b"tree\r\n"):
            raise FlavorError(
                f"lightgbm flavor: {path.name!r} is not a LightGBM model text file (starts with {head!r})"
            )
        try:
            import lightgbm
        except ImportError:
            raise FlavorError("lightgbm flavor: the lightgbm package is not installed") from None
        try:
            booster = lightgbm.Booster(model_file=str(path))
        except Exception as exc:
            raise FlavorError(f"lightgbm flavor: cannot load {path.name!r}: {one_line(exc)}") from None
        return LightGBMScorer(booster, _objective(path))


def _model_file(path: Path) -> Path:
    return single_model_file(path, flavor="lightgbm", suffixes=_MODEL_SUFFIXES, what="model text file (.txt)")


__all__ = ["LightGBMFlavor", "LightGBMScorer"]
