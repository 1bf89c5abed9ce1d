"""Each statistic against a value worked out by hand on small arrays (not through the code under test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from scoregate.monitoring import statistics as st
from scoregate.monitoring.statistics import DEFINITIONS, Statistic

# reference proportions .1 .2 .3 .4 (100 rows), current .2 .2 .3 .3 (100 rows)
R = [10, 20, 30, 40]
C = [20, 20, 30, 30]


def test_psi_by_hand_with_half_pseudo_counts() -> None:
    # p_i = (k_i + 0.5) / (100 + 4 * 0.5): bins 2 and 3 are equal and add nothing
    by_hand = (20.5 - 10.5) / 102 * math.log(20.5 / 10.5) + (30.5 - 40.5) / 102 * math.log(30.5 / 40.5)
    assert by_hand == pytest.approx(0.093395, abs=1e-6)
    assert st.psi(R, C) == pytest.approx(by_hand, rel=1e-12)


def test_psi_ignores_bins_empty_on_both_sides_and_smooths_one_sided_zeros() -> None:
    assert st.psi([*R, 0], [*C, 0]) == pytest.approx(st.psi(R, C), rel=1e-12)
    # current has nothing in bin 1: p = (0 + .5)/(10 + 1), reference (5 + .5)/(10 + 1)
    by_hand = (0.5 - 5.5) / 11 * math.log(0.5 / 5.5) + (10.5 - 5.5) / 11 * math.log(10.5 / 5.5)
    assert st.psi([5, 5], [0, 10]) == pytest.approx(by_hand, rel=1e-12)
    assert st.psi([5, 5], [5, 5]) == 0.0


def test_ks_from_cumulative_proportions() -> None:
    # cumulative .1 .3 .6 1 against .2 .4 .7 1: the gap is .1 at each of the first three edges
    assert st.ks(R, C) == pytest.approx(0.1, abs=1e-12)
    assert st.ks([1, 0, 0], [0, 0, 1]) == pytest.approx(1.0)


def test_ks_pvalue_matches_the_kolmogorov_law() -> None:
    # en = 100 * 100 / 200 = 50 (exact distribution), 1e6 * 1e6 / 2e6 = 5e5 (asymptotic)
    assert st.ks_pvalue(0.2, 100, 100) == pytest.approx(stats.kstwo.sf(0.2, 50), rel=1e-12)
    assert st.ks_pvalue(0.003, 10**6, 10**6) == pytest.approx(
        2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * 500_000 * 0.003**2) for k in range(1, 50)), rel=1e-9
    )


def test_exact_ks_on_raw_values() -> None:
    assert st.ks_exact(np.array([1.0, 2, 3]), np.array([4.0, 5, 6]))[0] == 1.0
    d, p = st.ks_exact(np.array([1.0, 2, 3, 4]), np.array([3.0, 4, 5, 6]))
    assert d == 0.5  # F_ref(2) = .5, F_cur(2) = 0
    assert 0 < p <= 1


def test_wasserstein_by_hand() -> None:
    positions = [1.0, 2.0, 3.0, 4.0]
    # |.1-.2| + |.3-.4| + |.6-.7| over unit gaps
    assert st.wasserstein(R, positions, C, positions) == pytest.approx(0.3, abs=1e-12)
    # two points a half apart each way: everything moves 0.5
    assert st.wasserstein([1, 1], [0.0, 1.0], [1, 1], [0.5, 1.5]) == pytest.approx(0.5, abs=1e-12)
    # empty bins carry no mass wherever they are
    assert st.wasserstein([1, 0, 1], [0.0, 99.0, 1.0], [1, 1, 0], [0.5, 1.5, -50.0]) == pytest.approx(0.5)


def test_wasserstein_agrees_with_scipy_on_weighted_points() -> None:
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=30), rng.normal(1, 2, size=40)
    uw, vw = rng.integers(1, 9, 30), rng.integers(1, 9, 40)
    # our bins are one array per side; give each side its own positions and pad the other with zeros
    ours = st.wasserstein(np.r_[uw, np.zeros(40)], np.r_[u, v], np.r_[np.zeros(30), vw], np.r_[u, v])
    assert ours == pytest.approx(stats.wasserstein_distance(u, v, uw, vw), rel=1e-12)


def test_jensen_shannon_in_base_two_by_hand() -> None:
    p, q = [0.1, 0.2, 0.3, 0.4], [0.2, 0.2, 0.3, 0.3]
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    kl_pm = sum(a * math.log2(a / c) for a, c in zip(p, m, strict=True))
    kl_qm = sum(b * math.log2(b / c) for b, c in zip(q, m, strict=True))
    by_hand = math.sqrt((kl_pm + kl_qm) / 2)
    assert by_hand == pytest.approx(0.13201, abs=1e-5)
    assert st.jensen_shannon(R, C) == pytest.approx(by_hand, rel=1e-9)
    assert st.jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint: 1 in base 2


def test_hellinger_by_hand() -> None:
    overlap = math.sqrt(0.1 * 0.2) + math.sqrt(0.2 * 0.2) + math.sqrt(0.3 * 0.3) + math.sqrt(0.4 * 0.3)
    assert st.hellinger(R, C) == pytest.approx(math.sqrt(1 - overlap), rel=1e-12)
    assert st.hellinger([1, 0], [0, 1]) == pytest.approx(1.0)


def test_linf_by_hand() -> None:
    assert st.linf(R, C) == pytest.approx(0.1, abs=1e-12)


def test_chi_square_and_cramers_v_by_hand() -> None:
    # column totals 30 40 60 70 over N = 200: expected 15 20 30 35 in each row
    by_hand = 2 * ((10 - 15) ** 2 / 15 + (40 - 35) ** 2 / 35)
    statistic, p, dof = st.chi_square(R, C)
    assert statistic == pytest.approx(by_hand, rel=1e-12)
    assert dof == 3
    assert p == pytest.approx(stats.chi2.sf(by_hand, 3), rel=1e-12)
    assert st.cramers_v(R, C) == pytest.approx(math.sqrt(by_hand / 200), rel=1e-12)
    assert st.chi_square([*R, 0], [*C, 0])[:2] == pytest.approx((statistic, p))


def test_identical_distributions_give_zero() -> None:
    for f in (st.psi, st.ks, st.jensen_shannon, st.hellinger, st.linf):
        assert f(R, R) == pytest.approx(0.0, abs=1e-12), f.__name__
    for f in (st.ks, st.jensen_shannon, st.hellinger, st.linf):
        assert f(R, [2 * r for r in R]) == pytest.approx(0.0, abs=1e-12), f.__name__
    # the pseudo-count weighs less in the larger sample: equal proportions, PSI slightly above 0
    assert 0 < st.psi(R, [2 * r for r in R]) < 1e-4


def test_statistics_vectorise_over_replicates() -> None:
    replicates = np.array([C, R, [25, 25, 25, 25]])
    for f in (st.psi, st.ks, st.jensen_shannon, st.hellinger, st.linf):
        assert np.allclose(f(R, replicates), [f(R, row) for row in replicates]), f.__name__
    positions = np.arange(4.0)
    assert np.allclose(
        st.wasserstein(R, positions, replicates, positions),
        [st.wasserstein(R, positions, row, positions) for row in replicates],
    )


def test_benjamini_hochberg_by_hand() -> None:
    # sorted .01 .03 .04 .5 -> .01*4/1, .03*4/2, .04*4/3, .5 then the running minimum from the top
    adjusted = st.benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    assert adjusted == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])


def test_every_statistic_has_a_pinned_definition() -> None:
    assert set(DEFINITIONS) == set(Statistic)
    for definition in DEFINITIONS.values():
        assert definition.version >= 1 and definition.formula and definition.binning and definition.range
    assert DEFINITIONS[Statistic.PSI].log_base == "e"
    assert DEFINITIONS[Statistic.JENSEN_SHANNON].log_base == "2"
    assert "0.5" in DEFINITIONS[Statistic.PSI].smoothing
