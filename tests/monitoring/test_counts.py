"""The accumulator: bins, nulls, merging, serialising, and the same counts however rows arrive."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from scoregate.errors import InvalidInputError
from scoregate.monitoring.counts import Accumulator, Bins, ColumnCounts, Kind, _Binner

NUMBERS = Bins("x", Kind.NUMERIC, edges=(0.0, 1.0, 2.0))
LEVELS = Bins("c", Kind.CATEGORICAL, levels=("a", "b"))


def test_numeric_bins_are_left_closed_with_nulls_and_infinities_apart() -> None:
    acc = Accumulator([NUMBERS])
    acc.update({"x": [-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, None, float("nan"), float("inf")]})
    column = acc["x"]
    # (-inf,0): -1 | [0,1): 0, .5 | [1,2): 1 | [2,inf): 2, 3
    assert column.counts.tolist() == [1, 2, 1, 2]
    assert column.sums.tolist() == [-1.0, 0.5, 1.0, 5.0]
    assert (column.nulls, column.invalid, column.rows, acc.rows) == (2, 1, 9, 9)
    assert (column.minimum, column.maximum) == (-1.0, 3.0)
    assert column.mean == pytest.approx(5.5 / 6)
    assert column.std == pytest.approx(np.std([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0], ddof=1))


def test_categorical_levels_plus_other() -> None:
    acc = Accumulator([LEVELS])
    acc.update(pa.record_batch({"c": pa.array(["a", "b", "b", "zz", None])}))
    assert acc["c"].counts.tolist() == [1, 2, 1]
    assert acc["c"].nulls == 1
    acc.update({"c": pa.array(["a", "a"]).dictionary_encode()})
    assert acc["c"].counts.tolist() == [3, 2, 1]


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).normal(size=200_000),
        np.exp(np.random.default_rng(1).normal(size=200_000) * 3),  # edges crowded near zero
        np.random.default_rng(2).integers(0, 40, 200_000).astype(float),  # values exactly on edges
    ],
    ids=["normal", "heavy-tailed", "ties"],
)
def test_binner_matches_searchsorted_exactly(values: np.ndarray) -> None:
    edges = np.unique(np.quantile(values, np.arange(1, 100) / 100))
    probes = np.concatenate([values, edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), [-1e300, 1e300]])
    assert (_Binner(edges)(probes) == np.searchsorted(edges, probes, side="right")).all()


def test_binner_with_one_or_no_edge() -> None:
    x = np.array([-1.0, 0.0, 1.0])
    assert _Binner([0.0])(x).tolist() == [0, 1, 1]
    assert _Binner([])(x).tolist() == [0, 0, 0]


def test_same_counts_whatever_the_batches_and_merges() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=10_000)
    x[::97] = np.nan
    c = rng.choice(["a", "b", "q"], 10_000)
    bins = [Bins("x", Kind.NUMERIC, edges=tuple(np.quantile(x[~np.isnan(x)], [0.1, 0.5, 0.9]))), LEVELS]
    whole = Accumulator(bins)
    whole.update(pa.record_batch({"x": x, "c": c}))
    rows = Accumulator(bins)
    for start in range(0, 10_000, 7):  # a server's small batches, as plain lists
        rows.update({"x": x[start : start + 7].tolist(), "c": c[start : start + 7].tolist()})
    halves = Accumulator(bins).merge(Accumulator(bins))
    for part in (slice(0, 3333), slice(3333, None)):
        piece = Accumulator(bins)
        piece.update({"x": x[part], "c": c[part]})
        halves.merge(piece)
    for other in (rows, halves):
        for name in ("x", "c"):
            assert other[name].counts.tolist() == whole[name].counts.tolist()
            assert other[name].nulls == whole[name].nulls
        assert other.rows == whole.rows
        assert np.allclose(other["x"].sums, whole["x"].sums, rtol=1e-12)
        assert other["x"].mean == pytest.approx(whole["x"].mean, rel=1e-12)
        assert other["x"].m2 == pytest.approx(whole["x"].m2, rel=1e-12)


def test_json_round_trip() -> None:
    acc = Accumulator([NUMBERS, LEVELS, Bins("t", Kind.UNTRACKED)])
    acc.update({"x": [0.5, None, 7.0], "c": ["a", None, "x"], "t": ["free", "text", None]})
    back = Accumulator.from_json(acc.to_json())
    assert back.to_json() == acc.to_json()
    assert back["t"].nulls == 1 and back["x"].maximum == 7.0
    back.update({"x": [1.5], "c": ["b"], "t": ["z"]})  # and it keeps counting
    assert back["x"].counts.tolist() == [0, 1, 1, 1]  # 0.5, 1.5, 7.0


def test_bad_documents_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        Accumulator.from_json(b"{not json")
    with pytest.raises(InvalidInputError, match="not a scoregate-counts"):
        Accumulator.from_json(b'{"format": "other"}')
    acc = Accumulator([NUMBERS])
    data = acc.to_dict()
    data["columns"][0]["counts"] = [1, 2]
    with pytest.raises(InvalidInputError, match="2 counts for 4 bins"):
        Accumulator.from_dict(data)
    data["columns"][0]["counts"] = [1, -2, 0, 0]
    with pytest.raises(InvalidInputError):
        Accumulator.from_dict(data)


def test_merge_refuses_other_bins() -> None:
    with pytest.raises(InvalidInputError, match="binned differently"):
        Accumulator([NUMBERS]).merge(Accumulator([Bins("x", Kind.NUMERIC, edges=(0.0, 1.5))]))
    with pytest.raises(InvalidInputError, match="different columns"):
        Accumulator([NUMBERS]).merge(Accumulator([LEVELS]))


def test_wrong_and_missing_columns_are_named() -> None:
    acc = Accumulator([NUMBERS, LEVELS])
    with pytest.raises(InvalidInputError, match=r"missing column\(s\): c"):
        acc.update({"x": [1.0]})
    with pytest.raises(InvalidInputError, match="'x' holds text, not numbers"):
        acc.update({"x": ["1.5"], "c": ["a"]})
    with pytest.raises(InvalidInputError, match=r"'c' holds numbers \(double\), not category labels"):
        acc.update({"x": [1.5], "c": [1.5]})
    with pytest.raises(InvalidInputError, match="different lengths"):
        acc.update({"x": [1.5, 2.0], "c": ["a"]})


def test_bins_must_be_increasing() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        Bins("x", Kind.NUMERIC, edges=(1.0, 1.0))
    with pytest.raises(ValueError, match="finite"):
        Bins("x", Kind.NUMERIC, edges=(0.0, float("inf")))
    assert ColumnCounts.empty(Bins("t", Kind.UNTRACKED)).counts.size == 0
