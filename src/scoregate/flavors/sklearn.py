"""scikit-learn estimators and Pipelines saved with joblib or pickle.

Introspection (DataFrame or array input, classifier or not, class names) happens
once at load time; a Pipeline's preprocessing runs once per batch even though
both ``predict`` and ``predict_proba`` are needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from scoregate.errors import FlavorError
from scoregate.flavors._files import single_model_file
from scoregate.flavors._outputs import classifier_columns, one_line, output_frame, proba_columns, raw_columns
from scoregate.flavors.base import Flavor, Scorer


class SklearnScorer(Scorer):
    flavor = "sklearn"

    def __init__(self, model: Any) -> None:
        if not callable(getattr(model, "predict", None)):
            raise FlavorError(f"sklearn flavor: the loaded object is a {type(model).__name__}, which has no predict()")
        self.model = model
        self._wants_frame = hasattr(model, "feature_names_in_")
        self.takes_matrix = not self._wants_frame
        self._proba_columns: list[str] | None = None
        self._pre: Any = None
        self._final: Any = model
        self._labels_from_proba = False
        if callable(getattr(model, "predict_proba", None)) and hasattr(model, "classes_"):
            self._proba_columns = proba_columns(list(model.classes_))
            steps = getattr(model, "steps", None)
            if steps and len(steps) > 1 and _plain_pipeline(model):
                # transform once, then ask the final step for labels and probabilities
                self._pre = model[:-1]
                self._final = steps[-1][1]
            # Where predict is the argmax of predict_proba, one framework call gives both.
            self._labels_from_proba = _predict_is_argmax(self._final)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return output_frame(self.predict_columns(frame), len(frame))

    def predict_columns(self, frame: pd.DataFrame) -> dict[str, Any]:
        return self._predict_data(frame if self._wants_frame else frame.to_numpy())

    def predict_matrix(self, matrix: Any) -> dict[str, Any]:
        if self._wants_frame:
            raise NotImplementedError("this model was fitted on a DataFrame: it needs predict_columns")
        return self._predict_data(matrix)

    def _predict_data(self, data: Any) -> dict[str, Any]:
        if self._proba_columns is None:
            return raw_columns(self.model.predict(data), prefix="output")
        if self._pre is not None:
            data = self._pre.transform(data)
        proba = self._final.predict_proba(data)
        if self._labels_from_proba:
            labels = self._final.classes_.take(proba.argmax(axis=1))
        else:
            labels = self._final.predict(data)
        return classifier_columns(labels, proba, self._proba_columns)


#: Estimator families whose ``predict`` is ``classes_[argmax(predict_proba)]`` (ties go to the
#: first class in both). SVC-style models, whose probabilities are calibrated separately from
#: their decision function, are not in the list and keep two calls.
_ARGMAX_MODULES = (
    "sklearn.ensemble",
    "sklearn.tree",
    "sklearn.linear_model",
    "sklearn.naive_bayes",
    "sklearn.neighbors",
    "sklearn.discriminant_analysis",
    "sklearn.neural_network",
    "xgboost.sklearn",
    "lightgbm.sklearn",
)


def _predict_is_argmax(estimator: Any) -> bool:
    module = type(estimator).__module__
    return module.startswith(_ARGMAX_MODULES) and hasattr(estimator, "classes_")


def _plain_pipeline(model: Any) -> bool:
    """True for an sklearn Pipeline whose predict is exactly transform-then-final-predict."""
    try:
        from sklearn.pipeline import Pipeline
    except ImportError:  # pragma: no cover - sklearn is a core dependency
        return False
    return type(model) is Pipeline and model.steps[-1][1] not in (None, "passthrough")


_MODEL_SUFFIXES = frozenset({".joblib", ".pkl", ".pickle"})


class SklearnFlavor(Flavor):
    name = "sklearn"
    packages = ("scikit-learn", "joblib", "numpy")

    def load(self, path: Path) -> Scorer:
        path = single_model_file(
            path, flavor="sklearn", suffixes={".joblib", ".pkl", ".pickle"}, what=".joblib/.pkl file"
        )
        try:
            import joblib

            model = joblib.load(path)
        except Exception as exc:
            with path.open("rb") as handle:
                head = handle.read(16)
            raise FlavorError(
                f"sklearn flavor: {path.name!r} is not a loadable joblib/pickle file "
                f"(starts with {head!r}; {one_line(exc)})"
            ) from None
        return SklearnScorer(model)


__all__ = ["SklearnFlavor", "SklearnScorer"]
