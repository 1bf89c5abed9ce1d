"""Independent references: scores computed without the model's own scoring code.

Both run inside the reference process (:mod:`scoregate.validation.reference`), never in
the validating one:

* a **validator's scorer**: a Python file written apart from the model's code, with a
  ``score(rows: list[dict]) -> list[dict]`` function or a class with ``predict(frame)``;
* **ONNX**: the registered scikit-learn model converted with skl2onnx and scored by
  onnxruntime, a second runtime that re-implements every transformer and estimator.

Each returns a :data:`RowScorer`; what cannot be built raises :class:`Unavailable` with
one line saying exactly why.
"""

from __future__ import annotations

import hashlib
import math
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from scoregate.errors import ScoregateError
from scoregate.flavors._outputs import one_line, to_output_frame
from scoregate.schema import NUMERIC_TYPES, FeatureType, ModelSchema, prepare_records
from scoregate.validation.targets import output_records

#: rows in, one output object per row out (``None`` for a row the reference cannot score)
RowScorer = Callable[[list[dict[str, Any]]], list[dict[str, Any] | None]]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


class Unavailable(Exception):
    """This reference cannot be built for this model; the message says why, in one line."""


# ---------------------------------------------------------------------------------------------
# The validator's scorer file
# ---------------------------------------------------------------------------------------------


def load_scorer_file(path: Path, schema: ModelSchema) -> tuple[RowScorer, str]:
    """The scorer in ``path`` and the SHA-256 of the exact bytes that were executed.

    The module is compiled from the bytes that were hashed, so the digest in the report
    is the code that ran even if the file changes meanwhile. Modules beside the file
    can be imported (``sys.path``); ``Path(__file__).parent`` finds its data files.
    """
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise Unavailable(f"cannot read the reference scorer {path}: {exc.strerror}") from None
    digest = hashlib.sha256(source).hexdigest()
    module = types.ModuleType("scoregate_reference_scorer")
    module.__file__ = str(path)
    sys.path.insert(0, str(path.parent))
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)  # the validator's own code, in its own process
    except Exception as exc:
        raise ScoregateError(f"importing the reference scorer {path.name} failed: {one_line(exc)}") from None
    function = getattr(module, "score", None)
    if callable(function) and not isinstance(function, type):
        return _function_scorer(function, schema), digest
    from scoregate.flavors.python import _instantiate, _scorer_class

    try:
        cls = _scorer_class(module, path)
    except ScoregateError:
        raise ScoregateError(
            f"the reference scorer {path.name} defines neither score(rows) nor a class with predict(frame)"
        ) from None
    return _class_scorer(_instantiate(cls, path.parent), schema), digest


