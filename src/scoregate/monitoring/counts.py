"""Per-feature binned counters: the one accumulator behind batch and live monitoring.

An :class:`Accumulator` holds, for each column, counts over bins fixed in advance by a
reference profile (quantile edges for numbers, levels for categories), so its memory is
O(bins) whatever the number of rows. It is fed Arrow record batches (batch monitoring
reads files that way) or a mapping of column name to values (a server's few rows),
merged (workers, windows) and serialised (persisted windows); the statistics in
:mod:`scoregate.monitoring.statistics` read its counts. Counts are integers, so any split
of the same rows into batches, and any order of merges, gives the same counts and so the
same distribution statistics; the per-bin sums and moments are floating point and agree
to rounding (about 1e-15 relative).

Nulls (and NaN) are counted apart from the bins, and so are infinities (``invalid``):
a distribution statistic compares the values that are there, and the null share is
reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from scoregate.errors import InvalidInputError

COUNTS_FORMAT = "scoregate-counts/1"


class Kind(StrEnum):
    """How a column is binned."""

    NUMERIC = "numeric"  # quantile edges
    CATEGORICAL = "categorical"  # levels plus one 'other' bin
    UNTRACKED = "untracked"  # free text and date-times: rows and nulls only


@dataclass(frozen=True, slots=True)
class Bins:
    """The bins of one column: sorted, distinct ``edges`` or ``levels``.

    Numeric bins are left-closed: bin 0 is ``(-inf, edges[0])``, bin i is
    ``[edges[i-1], edges[i])``, the last is ``[edges[-1], inf)``: ``len(edges) + 1`` bins.
    Categorical bins are the levels in order, then 'other': ``len(levels) + 1`` bins.
    """

    name: str
    kind: Kind
    edges: tuple[float, ...] = ()
    levels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind is Kind.NUMERIC:
            edges = np.asarray(self.edges, dtype=np.float64)
            if not np.isfinite(edges).all() or (len(edges) > 1 and not (np.diff(edges) > 0).all()):
                raise ValueError(f"{self.name}: bin edges must be finite and strictly increasing")
        if self.kind is Kind.CATEGORICAL and len(set(self.levels)) != len(self.levels):
            raise ValueError(f"{self.name}: category levels must be distinct")

    @property
    def size(self) -> int:
        if self.kind is Kind.NUMERIC:
            return len(self.edges) + 1
        if self.kind is Kind.CATEGORICAL:
            return len(self.levels) + 1
        return 0


class _Binner:
    """Bin index of each value: ``searchsorted(edges, x, side='right')``, about 3x faster.

    Written by hand because binning is the whole cost of monitoring, batch and live: a
    binary search per value mispredicts a branch per level (40 ms per million values
    over 100 edges). Here a value's cell on a uniform grid over the edges gives a guess
    through two table look-ups; every guess is then checked against its bin's bounds
    and the few wrong ones (cells holding two edges, rounding at a cell's border) are
    searched for properly, so the result is exactly ``searchsorted``'s.
    """

    __slots__ = ("_base", "_cells", "_edges", "_inner", "_lower", "_offset", "_scale", "_upper")

    CELLS = 4096

    def __init__(self, edges: Sequence[float]) -> None:
        self._edges = np.asarray(edges, dtype=np.float64)
        if len(self._edges) < 2:
            self._scale = 0.0
            self._offset = self._edges[0] if len(self._edges) else 0.0
            self._cells = 0
            return
        low, high = float(self._edges[0]), float(self._edges[-1])
        width = (high - low) / self.CELLS
        self._scale = 1.0 / width if width > 0 and math.isfinite(1.0 / width) else 0.0
        self._offset = low
        self._cells = self.CELLS
        # cell c in [-1, CELLS] covers [low + c*width, low + (c+1)*width); table slot c + 1
        starts = np.concatenate([[-np.inf], low + np.arange(self.CELLS + 1) * width])
        self._base = np.searchsorted(self._edges, starts, side="right")
        self._inner = np.concatenate([self._edges, [np.inf]])[self._base]
        self._lower = np.concatenate([[-np.inf], self._edges])
        self._upper = np.concatenate([self._edges, [np.inf]])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._cells == 0 or self._scale == 0.0:
            return np.searchsorted(self._edges, x, side="right")
        cell = (x - self._offset) * self._scale
        np.clip(cell, -1.0, float(self._cells), out=cell)
        slot = cell.astype(np.intp)
        slot += 1
        guess = self._base[slot]
        guess += x >= self._inner[slot]
        wrong = (x < self._lower[guess]) | (x >= self._upper[guess])
        if wrong.any():
            where = np.flatnonzero(wrong)
            guess[where] = np.searchsorted(self._edges, x[where], side="right")
        return guess


@dataclass(slots=True)
class ColumnCounts:
    """What one column's values have added up to."""

    bins: Bins
    counts: np.ndarray
    sums: np.ndarray  # per-bin sum of the values (numeric), for bin means
    rows: int = 0  # values seen, nulls included
    nulls: int = 0
    invalid: int = 0  # +-inf in a numeric column
    n: int = 0  # finite values, for the moments
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean
    minimum: float | None = None
    maximum: float | None = None
    _binner: _Binner | None = field(default=None, repr=False)

    @classmethod
    def empty(cls, bins: Bins) -> ColumnCounts:
        return cls(
            bins=bins,
            counts=np.zeros(bins.size, dtype=np.int64),
            sums=np.zeros(bins.size if bins.kind is Kind.NUMERIC else 0, dtype=np.float64),
        )

    @property
    def name(self) -> str:
        return self.bins.name

    @property
    def kind(self) -> Kind:
        return self.bins.kind

    @property
    def count(self) -> int:
        """Values that fell in a bin (not null, finite)."""
        return int(self.counts.sum())

    @property
    def std(self) -> float | None:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else None

    def bin_means(self) -> np.ndarray:
        """The mean value of each numeric bin (NaN for an empty bin)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)

    # -- updating ----------------------------------------------------------------------------

    def add(self, values: pa.Array | pa.ChunkedArray) -> None:
        chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
        for chunk in chunks:
            self.rows += len(chunk)
            if self.kind is Kind.NUMERIC:
                self._add_numbers(_as_float(chunk, self.name))
            elif self.kind is Kind.CATEGORICAL:
                self._add_levels(_as_text(chunk, self.name))
            else:
                self.nulls += chunk.null_count

    def _add_numbers(self, x: np.ndarray) -> None:
        finite = np.isfinite(x)
        if not finite.all():
            missing = int(np.isnan(x).sum())
            self.nulls += missing
            self.invalid += int(len(x) - finite.sum()) - missing
            x = x[finite]
        if not len(x):
            return
        if self._binner is None:
            self._binner = _Binner(self.bins.edges)
        index = self._binner(x)
        size = self.bins.size
        self.counts += np.bincount(index, minlength=size)
        self.sums += np.bincount(index, weights=x, minlength=size)
        low, high = float(x.min()), float(x.max())
        self.minimum = low if self.minimum is None else min(self.minimum, low)
        self.maximum = high if self.maximum is None else max(self.maximum, high)
        mean = float(x.mean())
        deviations = x - mean
        # not ``deviations @ deviations``: a BLAS call, 20x slower here when its threads contend
        self._merge_moments(len(x), mean, float(np.square(deviations, out=deviations).sum()))

    def _merge_moments(self, n: int, mean: float, m2: float) -> None:
        # Chan et al.'s pairwise update: stable however the rows are split
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total

    def _add_levels(self, text: pa.Array) -> None:
        nulls = text.null_count
        self.nulls += nulls
        if not self.bins.levels:
            self.counts[-1] += len(text) - nulls
            return
        found = pc.index_in(text, value_set=pa.array(self.bins.levels, type=pa.string())).drop_null()
        index = found.to_numpy(zero_copy_only=False)
        self.counts[:-1] += np.bincount(index, minlength=len(self.bins.levels))
        self.counts[-1] += len(text) - nulls - len(index)

    # -- combining and storing ---------------------------------------------------------------

    def merge(self, other: ColumnCounts) -> None:
        if other.bins != self.bins:
            raise InvalidInputError(f"cannot merge counts of {self.name!r}: the two were binned differently")
        self.counts += other.counts
        self.sums += other.sums
        self.rows += other.rows
        self.nulls += other.nulls
        self.invalid += other.invalid
        if other.n:
            self._merge_moments(other.n, other.mean, other.m2)
        for attribute, pick in (("minimum", min), ("maximum", max)):
            theirs = getattr(other, attribute)
            if theirs is not None:
                mine = getattr(self, attribute)
                setattr(self, attribute, theirs if mine is None else pick(mine, theirs))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind.value,
            "counts": self.counts.tolist(),
            "rows": self.rows,
            "nulls": self.nulls,
        }
        if self.kind is Kind.NUMERIC:
            out |= {
                "edges": list(self.bins.edges),
                "sums": self.sums.tolist(),
                "invalid": self.invalid,
                "n": self.n,
                "mean": self.mean,
                "m2": self.m2,
                "minimum": self.minimum,
                "maximum": self.maximum,
            }
        elif self.kind is Kind.CATEGORICAL:
            out["levels"] = list(self.bins.levels)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnCounts:
        try:
            kind = Kind(data["kind"])
            bins = Bins(
                name=str(data["name"]),
                kind=kind,
                edges=tuple(float(e) for e in data.get("edges", ())),
                levels=tuple(str(v) for v in data.get("levels", ())),
            )
            column = cls.empty(bins)
            counts = np.asarray(data["counts"], dtype=np.int64)
            if counts.shape != column.counts.shape or (counts < 0).any():
                raise ValueError(f"{bins.name}: {len(counts)} counts for {bins.size} bins")
            column.counts = counts
            column.rows, column.nulls = int(data["rows"]), int(data["nulls"])
            if kind is Kind.NUMERIC:
                sums = np.asarray(data["sums"], dtype=np.float64)
                if sums.shape != counts.shape:
                    raise ValueError(f"{bins.name}: {len(sums)} sums for {bins.size} bins")
                column.sums = sums
                column.invalid, column.n = int(data["invalid"]), int(data["n"])
                column.mean, column.m2 = float(data["mean"]), float(data["m2"])
                column.minimum = None if data["minimum"] is None else float(data["minimum"])
                column.maximum = None if data["maximum"] is None else float(data["maximum"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"invalid counts document: {exc}") from None
        return column


class Accumulator:
    """Binned counts of every column of a profile; fed batches, merged, serialised."""

    def __init__(self, bins: Iterable[Bins]) -> None:
        self.columns: dict[str, ColumnCounts] = {}
        for b in bins:
            if b.name in self.columns:
                raise ValueError(f"column {b.name!r} is binned twice")
            self.columns[b.name] = ColumnCounts.empty(b)
        self.rows = 0

    def __getitem__(self, name: str) -> ColumnCounts:
        return self.columns[name]

    @property
    def bins(self) -> list[Bins]:
        return [c.bins for c in self.columns.values()]

    def update(self, data: pa.RecordBatch | pa.Table | Mapping[str, Any], *, pool: Executor | None = None) -> None:
        """Add rows: an Arrow batch or table, or ``{column: values}`` (arrays or lists, None for null).

        With a thread ``pool`` the columns are counted in parallel (NumPy and Arrow release
        the interpreter lock); each column is one task, so the counts are the same either way.
        """
        arrays = _columns_of(data, list(self.columns))
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) > 1:
            raise InvalidInputError(f"columns of different lengths: {sorted(lengths)}")
        columns = self.columns
        if pool is None or len(arrays) < 2:
            for name, values in arrays.items():
                columns[name].add(values)
        else:
            for _ in pool.map(lambda item: columns[item[0]].add(item[1]), arrays.items()):
                pass
        self.rows += lengths.pop() if lengths else 0

    def merge(self, other: Accumulator) -> Accumulator:
        """Add ``other``'s counts into this one (same bins); returns self."""
        if list(other.columns) != list(self.columns):
            raise InvalidInputError("cannot merge counts of different columns")
        for name, column in other.columns.items():
            self.columns[name].merge(column)
        self.rows += other.rows
        return self

    def copy(self) -> Accumulator:
        return Accumulator.from_dict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"format": COUNTS_FORMAT, "rows": self.rows, "columns": [c.to_dict() for c in self.columns.values()]}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Accumulator:
        if not isinstance(data, Mapping) or data.get("format") != COUNTS_FORMAT:
            raise InvalidInputError(f"not a {COUNTS_FORMAT} document")
        columns = [ColumnCounts.from_dict(c) for c in data.get("columns", [])]
        accumulator = cls(c.bins for c in columns)
        for column in columns:
            accumulator.columns[column.name] = column
        accumulator.rows = int(data.get("rows", 0))
        return accumulator

    @classmethod
    def from_json(cls, text: bytes | str) -> Accumulator:
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"invalid counts document: {exc}") from None
        return cls.from_dict(data)


