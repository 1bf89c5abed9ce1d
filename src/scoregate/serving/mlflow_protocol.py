"""MLflow's scoring protocol: ``POST /invocations``, ``GET /ping``, ``/health``, ``/version``.

So that a caller written for ``mlflow models serve`` (or a SageMaker-style endpoint) works
unchanged in front of scoregate, with scoregate's validation, batching and prediction log
behind it. This module is the protocol's pure codec: request bodies to rows, outputs to
MLflow's ``{"predictions": ...}``, errors to MLflow's ``{"error_code", "message"}``; the app
mounts it (``ScoringApp._invocations``).

Request bodies (``application/json``), as MLflow 2 and 3 take them:

* ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`` (``index`` is ignored)
* ``{"dataframe_records": [{...}, ...]}``
* ``{"instances": [...]}`` and ``{"inputs": ...}``: a list of objects, a list of lists (the
  columns in the schema's order), an object of lists (columns) or an object of scalars (one row)
* ``text/csv``: a header line and rows

plus an optional ``"params"`` object. scoregate's flavors score with the model's defaults,
so a request that sets params is refused naming them (never silently ignored).

The response is what ``mlflow.pyfunc.load_model(...).predict`` would serialise to: the
columns a scorer names in ``pyfunc_outputs`` (MLflow directories), else by the naming
convention of :mod:`scoregate.flavors._outputs`: ``prediction`` alone or with ``proba_*``
is a list of values, ``output_<i>`` columns a list of rows, anything else a list of records.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import Any

import orjson

from scoregate.errors import InvalidInputError, ScoregateError
from scoregate.serving.errors import HTTPError, bounded, error_body

__all__ = [
    "HEALTH_PATHS",
    "INVOCATIONS",
    "MODEL_HEADER",
    "error_response",
    "parse_request",
    "predictions",
]

INVOCATIONS = "/invocations"
#: MLflow's liveness routes (``/ping`` is SageMaker's); both answer 200 once a model is served.
HEALTH_PATHS = frozenset({"/ping", "/health"})
#: Picks the model when the server serves several: ``name``, ``name@3`` or ``name@alias``
#: (SageMaker's multi-model endpoints name theirs in a header too).
MODEL_HEADER = b"x-scoregate-model"
_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_OUTPUT_COLUMN = re.compile(r"output_\d+")
_ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "BAD_REQUEST",
    413: "REQUEST_LIMIT_EXCEEDED",
    415: "BAD_REQUEST",
    422: "INVALID_PARAMETER_VALUE",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _bad(message: str, field: str, rule: str) -> InvalidInputError:
    return InvalidInputError(message, details=[{"field": field, "rule": rule, "message": bounded(message)}])


def _shapes() -> str:
    return (
        'send {"dataframe_split": {"columns": [...], "data": [[...]]}}, {"dataframe_records": [{...}]}, '
        '{"instances": [...]} or {"inputs": ...}'
    )


def parse_request(body: bytes, media_type: bytes | None, features: Sequence[str], max_rows: int) -> list[Any]:
    """The rows of an ``/invocations`` body (objects keyed by feature), refusing ``params``.

    ``features`` is the schema's order, used for rows sent as lists; ``max_rows`` bounds the
    rows built before validation (413 past it, as the other routes do).
    """
    if media_type == b"text/csv":
        return _csv_rows(body, max_rows)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, "bad_request", f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _bad(f"the body must be a JSON object: {_shapes()}", "body", "type")
    found = [key for key in _FORMATS if key in data]
    unknown = sorted(k for k in data if k not in _FORMATS and k != "params")
    if len(found) != 1 or unknown:
        what = f"it has {', '.join(map(repr, found + unknown))}" if found or unknown else "it is empty"
        raise _bad(f"the body needs exactly one of {', '.join(_FORMATS)} ({what}): {_shapes()}", "body", "format")
    params = data.get("params")
    if params not in (None, {}):
        names = ", ".join(map(repr, params)) if isinstance(params, dict) else type(params).__name__
        raise _bad(
            f"inference params ({bounded(names, 100)}) are not supported: scoregate scores with the model's "
            "defaults; send the request without 'params'",
            "params",
            "unsupported",
        )
    key = found[0]
    value = data[key]
    if key == "dataframe_split":
        rows = _split_rows(value, features, max_rows)
    elif key == "dataframe_records":
        if not isinstance(value, list):
            raise _bad("dataframe_records must be a list of objects", key, "type")
        rows = value
    else:
        rows = _tensor_rows(value, key, features, max_rows)
    if len(rows) > max_rows:
        raise _too_many(len(rows), max_rows, key)
    return rows


def _too_many(n: int, limit: int, field: str) -> HTTPError:
    return HTTPError(
        413,
        "too_many_rows",
        f"the request has {n} rows; a request may carry at most {limit} (--max-request-rows)",
        details=[{"field": field, "rule": "max_rows", "message": f"{n} rows, at most {limit}"}],
    )


def _positional(values: list[Any], features: Sequence[str], field: str, row: int) -> dict[str, Any]:
    if len(values) != len(features):
        raise _bad(
            f"{field} row {row} has {len(values)} values; the model takes {len(features)} "
            f"({', '.join(features[:20])}{', ...' if len(features) > 20 else ''}, in that order)",
            field,
            "length",
        )
    return dict(zip(features, values, strict=True))


def _split_rows(value: Any, features: Sequence[str], max_rows: int) -> list[Any]:
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        message = 'dataframe_split must be an object with "data" (a list of rows) and "columns"'
        raise _bad(message, "dataframe_split", "type")
    data = value["data"]
    if len(data) > max_rows:
        raise _too_many(len(data), max_rows, "dataframe_split")
    columns = value.get("columns")
    if columns is None:
        return [
            _positional(row, features, "dataframe_split", i) if isinstance(row, list) else row
            for i, row in enumerate(data)
        ]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise _bad("dataframe_split.columns must be a list of column names", "dataframe_split.columns", "type")
    width = len(columns)
    rows = []
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != width:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise _bad(f"dataframe_split row {i} has {got}; expected {width} values", "dataframe_split.data", "length")
        rows.append(dict(zip(columns, row, strict=True)))
    return rows


def _tensor_rows(value: Any, key: str, features: Sequence[str], max_rows: int) -> list[Any]:
    if isinstance(value, dict):
        if value and all(isinstance(v, list) for v in value.values()):  # columns
            lengths = {len(v) for v in value.values()}
            if len(lengths) > 1:
                raise _bad(f"the columns of {key} have different lengths: {sorted(lengths)}", key, "length")
            n = lengths.pop()
            if n > max_rows:
                raise _too_many(n, max_rows, key)
            items = list(value.items())
            return [{k: v[i] for k, v in items} for i in range(n)]
        return [value]  # an object of scalars is one row
    if not isinstance(value, list):
        raise _bad(f"{key} must be a list of rows or an object of columns: {_shapes()}", key, "type")
    if len(value) > max_rows:
        raise _too_many(len(value), max_rows, key)
    return [_positional(r, features, key, i) if isinstance(r, list) else r for i, r in enumerate(value)]


def _csv_rows(body: bytes, max_rows: int) -> list[Any]:
    """CSV with a header line; empty fields are missing values."""
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(body), nrows=max_rows + 1)
    except Exception as exc:
        raise _bad(f"the CSV body cannot be read: {bounded(str(exc), 200)}", "body", "csv") from None
    if len(frame) > max_rows:
        raise _too_many(len(frame), max_rows, "body")
    rows = frame.to_dict(orient="records")
    for row in rows:
        for k, v in row.items():
            if isinstance(v, float) and math.isnan(v):
                row[k] = None
    return rows


def predictions(names: Sequence[str], columns: Sequence[Sequence[Any]], pyfunc_outputs: Sequence[str] | None) -> Any:
    """The ``predictions`` value MLflow's server would send for these output columns."""
    names = list(names)
    chosen: list[str] | None = list(pyfunc_outputs) if pyfunc_outputs and set(pyfunc_outputs) <= set(names) else None
    if chosen is None:
        if names == ["prediction"] or (
            "prediction" in names and all(n == "prediction" or n.startswith("proba_") for n in names)
        ):
            chosen = ["prediction"]
        elif names and all(_OUTPUT_COLUMN.fullmatch(n) for n in names):
            chosen = names
    if chosen is None:  # a frame with named columns: MLflow sends its records
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    picked = [columns[names.index(n)] for n in chosen]
    if len(picked) == 1:
        return list(picked[0])
    return [list(values) for values in zip(*picked, strict=True)]


def error_response(exc: ScoregateError, request_id: str, client_request_id: str | None) -> bytes:
    """scoregate's error body with MLflow's ``error_code`` (what MLflow's clients read) added."""
    body = orjson.loads(error_body(exc, request_id, client_request_id, v2_style=False))
    body = {"error_code": _ERROR_CODES.get(exc.status_code, "INTERNAL_ERROR"), **body}
    return orjson.dumps(body)