def _function_scorer(function: Callable[..., Any], schema: ModelSchema) -> RowScorer:
    names = schema.feature_names

    def score(rows: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        given = [{k: r[k] for k in names if k in r} for r in rows]
        result = function(given)
        if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
            raise ScoregateError("the reference scorer's score(rows) must return a list of objects")
        if len(result) != len(rows):
            raise ScoregateError(f"the reference scorer returned {len(result)} rows for {len(rows)}")
        return list(result)

    return score


def _class_scorer(instance: Any, schema: ModelSchema) -> RowScorer:
    def score(rows: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        frame = prepare_records(schema, rows)
        return list(output_records(to_output_frame(instance.predict(frame), len(frame), "reference scorer")))

    return score


# ---------------------------------------------------------------------------------------------
# ONNX: skl2onnx + onnxruntime
# ---------------------------------------------------------------------------------------------


def onnx_scorer(loaded: Any) -> tuple[RowScorer, dict[str, Any]]:
    """The version's scikit-learn model converted to ONNX, as a row scorer, and what was used.

    Inputs go in as float32 (numbers, booleans) and strings, one ``[None, 1]`` tensor per
    column for a model fitted on a DataFrame, or one matrix for a model fitted on arrays.
    """
    from scoregate.flavors.sklearn import SklearnScorer

    version = loaded.version
    if not isinstance(loaded.scorer, SklearnScorer):
        raise Unavailable(f"it converts scikit-learn models only, and {version.ref} is a {version.flavor} model")
    try:
        import onnxruntime
        import skl2onnx
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    except ImportError as exc:
        raise Unavailable(f"{exc.name} is not installed (pip install 'scoregate[independent]')") from None
    model = loaded.scorer.model
    schema: ModelSchema = version.input_schema
    columns = [str(c) for c in getattr(model, "feature_names_in_", [])]
    types_by_feature: dict[str, str] = {}
    for f in schema.features:
        if f.type is FeatureType.DATETIME:
            raise Unavailable(f"feature {f.name!r} is a datetime, which the onnx reference cannot feed")
        types_by_feature[f.name] = "float32" if f.type in NUMERIC_TYPES or f.type is FeatureType.BOOL else "string"
    if columns:
        unknown = [c for c in columns if c not in types_by_feature]
        if unknown:
            raise Unavailable(f"the model was fitted on column(s) not in the schema: {', '.join(unknown)}")
        initial = [
            (c, FloatTensorType([None, 1]) if types_by_feature[c] == "float32" else StringTensorType([None, 1]))
            for c in columns
        ]
    else:
        strings = [name for name, kind in types_by_feature.items() if kind == "string"]
        if strings:
            raise Unavailable(f"the model was fitted on an array, which cannot hold text feature(s) {strings[0]!r}")
        columns = schema.feature_names
        initial = [("input", FloatTensorType([None, len(columns)]))]
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    classes = list(getattr(final, "classes_", [])) or None
    options = {id(final): {"zipmap": False}} if classes is not None else None
    try:
        converted = skl2onnx.convert_sklearn(model, initial_types=initial, options=options)
        session = onnxruntime.InferenceSession(
            converted.SerializeToString(), _session_options(onnxruntime), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise Unavailable(
            f"skl2onnx {skl2onnx.__version__} cannot convert {_describe(model)}: {_root_cause(exc)}"
        ) from None
    from scoregate.flavors.onnx import OnnxScorer

    scorer = OnnxScorer(session, classes)

    def score(rows: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        keep = [i for i, r in enumerate(rows) if _fits_float32(r, schema)]
        out: list[dict[str, Any] | None] = [None] * len(rows)
        if not keep:
            return out
        frame = prepare_records(schema, [rows[i] for i in keep])[columns]
        for i, values in zip(keep, output_records(scorer.predict(frame)), strict=True):
            out[i] = values
        return out

    details = {
        "converter": f"skl2onnx {skl2onnx.__version__}",
        "runtime": f"onnxruntime {onnxruntime.__version__}",
        "model": _describe(model),
        "inputs": {name: kind.__class__.__name__ for name, kind in initial},
        "precision": "float32",
    }
    return score, details


def _session_options(onnxruntime: Any) -> Any:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def _fits_float32(row: dict[str, Any], schema: ModelSchema) -> bool:
    """False for a row with a number float32 cannot hold (it would become infinite in ONNX Runtime)."""
    for f in schema.features:
        value = row.get(f.name)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if f.type in NUMERIC_TYPES and number and math.isfinite(value) and abs(value) > _FLOAT32_MAX:
            return False
    return True


def _describe(model: Any) -> str:
    steps = getattr(model, "steps", None)
    if steps:
        return "Pipeline(" + ", ".join(type(step).__name__ for _, step in steps) + ")"
    return type(model).__name__


def _root_cause(exc: BaseException) -> str:
    """One line: the error's first line (shortened) and, if different, the error it came from."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if len(first) > 80:  # converters put whole attribute dumps in their messages: keep the sentence
        cuts = [i for i in (first.find(" with "), first.find("{")) if i > 0]
        first = first[: min(cuts)] + " ..." if cuts else first[:120] + " ..."
    text = f"{type(exc).__name__}: {first}"
    root = exc
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
    if root is not exc:
        text += f" (from {one_line(root)})"
    return text


__all__ = ["RowScorer", "Unavailable", "load_scorer_file", "onnx_scorer"]
