"""The shapes of data the Python API scores, turned into a frame or JSON-like rows once.

``LoadedModel.predict`` takes what a notebook has at hand: a DataFrame, a pyarrow Table,
a list of dicts, a dict of lists (columns), a single dict (one row) or a 2-D array (the
columns in the schema's order). Rows stay rows so that their values are checked as JSON
values are (``"abc"`` for a float is a type error, not a NaN); tables become frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from scoregate.errors import InvalidInputError

ACCEPTED = (
    "a pandas DataFrame, a pyarrow Table, a list of dicts (rows), a dict of lists (columns), "
    "a dict (one row) or a 2-D array (columns in the schema's order)"
)


def _refuse(what: str) -> InvalidInputError:
    return InvalidInputError(f"cannot score {what}: give {ACCEPTED}")


def _is_column(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray, pd.Series))


def normalise(data: Any, features: Sequence[str]) -> pd.DataFrame | list[Mapping[str, Any]]:
    """``data`` as a DataFrame (tables, arrays) or a list of row mappings (everything JSON-like)."""
    if isinstance(data, pd.DataFrame):
        return data
    if type(data).__module__.startswith("pyarrow") and hasattr(data, "to_pandas") and hasattr(data, "schema"):
        return data.to_pandas()  # a Table or a RecordBatch
    if isinstance(data, Mapping):
        if data and all(_is_column(v) for v in data.values()):
            lengths = {len(v) for v in data.values()}
            if len(lengths) > 1:
                raise InvalidInputError(
                    f"cannot score a dict of columns of different lengths ({sorted(lengths)}): give {ACCEPTED}"
                )
            columns = {k: (v.tolist() if isinstance(v, (np.ndarray, pd.Series)) else list(v)) for k, v in data.items()}
            return [{k: v[i] for k, v in columns.items()} for i in range(lengths.pop())]
        return [data]
    if isinstance(data, np.ndarray):
        return _matrix(data, features)
    if isinstance(data, (list, tuple)):
        if all(isinstance(r, Mapping) for r in data):
            return list(data)
        if data and all(isinstance(r, (list, tuple)) for r in data):
            return _matrix(np.asarray(data, dtype=object), features)
        kinds = sorted({type(r).__name__ for r in data})
        return_what = f"a list of {', '.join(kinds[:5])}"
        raise _refuse(return_what)
    raise _refuse(f"a {type(data).__name__}")


def _matrix(array: np.ndarray, features: Sequence[str]) -> pd.DataFrame:
    if array.ndim != 2:
        raise _refuse(f"a {array.ndim}-D array")
    if array.shape[1] != len(features):
        shown = ", ".join(features[:20]) + (", ..." if len(features) > 20 else "")
        raise InvalidInputError(
            f"the array has {array.shape[1]} columns; the model takes {len(features)} ({shown}, in that order)"
        )
    return pd.DataFrame({name: array[:, i] for i, name in enumerate(features)})


__all__ = ["ACCEPTED", "normalise"]
