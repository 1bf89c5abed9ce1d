"""Model flavors: one module per framework, loaded lazily so that ``import scoregate``
does not import every framework."""

from __future__ import annotations

import importlib
from pathlib import Path

from scoregate.errors import InvalidInputError
from scoregate.flavors.base import Flavor, Scorer

# name -> "module:Class"; modules are imported only when their flavor is used.
_FLAVORS: dict[str, str] = {
    "sklearn": "scoregate.flavors.sklearn:SklearnFlavor",
    "xgboost": "scoregate.flavors.xgboost:XGBoostFlavor",
    "lightgbm": "scoregate.flavors.lightgbm:LightGBMFlavor",
    "onnx": "scoregate.flavors.onnx:OnnxFlavor",
    "python": "scoregate.flavors.python:PythonFlavor",
    "mlflow": "scoregate.flavors.mlflow:MLflowFlavor",
}

FLAVOR_NAMES: tuple[str, ...] = tuple(_FLAVORS)


def get_flavor(name: str) -> Flavor:
    target = _FLAVORS.get(name)
    if target is None:
        raise InvalidInputError(f"unknown flavor {name!r}: choose one of {', '.join(FLAVOR_NAMES)}")
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)()


def detect_flavor(path: Path) -> str:
    """The flavor of an artifact that says what it is (an MLflow directory holds ``MLmodel``);
    otherwise the caller must name it."""
    path = Path(path)
    if (path.is_dir() and (path / "MLmodel").is_file()) or path.name == "MLmodel":
        return "mlflow"
    raise InvalidInputError(
        f"give the flavor of {path.name!r} ({', '.join(FLAVOR_NAMES)}); only an MLflow model directory "
        "(with an MLmodel file) is recognised without it"
    )


def load_scorer(flavor: str, path: Path) -> Scorer:
    return get_flavor(flavor).load(Path(path))


__all__ = ["FLAVOR_NAMES", "Flavor", "Scorer", "detect_flavor", "get_flavor", "load_scorer"]
