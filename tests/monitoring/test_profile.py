"""Reference profiles: accuracy against exact figures, determinism, size, chunks, levels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from scoregate.monitoring import statistics as st
from scoregate.monitoring.counts import Kind
from scoregate.monitoring.profile import ReferenceProfile, Role
from scoregate.schema import FeatureType
from tests.monitoring.helpers import counts_of, profile_of

MILLION = 1_000_000


def exact_decile_psi(reference: np.ndarray, current: np.ndarray) -> float:
    """What a plain NumPy implementation computes: exact reference deciles, then PSI with 0.5 pseudo-counts."""
    edges = np.quantile(reference, np.arange(1, 10) / 10)
    r = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=10) + 0.5
    c = np.bincount(np.searchsorted(edges, current, side="right"), minlength=10) + 0.5
    r, c = r / r.sum(), c / c.sum()
    return float(sum((ci - ri) * math.log(ci / ri) for ri, ci in zip(r, c, strict=True)))


CASES = {
    "mean shift 0.5 sd": (lambda g, n: g.normal(size=n), lambda g, n: g.normal(0.5, 1, size=n)),
    "log-normal, wider": (lambda g, n: np.exp(g.normal(size=n)), lambda g, n: np.exp(g.normal(0.2, 1.3, size=n))),
    "integers with ties": (lambda g, n: g.poisson(3, n).astype(float), lambda g, n: g.poisson(3.4, n).astype(float)),
    "bimodal against one mode": (
        lambda g, n: np.where(g.random(n) < 0.3, g.normal(-3, 0.5, n), g.normal(2, 1, n)),
        lambda g, n: g.normal(1, 2, n),
    ),
    "no drift": (lambda g, n: g.normal(size=n), lambda g, n: g.normal(size=n)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_binned_psi_and_ks_are_within_target_of_exact_on_a_million_rows(case: str) -> None:
    rng = np.random.default_rng(11)
    make_reference, make_current = CASES[case]
    reference, current = make_reference(rng, MILLION), make_current(rng, MILLION)
    profile = profile_of({"x": reference})
    acc = counts_of(profile, {"x": current})
    column, counted = profile.column("x"), acc["x"]
    mapping = column.coarse_map()
    psi = st.psi(np.bincount(mapping, weights=column.counts), np.bincount(mapping, weights=counted.counts))
    assert abs(psi - exact_decile_psi(reference, current)) < 0.005
    exact_ks = stats.ks_2samp(reference, current).statistic
    assert abs(st.ks(column.counts, counted.counts) - exact_ks) < 0.01
    w1 = st.wasserstein(column.counts, column.to_counts().bin_means(), counted.counts, counted.bin_means())
    assert abs(w1 - stats.wasserstein_distance(reference, current)) < 0.01 * reference.std()


def test_profile_is_the_same_whatever_the_batches() -> None:
    rng = np.random.default_rng(2)
    data = {"x": rng.normal(size=300_000), "c": rng.choice(["a", "b", "c"], 300_000)}
    types = {"c": FeatureType.CATEGORY}
    first = profile_of(data, types)
    assert profile_of(data, types, batch_rows=7_777).digest() == first.digest()
    assert profile_of(data, types).canonical_json() == first.canonical_json()


def test_profile_json_is_a_fixed_point_and_small() -> None:
    rng = np.random.default_rng(3)
    data = {f"f{i}": rng.normal(size=200_000) for i in range(5)}
    profile = profile_of(data)
    text = profile.canonical_json()
    again = ReferenceProfile.from_json(text)
    assert again.canonical_json() == text and again.digest() == profile.digest()
    assert len(text) / 5 < 16 * 1024  # a few KiB per feature, chunk counts included
    column = profile.column("f0")
    assert len(column.edges) == 101  # minimum, 99 percentiles, just above the maximum
    assert column.edges[0] == data["f0"].min() and column.edges[-1] > data["f0"].max()
    assert len(column.coarse_edges) == 9 and set(column.coarse_edges) <= set(column.edges)


def test_small_data_gets_exact_quantiles_and_chunks_add_up() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=50_000)
    profile = profile_of({"x": x})
    column = profile.column("x")
    exact = np.quantile(x, np.arange(1, 100) / 100, method="inverted_cdf")
    assert column.edges[1:-1] == exact.tolist()
    assert sum(column.counts) == 50_000 and column.counts[0] == column.counts[-1] == 0
    assert len(column.chunks) == 20 and profile.chunk_rows == 2_500
    assert np.asarray(column.chunks).sum(axis=0).tolist() == column.counts
    assert column.mean == pytest.approx(x.mean()) and column.std == pytest.approx(x.std(ddof=1))


def test_categories_keep_the_top_k_and_bools_their_two_levels() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    levels = rng.choice(["a", "b", "c", "d", "e"], n, p=[0.4, 0.3, 0.2, 0.06, 0.04])
    data = {"c": levels, "b": rng.random(n) < 0.3}
    profile = profile_of(data, {"c": FeatureType.CATEGORY, "b": FeatureType.BOOL}, top_k=3)
    c = profile.column("c")
    assert c.kind is Kind.CATEGORICAL and c.levels == ["a", "b", "c"]
    assert c.counts[:3] == [int((levels == v).sum()) for v in "abc"]
    assert c.counts[3] == int(np.isin(levels, ["d", "e"]).sum())
    b = profile.column("b")
    assert b.levels == ["false", "true"] and b.counts[1] == int(data["b"].sum())


def test_nulls_and_an_empty_column() -> None:
    x = np.array([1.0, np.nan, 2.0, 3.0] * 500)
    profile = profile_of({"x": x, "empty": np.full(2_000, np.nan)})
    assert profile.column("x").nulls == 500 and sum(profile.column("x").counts) == 1_500
    empty = profile.column("empty")
    assert empty.edges == [] and empty.counts == [0] and empty.nulls == 2_000 and empty.role is Role.INPUT


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(counts=c["counts"][:-1]), "counts for"),
        (lambda c: c.update(edges=c["edges"][::-1]), "strictly increasing"),
        (lambda c: c.update(nulls=c["nulls"] + 1), "for 3000 rows"),
        (lambda c: c.update(coarse_edges=[0.123456]), "coarse edges"),
        (lambda c: c["chunks"][0].__setitem__(5, c["chunks"][0][5] + 1), "do not add up"),
    ],
    ids=["counts", "edges", "rows", "coarse", "chunks"],
)
def test_an_inconsistent_profile_document_is_refused(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    import json

    from scoregate.errors import InvalidInputError

    profile = profile_of({"x": np.random.default_rng(8).normal(size=3_000)}, min_chunk_rows=500)
    document = json.loads(profile.canonical_json())
    edit(document["columns"][0])
    with pytest.raises(InvalidInputError, match=message):
        ReferenceProfile.from_json(json.dumps(document))


@pytest.mark.parametrize("kind", ["continuous", "ties"])
def test_deciles_are_exact_beyond_the_sample(kind: str) -> None:
    rng = np.random.default_rng(13)
    n = 400_000  # three times the sample
    x = rng.normal(size=n) if kind == "continuous" else rng.poisson(3, n).astype(float)
    column = profile_of({"x": x}).column("x")
    assert column.exact_deciles
    ordered = np.sort(x)
    targets = [ordered[(k * n + 9) // 10 - 1] for k in range(1, 10)]  # x_(ceil(k n / 10))
    if kind == "ties":
        assert column.coarse_edges == sorted(set(targets))
        return
    for edge, target in zip(column.coarse_edges, targets, strict=True):
        # the smallest value of the 1/4096-bracket cell holding the rank: a few rows off at most
        assert abs(int(np.searchsorted(ordered, edge)) - int(np.searchsorted(ordered, target))) <= 10
