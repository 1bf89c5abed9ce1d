"""Directories saved by MLflow (they hold an ``MLmodel`` YAML file).

The common framework flavors (sklearn, xgboost, lightgbm, onnx) are loaded with
scoregate's own flavors, so serving them needs neither MLflow nor its pyfunc
layer; anything else falls back to ``mlflow.pyfunc.load_model`` when MLflow is
installed. :func:`mlflow_signature_schema` turns the model's signature into a
:class:`~scoregate.schema.ModelSchema` for registration without training data.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pandas as pd

from scoregate.errors import FlavorError
from scoregate.flavors._outputs import one_line, to_output_frame
from scoregate.flavors.base import Flavor, Scorer
from scoregate.schema import Feature, FeatureType, ModelSchema

_MLFLOW_TYPES = {
    "double": FeatureType.FLOAT,
    "float": FeatureType.FLOAT,
    "long": FeatureType.INT,
    "integer": FeatureType.INT,
    "boolean": FeatureType.BOOL,
    "string": FeatureType.STRING,
    "datetime": FeatureType.DATETIME,
}


def read_mlmodel(path: Path) -> dict[str, Any]:
    """The parsed ``MLmodel`` file of the MLflow model directory ``path``."""
    path = Path(path)
    if path.is_file() and path.name == "MLmodel":
        path = path.parent
    mlmodel = path / "MLmodel"
    if not path.is_dir() or not mlmodel.is_file():
        what = "a file" if path.is_file() else ("a directory without MLmodel" if path.is_dir() else "nothing")
        raise FlavorError(f"mlflow flavor: expected an MLflow model directory with an MLmodel file, found {what}")
    import yaml

    try:
        document = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise FlavorError(f"mlflow flavor: MLmodel is not valid YAML: {one_line(exc)}") from None
    if not isinstance(document, dict) or not isinstance(document.get("flavors"), dict):
        raise FlavorError("mlflow flavor: MLmodel has no 'flavors' section")
    return document


class MLflowPyfuncScorer(Scorer):
    """Fallback for MLflow flavors scoregate does not load natively."""

    flavor = "mlflow"

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return to_output_frame(self.model.predict(frame), len(frame), self.flavor)


def _load_sklearn(path: Path, conf: dict[str, Any]) -> Scorer:
    from scoregate.flavors.sklearn import SklearnScorer

    file = path / str(conf.get("pickled_model") or "model.pkl")
    if not file.is_file():
        raise FlavorError(f"mlflow flavor: the sklearn model file {file.name!r} is missing")
    serialization = conf.get("serialization_format") or "cloudpickle"
    try:
        if serialization == "skops":
            import skops.io

            model = skops.io.load(file, trusted=conf.get("skops_trusted_types") or None)
        else:
            if serialization == "cloudpickle":
                import cloudpickle  # noqa: F401  (cloudpickled objects refer to it)
            with file.open("rb") as handle:
                model = pickle.load(handle)
    except ImportError as exc:
        raise FlavorError(f"mlflow flavor: loading a {serialization} sklearn model needs {exc.name}") from None
    except Exception as exc:
        raise FlavorError(f"mlflow flavor: cannot load the sklearn model {file.name!r}: {one_line(exc)}") from None
    return SklearnScorer(model)


def _data_file(path: Path, conf: dict[str, Any], flavor: str) -> Path:
    data = conf.get("data")
    if not data:
        raise FlavorError(f"mlflow flavor: the {flavor} flavor in MLmodel names no data file")
    file = path / str(data)
    if not file.exists():
        raise FlavorError(f"mlflow flavor: the {flavor} model file {data!r} is missing")
    return file


def _load_xgboost(path: Path, conf: dict[str, Any]) -> Scorer:
    from scoregate.flavors.xgboost import XGBoostFlavor

    return XGBoostFlavor().load(_data_file(path, conf, "xgboost"))


def _load_lightgbm(path: Path, conf: dict[str, Any]) -> Scorer:
    from scoregate.flavors.lightgbm import LightGBMFlavor

    file = _data_file(path, conf, "lightgbm")
    if file.suffix == ".pkl":  # sklearn-API LightGBM models are pickled by MLflow
        return _load_sklearn(path, {"pickled_model": file.name, "serialization_format": "cloudpickle"})
    return LightGBMFlavor().load(file)


def _load_onnx(path: Path, conf: dict[str, Any]) -> Scorer:
    from scoregate.flavors.onnx import OnnxFlavor

    return OnnxFlavor().load(_data_file(path, conf, "onnx"))


_NATIVE = {"sklearn": _load_sklearn, "xgboost": _load_xgboost, "lightgbm": _load_lightgbm, "onnx": _load_onnx}


class MLflowFlavor(Flavor):
    """Delegates to the native flavor; the returned scorer's ``flavor`` says which one."""

    name = "mlflow"
    packages = ("pyyaml", "cloudpickle", "numpy")

    def load(self, path: Path) -> Scorer:
        path = Path(path)
        flavors = read_mlmodel(path)["flavors"]
        if path.is_file():
            path = path.parent
        for name, loader in _NATIVE.items():
            if isinstance(flavors.get(name), dict):
                return loader(path, flavors[name])
        found = ", ".join(map(str, flavors)) or "none"
        try:
            import mlflow.pyfunc
        except ImportError:
            raise FlavorError(
                f"mlflow flavor: MLmodel has flavors {found}; none is native to scoregate and mlflow is not installed"
            ) from None
        try:
            return MLflowPyfuncScorer(mlflow.pyfunc.load_model(str(path)))
        except Exception as exc:
            raise FlavorError(
                f"mlflow flavor: mlflow could not load the model (flavors {found}): {one_line(exc)}"
            ) from None


def mlflow_signature_schema(path: Path) -> ModelSchema | None:
    """The column-based input signature of an MLflow model as a schema, or None if it has none.

    Raises :class:`FlavorError` for a signature column whose type has no scoregate equivalent.
    """
    signature = read_mlmodel(Path(path)).get("signature")
    if not isinstance(signature, dict) or not signature.get("inputs"):
        return None
    inputs = signature["inputs"]
    try:
        columns = json.loads(inputs) if isinstance(inputs, str) else inputs
    except json.JSONDecodeError as exc:
        raise FlavorError(f"mlflow flavor: the MLmodel signature inputs are not valid JSON: {one_line(exc)}") from None
    if not isinstance(columns, list) or not columns:
        return None
    features = []
    for column in columns:
        if not isinstance(column, dict) or column.get("type") == "tensor" or not column.get("name"):
            return None  # tensor-based or unnamed columns: no column schema to offer
        kind = _MLFLOW_TYPES.get(str(column["type"]))
        if kind is None:
            raise FlavorError(
                f"mlflow flavor: signature column {column['name']!r} has type {column['type']!r}, "
                f"which scoregate does not support (supported: {', '.join(_MLFLOW_TYPES)})"
            )
        nullable = not column.get("required", True)
        features.append(Feature(name=str(column["name"]), type=kind, nullable=nullable))
    return ModelSchema(features=features)


__all__ = ["MLflowFlavor", "MLflowPyfuncScorer", "mlflow_signature_schema", "read_mlmodel"]
