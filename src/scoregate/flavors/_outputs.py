"""Turn framework outputs into the one output frame every flavor returns.

Kept in one place so the column naming convention (``prediction``,
``proba_<class>``, ``output_<i>``) is the same whatever the framework.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from scoregate.errors import FlavorError


@lru_cache(maxsize=1024)
def _columns(names: tuple[str, ...]) -> pd.Index:
    """Column indexes are immutable and building one costs ~0.1 ms (dtype inference): reuse them."""
    return pd.Index(names)


def output_frame(columns: dict[str, Any], n_rows: int) -> pd.DataFrame:
    """Build the output frame from 1-D numpy arrays of length ``n_rows``.

    ``DataFrame._from_arrays`` without re-validation is several times faster than the
    dict constructor for the small batches serving sees (the dict path re-infers each
    column, e.g. object arrays of labels into pandas' string dtype); the dict
    constructor is the fallback should that private entry point change.
    """
    index = pd.RangeIndex(n_rows)
    arrays = list(columns.values())
    try:
        return pd.DataFrame._from_arrays(arrays, columns=_columns(tuple(columns)), index=index, verify_integrity=False)
    except (AttributeError, TypeError):  # pragma: no cover - depends on the pandas version
        return pd.DataFrame(columns, index=index, copy=False)


def proba_columns(classes: Sequence[Any]) -> list[str]:
    """``proba_<class>`` names, computed once at load time."""
    return [f"proba_{c}" for c in classes]


def classifier_columns(labels: Any, proba: np.ndarray, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """``prediction`` then one probability column per class (``columns`` from :func:`proba_columns`)."""
    proba = np.asarray(proba)
    out: dict[str, Any] = {"prediction": np.asarray(labels)}
    for i, name in enumerate(columns):
        out[name] = proba[:, i]
    return out


def classifier_frame(labels: Any, proba: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
    out = classifier_columns(labels, proba, columns)
    return output_frame(out, len(out["prediction"]))


def raw_columns(values: Any, *, prefix: str = "output", name: str = "prediction") -> dict[str, np.ndarray]:
    """A 1-D output (or a 2-D one with a single column) is ``name``; a 2-D one is ``<prefix>_<i>``."""
    values = np.asarray(values)
    if values.ndim == 1:
        return {name: values}
    if values.ndim == 2:
        if values.shape[1] == 1 and name:
            return {name: values[:, 0]}
        return {f"{prefix}_{i}": values[:, i] for i in range(values.shape[1])}
    raise FlavorError(f"model output has {values.ndim} dimensions; expected 1 or 2")


def raw_frame(values: Any, *, prefix: str = "output", name: str = "prediction") -> pd.DataFrame:
    out = raw_columns(values, prefix=prefix, name=name)
    return output_frame(out, len(next(iter(out.values()))))


def to_output_frame(result: Any, n_rows: int, flavor: str) -> pd.DataFrame:
    """Normalise whatever a user-level ``predict`` returned (DataFrame, dict, Series, array)."""
    if isinstance(result, pd.DataFrame):
        out = result
        if not (isinstance(out.index, pd.RangeIndex) and out.index.start == 0 and out.index.step == 1):
            out = out.reset_index(drop=True)
        out.columns = [str(c) for c in out.columns]
    elif isinstance(result, pd.Series):
        out = output_frame({"prediction": result.to_numpy()}, len(result))
    elif isinstance(result, Mapping):
        columns = {}
        for key, value in result.items():
            array = np.asarray(value)
            if array.ndim == 2 and array.shape[1] == 1:
                array = array[:, 0]
            if array.ndim != 1:
                raise FlavorError(f"{flavor} model returned a {array.ndim}-D value for output {key!r}; expected 1-D")
            columns[str(key)] = array
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise FlavorError(f"{flavor} model returned outputs of different lengths: {sorted(lengths)}")
        out = output_frame(columns, lengths.pop() if lengths else n_rows)
    else:
        array = np.asarray(result)
        if array.ndim == 0:
            raise FlavorError(f"{flavor} model returned a scalar ({type(result).__name__}); expected one value per row")
        out = raw_frame(array, prefix="output", name="prediction" if array.ndim == 1 else "")
    if len(out) != n_rows:
        raise FlavorError(f"{flavor} model returned {len(out)} rows for {n_rows} input rows")
    return out


def one_line(exc: BaseException) -> str:
    """An exception as one short line, for FlavorError messages."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}"
