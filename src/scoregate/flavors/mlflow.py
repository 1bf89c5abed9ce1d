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


#: MLflow's sklearn serialization formats and the package each needs to load.
_SERIALIZATIONS = {"pickle": (), "cloudpickle": ("cloudpickle",), "skops": ("skops",)}


def _sklearn_object(file: Path, conf: dict[str, Any], flavor: str) -> Any:
    """The estimator in ``file``, saved by MLflow as pickle, cloudpickle or skops.

    skops refuses types outside its allow-list: the list MLflow recorded in MLmodel
    (``skops_trusted_types``) is the one used, exactly as ``mlflow.sklearn`` does.
    """
    serialization = str(conf.get("serialization_format") or "cloudpickle")
    if serialization not in _SERIALIZATIONS:
        raise FlavorError(
            f"mlflow flavor: the {flavor} model's serialization_format {serialization!r} is not one of "
            f"{', '.join(_SERIALIZATIONS)}"
        )
    if not file.is_file():
        raise FlavorError(f"mlflow flavor: the {flavor} model file {file.name!r} is missing")
    try:
        if serialization == "skops":
            try:
                import skops.io
            except ImportError:
                raise FlavorError(
                    f"mlflow flavor: {file.name!r} is saved in the skops format, which needs the skops package: "
                    "pip install 'scoregate[skops]'"
                ) from None
            trusted = conf.get("skops_trusted_types") or None
            return skops.io.load(file, trusted=[str(t) for t in trusted] if trusted else None)
        if serialization == "cloudpickle":
            import cloudpickle  # noqa: F401  (cloudpickled objects refer to it)
        with file.open("rb") as handle:
            return pickle.load(handle)
    except FlavorError:
        raise
    except ImportError as exc:
        raise FlavorError(f"mlflow flavor: loading a {serialization} {flavor} model needs {exc.name}") from None
    except Exception as exc:
        raise FlavorError(f"mlflow flavor: cannot load the {flavor} model {file.name!r}: {one_line(exc)}") from None


def _sklearn_scorer(model: Any, conf: dict[str, Any], pyfunc: dict[str, Any], extra: tuple[str, ...]) -> Scorer:
    from scoregate.flavors.sklearn import SklearnScorer

    scorer = SklearnScorer(model)
    scorer.packages = tuple(_SERIALIZATIONS.get(str(conf.get("serialization_format") or "cloudpickle"), ())) + extra
    predict_fn = str(pyfunc.get("predict_fn") or "predict")
    columns = scorer._proba_columns  # the classifier's probability columns, if it is one
    if predict_fn == "predict_proba" and columns:
        scorer.pyfunc_outputs = tuple(columns)
    elif predict_fn == "predict" and columns:
        scorer.pyfunc_outputs = ("prediction",)
    elif predict_fn not in ("predict", "predict_proba"):
        raise FlavorError(
            f"mlflow flavor: the sklearn model's predict_fn {predict_fn!r} is not supported "
            "(scoregate scores with predict and predict_proba)"
        )
    return scorer


def _load_sklearn(path: Path, conf: dict[str, Any], pyfunc: dict[str, Any]) -> Scorer:
    file = path / str(conf.get("pickled_model") or "model.pkl")
    return _sklearn_scorer(_sklearn_object(file, conf, "sklearn"), conf, pyfunc, ())


def _data_file(path: Path, conf: dict[str, Any], flavor: str) -> Path:
    data = conf.get("data")
    if not data:
        raise FlavorError(f"mlflow flavor: the {flavor} flavor in MLmodel names no data file")
    file = path / str(data)
    if not file.exists():
        raise FlavorError(f"mlflow flavor: the {flavor} model file {data!r} is missing")
    return file


def _booster_outputs(scorer: Any) -> tuple[str, ...] | None:
    """What pyfunc returns for a raw booster: ``booster.predict``, i.e. the probability of the
    positive class (binary) or one per class (multiclass), not a label."""
    columns = list(scorer._columns)
    if len(columns) == 2 and columns == ["proba_0", "proba_1"]:
        return ("proba_1",)
    return tuple(columns) if columns else None


def _load_xgboost(path: Path, conf: dict[str, Any], pyfunc: dict[str, Any]) -> Scorer:
    from scoregate.flavors.xgboost import XGBoostFlavor

    scorer = XGBoostFlavor().load(_data_file(path, conf, "xgboost"))
    model_class = str(conf.get("model_class") or "xgboost.core.Booster")
    if model_class == "xgboost.core.Booster":
        scorer.pyfunc_outputs = _booster_outputs(scorer)
    elif scorer._columns:  # XGBClassifier: pyfunc calls its predict, the labels
        scorer.pyfunc_outputs = ("prediction",)
    return scorer


