"""scikit-learn estimators and Pipelines saved with joblib or pickle.

Introspection (DataFrame or array input, classifier or not, class names) happens
once at load time; a Pipeline's preprocessing runs once per batch even though
both ``predict`` and ``predict_proba`` are needed.

Most models are fitted on DataFrames, and then sklearn checks the feature names of
every frame it is given and converts it to an array, which cost a HistGradientBoosting
model 1.3-2.3 ms per call on 1-64 rows against 0.9-1.1 ms for the same rows as an
array. For a plain estimator that only reads its input by position (trees, ensembles
of trees, linear models, ...), the scorer keeps a shallow copy without
``feature_names_in_`` and gives it a float matrix whose columns are in the fitted
order (:attr:`SklearnScorer.matrix_features`): the same numbers in the same layout,
so the same outputs bit for bit (tested), without the per-call check. A copy that
warns or answers differently on a probe row at load time is not used.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
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
        #: The estimator that takes a matrix: the model itself, or its positional copy (see above).
        self._by_position: Any = None if self._wants_frame else model
        #: Columns of the matrix :meth:`predict_matrix` takes, when not simply the schema's order.
        self.matrix_features: list[str] | None = None
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
        if self._wants_frame and self._pre is None:
            self._by_position = _positional_copy(model, self._proba_columns is not None)
            if self._by_position is not None:
                self.matrix_features = [str(n) for n in model.feature_names_in_]
        self.takes_matrix = self._by_position is not None

    def accepts_unseen(self) -> frozenset[str]:
        return unseen_tolerant_columns(self.model)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return output_frame(self.predict_columns(frame), len(frame))

    def predict_columns(self, frame: pd.DataFrame) -> dict[str, Any]:
        if self._wants_frame:
            return self._predict_data(frame, self.model if self._pre is not None else self._final)
        return self._predict_data(frame.to_numpy(), self._final)

    def predict_matrix(self, matrix: Any) -> dict[str, Any]:
        if self._by_position is None:
            raise NotImplementedError("this model was fitted on a DataFrame: it needs predict_columns")
        return self._predict_data(matrix, self._by_position)

    def _predict_data(self, data: Any, final: Any) -> dict[str, Any]:
        if self._proba_columns is None:
            return raw_columns(final.predict(data), prefix="output")
        if self._pre is not None:
            data = self._pre.transform(data)
            final = self._final
        proba = final.predict_proba(data)
        labels = final.classes_.take(proba.argmax(axis=1)) if self._labels_from_proba else final.predict(data)
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


#: Estimator families that read their input by position only, once fitted.
_POSITIONAL_MODULES = (
    "sklearn.ensemble._hist_gradient_boosting",
    "sklearn.ensemble._forest",
    "sklearn.ensemble._gb",
    "sklearn.tree",
    "sklearn.linear_model",
    "sklearn.naive_bayes",
    "sklearn.discriminant_analysis",
    "sklearn.neural_network",
)


def _positional_copy(model: Any, classifier: bool) -> Any:
    """A shallow copy of ``model`` without its feature names, or None when that is not safe:
    not a plain positional estimator, names that are not strings, categorical features read
    from pandas dtypes, or a copy that warns or differs from the original on a probe row."""
    if not type(model).__module__.startswith(_POSITIONAL_MODULES):
        return None
    names = model.__dict__.get("feature_names_in_")
    if names is None or not all(isinstance(n, str) for n in names):
        return None
    categorical = getattr(model, "is_categorical_", None)
    if categorical is not None and np.any(categorical):
        return None
    positional = copy.copy(model)
    del positional.feature_names_in_
    probe = np.zeros((1, len(names)), dtype=np.float64)
    method = "predict_proba" if classifier else "predict"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a sub-estimator that still checks names warns: not safe
            by_position = getattr(positional, method)(probe)
        by_name = getattr(model, method)(pd.DataFrame(probe, columns=list(names)))
    except Exception:
        return None
    if not np.array_equal(np.asarray(by_position), np.asarray(by_name)):
        return None
    return positional


def unseen_tolerant_columns(model: Any) -> frozenset[str]:
    """The input columns every transformer of which takes an unknown category level.

    Read from the fitted objects, not guessed: a Pipeline whose first step is a
    ColumnTransformer (or an encoder), where a column's encoders are all
    ``OneHotEncoder(handle_unknown="ignore" | "infrequent_if_exist")`` or
    ``OrdinalEncoder(handle_unknown="use_encoded_value")``, possibly after a SimpleImputer,
    or the column is dropped. Anything else (an encoder that raises, a custom transformer,
    a column also read by a scaler) leaves the column closed.
    """
    first = model
    while _is_pipeline(first):
        if not first.steps:
            return frozenset()
        first = first.steps[0][1]
    if _tolerant_chain(first):
        return frozenset(str(n) for n in getattr(first, "feature_names_in_", ()))
    names = getattr(first, "feature_names_in_", None)
    fitted = getattr(first, "transformers_", None)
    if names is None or fitted is None:
        return frozenset()
    names = [str(n) for n in names]
    verdict: dict[str, bool] = {}
    for _, transformer, columns in fitted:
        for column in _column_names(columns, names):
            tolerant = transformer == "drop" or _tolerant_chain(transformer)
            verdict[column] = verdict.get(column, True) and tolerant
    return frozenset(c for c, ok in verdict.items() if ok)


def _is_pipeline(model: Any) -> bool:
    from sklearn.pipeline import Pipeline

    return isinstance(model, Pipeline)


def _tolerant_chain(transformer: Any) -> bool:
    """An encoder that takes unknown levels, alone or at the end of imputers inside a Pipeline."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    steps = [step for _, step in transformer.steps] if _is_pipeline(transformer) else [transformer]
    for step in steps:
        if isinstance(step, SimpleImputer):
            continue  # passes strings it has not seen through unchanged
        if isinstance(step, OneHotEncoder):
            return step.handle_unknown in ("ignore", "infrequent_if_exist")
        if isinstance(step, OrdinalEncoder):
            return step.handle_unknown == "use_encoded_value"
        return False
    return False


def _column_names(columns: Any, names: list[str]) -> list[str]:
    """A ColumnTransformer's column selection (names, positions or a mask) as names."""
    if isinstance(columns, str):
        return [columns]
    if callable(columns):
        return []
    out = []
    items = list(np.asarray(columns).tolist()) if not isinstance(columns, list) else columns
    if items and all(isinstance(i, bool) for i in items):
        return [n for n, keep in zip(names, items, strict=False) if keep]
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, int) and -len(names) <= item < len(names):
            out.append(names[item])
    return out


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