# -- conversion of incoming columns ------------------------------------------------------------------


def _columns_of(data: Any, names: list[str]) -> dict[str, pa.Array | pa.ChunkedArray]:
    if isinstance(data, pa.RecordBatch | pa.Table):
        present = set(data.schema.names)
        missing = [n for n in names if n not in present]
        if missing:
            raise InvalidInputError(f"missing column(s): {', '.join(missing)}")
        return {n: data.column(n) for n in names}
    if not isinstance(data, Mapping):
        raise InvalidInputError("rows must be an Arrow batch or a mapping of column name to values")
    missing = [n for n in names if n not in data]
    if missing:
        raise InvalidInputError(f"missing column(s): {', '.join(missing)}")
    out = {}
    for name in names:
        values = data[name]
        if isinstance(values, pa.Array | pa.ChunkedArray):
            out[name] = values
            continue
        try:
            out[name] = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise InvalidInputError(f"column {name!r}: cannot read its values: {exc}".splitlines()[0]) from None
    return out


def _as_float(values: pa.Array, name: str) -> np.ndarray:
    kind = values.type
    if pa.types.is_null(kind):
        return np.full(len(values), np.nan)
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        raise InvalidInputError(f"column {name!r} holds {describe(kind)}, not numbers")
    if not pa.types.is_float64(kind):
        values = values.cast(pa.float64())
    return values.to_numpy(zero_copy_only=False)


def _as_text(values: pa.Array, name: str) -> pa.Array:
    kind = values.type
    if pa.types.is_dictionary(kind):
        values = values.cast(kind.value_type)
        kind = values.type
    if pa.types.is_string(kind):
        return values
    if pa.types.is_large_string(kind) or pa.types.is_boolean(kind) or pa.types.is_integer(kind):
        return values.cast(pa.string())
    if pa.types.is_null(kind):
        return pa.nulls(len(values), type=pa.string())
    raise InvalidInputError(f"column {name!r} holds {describe(kind)}, not category labels")


def describe(kind: pa.DataType) -> str:
    """An Arrow type in the words a user knows it by."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    if pa.types.is_boolean(kind):
        return "true/false values"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return f"numbers ({kind})"
    if pa.types.is_temporal(kind):
        return f"date-times ({kind})"
    return str(kind)