def _load_lightgbm(path: Path, conf: dict[str, Any], pyfunc: dict[str, Any]) -> Scorer:
    from scoregate.flavors.lightgbm import LightGBMFlavor

    file = _data_file(path, conf, "lightgbm")
    model_class = str(conf.get("model_class") or "lightgbm.basic.Booster")
    if model_class != "lightgbm.basic.Booster":
        # the sklearn API (LGBMClassifier, LGBMRegressor, ...) is saved as an sklearn object,
        # in skops by default since MLflow 3, cloudpickle before
        settings = {**conf, "serialization_format": conf.get("serialization_format") or "cloudpickle"}
        model = _sklearn_object(file, settings, "lightgbm")
        return _sklearn_scorer(model, settings, {"predict_fn": "predict"}, ("lightgbm", "scikit-learn"))
    scorer = LightGBMFlavor().load(file)
    scorer.pyfunc_outputs = _booster_outputs(scorer)
    return scorer


def _load_onnx(path: Path, conf: dict[str, Any], pyfunc: dict[str, Any]) -> Scorer:
    from scoregate.flavors.onnx import OnnxFlavor

    return OnnxFlavor().load(_data_file(path, conf, "onnx"))


_NATIVE = {"sklearn": _load_sklearn, "xgboost": _load_xgboost, "lightgbm": _load_lightgbm, "onnx": _load_onnx}


class MLflowFlavor(Flavor):
    """Delegates to the native flavor; the returned scorer's ``flavor`` says which one."""

    name = "mlflow"
    packages = ("pyyaml", "cloudpickle", "numpy")
    #: The distribution that loads flavors scoregate has no native loader for.
    fallback_packages = ("mlflow-skinny",)

    def load(self, path: Path) -> Scorer:
        path = Path(path)
        flavors = read_mlmodel(path)["flavors"]
        if path.is_file():
            path = path.parent
        pyfunc = flavors.get("python_function") if isinstance(flavors.get("python_function"), dict) else {}
        for name, loader in _NATIVE.items():
            if isinstance(flavors.get(name), dict):
                return loader(path, flavors[name], pyfunc)
        found = ", ".join(map(str, flavors)) or "none"
        try:
            import mlflow.pyfunc
        except ImportError:
            raise FlavorError(
                f"mlflow flavor: MLmodel has flavors {found}; none is native to scoregate and mlflow is not installed"
            ) from None
        try:
            scorer = MLflowPyfuncScorer(mlflow.pyfunc.load_model(str(path)))
        except Exception as exc:
            raise FlavorError(
                f"mlflow flavor: mlflow could not load the model (flavors {found}): {one_line(exc)}"
            ) from None
        scorer.packages = self.fallback_packages
        return scorer


_REGISTER_ANOTHER_WAY = "register it with --train-data or --schema instead"


def _describe(column: dict[str, Any]) -> str:
    """An MLflow column type in words: ``'array' of 'double'``, ``'binary'``..."""
    kind = str(column.get("type"))
    if kind == "array" and isinstance(column.get("items"), dict):
        return f"'array' of {_describe(column['items'])}"
    return repr(kind)


def mlflow_signature_schema(path: Path) -> ModelSchema | None:
    """The column-based input signature of an MLflow model as a schema, or None if it has none.

    Column types scoregate's schema has (double, float, long, integer, boolean, string,
    datetime) are taken; a tensor-based signature, and columns of type binary, array,
    object or map, are refused with a :class:`FlavorError` that names what was found and
    what to do instead. Inference ``params`` in the signature are allowed: the model
    scores with their defaults (a request that sets them is refused by the server).
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
        if not isinstance(column, dict):
            return None
        if column.get("type") == "tensor":
            spec = column.get("tensor-spec") or {}
            raise FlavorError(
                f"mlflow flavor: the signature is tensor-based (dtype {spec.get('dtype')!r}, shape "
                f"{spec.get('shape')}); scoregate's schema has named, typed columns: {_REGISTER_ANOTHER_WAY}"
            )
        if not column.get("name"):
            raise FlavorError(
                f"mlflow flavor: the signature has an unnamed {_describe(column)} column; scoregate's schema "
                f"names every column: {_REGISTER_ANOTHER_WAY}"
            )
        kind = _MLFLOW_TYPES.get(str(column["type"]))
        if kind is None:
            raise FlavorError(
                f"mlflow flavor: signature column {column['name']!r} has type {_describe(column)}, "
                f"which scoregate does not support (supported: {', '.join(_MLFLOW_TYPES)}): {_REGISTER_ANOTHER_WAY}"
            )
        nullable = not column.get("required", True)
        features.append(Feature(name=str(column["name"]), type=kind, nullable=nullable))
    return ModelSchema(features=features)


def mlflow_signature_params(path: Path) -> list[dict[str, Any]]:
    """The inference params an MLflow signature declares (name, type, default, shape), or []."""
    signature = read_mlmodel(Path(path)).get("signature")
    params = signature.get("params") if isinstance(signature, dict) else None
    if not params:
        return []
    try:
        parsed = json.loads(params) if isinstance(params, str) else params
    except json.JSONDecodeError as exc:
        raise FlavorError(f"mlflow flavor: the MLmodel signature params are not valid JSON: {one_line(exc)}") from None
    return [p for p in parsed if isinstance(p, dict)] if isinstance(parsed, list) else []


__all__ = ["MLflowFlavor", "MLflowPyfuncScorer", "mlflow_signature_params", "mlflow_signature_schema", "read_mlmodel"]
