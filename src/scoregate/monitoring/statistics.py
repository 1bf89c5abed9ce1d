"""Drift statistics: small pure functions over binned counts, each with a pinned definition.

Every function takes the reference's and the current data's counts over the same bins
(the last axis) and returns the statistic. The current counts may carry leading axes
(``(replicates, bins)``): the calibrated mode evaluates a thousand bootstrap replicates
in one call, with the same code that computes the observed value. Bins empty on both
sides are ignored everywhere, so adding an unused bin never changes a figure.

Why some are written here rather than taken from scipy: PSI, Hellinger and L-infinity
have no scipy function; KS and Wasserstein-1 over *binned* counts (scipy's take raw
samples) are two lines of cumsum, and must run vectorised over bootstrap replicates.
scipy is used where it is the right tool: Jensen-Shannon (``scipy.spatial.distance``),
the chi-square test and Cramer's V (``scipy.stats.chi2_contingency``, ``association``),
the exact KS test (``scipy.stats.ks_2samp``) and the Kolmogorov distribution.

Each :class:`Definition` is written into every result, and ``STATISTICS_VERSION`` names
the set: changing a formula, a binning, a log base or a smoothing means a new version
of that definition, never an edit of an old one, so stored results keep their meaning.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import special, stats
from scipy.spatial import distance

#: The set of definitions below; recorded in every profile and result.
STATISTICS_VERSION = "scoregate-statistics/1"
#: Pseudo-count added to each (non-empty) bin before PSI takes logarithms.
PSI_PSEUDO_COUNT = 0.5
#: Above this effective sample size the KS p-value uses the asymptotic Kolmogorov law
#: (scipy's exact ``kstwo`` takes over a second there and agrees to three digits).
KS_EXACT_DISTRIBUTION_UP_TO = 10_000


class Statistic(StrEnum):
    PSI = "psi"
    KS = "ks"
    KS_EXACT = "ks_exact"
    WASSERSTEIN = "wasserstein"
    WASSERSTEIN_NORMED = "wasserstein_normed"
    JENSEN_SHANNON = "jensen_shannon"
    HELLINGER = "hellinger"
    CHI_SQUARE = "chi_square"
    CRAMERS_V = "cramers_v"
    LINF = "linf"


class Definition(BaseModel):
    """What a statistic is, precisely enough to recompute it by hand."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Statistic
    version: int
    name: str
    formula: str
    binning: str
    log_base: str | None = None
    smoothing: str | None = None
    range: str
    notes: str | None = None


COARSE = (
    "coarse bins: numeric features 10 bins cut at the reference deciles (out-of-range values fall in the "
    "outer bins); categorical features the reference's top-K levels plus one 'other' bin; nulls excluded"
)
FINE = (
    "fine bins: cut at the reference percentiles 1..99 plus the reference minimum and just above its "
    "maximum (so values below and above the reference range have a bin each); nulls excluded"
)

DEFINITIONS: dict[Statistic, Definition] = {
    d.id: d
    for d in (
        Definition(
            id=Statistic.PSI,
            version=1,
            name="population stability index",
            formula="PSI = sum_i (c_i - r_i) * ln(c_i / r_i), r_i and c_i the reference and current proportions",
            binning=COARSE,
            log_base="e",
            smoothing=f"{PSI_PSEUDO_COUNT} added to the count of every bin used (Jeffreys), then normalised",
            range="[0, inf)",
        ),
        Definition(
            id=Statistic.KS,
            version=1,
            name="Kolmogorov-Smirnov distance (binned)",
            formula="D = max_j |R_j - C_j|, R and C the cumulative proportions at each fine-bin edge",
            binning=FINE,
            range="[0, 1]",
            notes=(
                "never above the exact D; differs from it by at most the largest bin's proportion. p-value: "
                "scipy.stats.kstwo.sf(D, round(n*m/(n+m))) up to an effective size of "
                f"{KS_EXACT_DISTRIBUTION_UP_TO}, scipy.special.kolmogorov(sqrt(n*m/(n+m)) * D) above"
            ),
        ),
        Definition(
            id=Statistic.KS_EXACT,
            version=1,
            name="Kolmogorov-Smirnov distance (exact)",
            formula="D = sup_x |F_ref(x) - F_cur(x)| over the raw values, with its two-sided p-value",
            binning="none: raw values (scipy.stats.ks_2samp, method='auto')",
            range="[0, 1]",
        ),
        Definition(
            id=Statistic.WASSERSTEIN,
            version=1,
            name="Wasserstein-1 (earth mover's) distance",
            formula="W1 = integral |F_ref(x) - F_cur(x)| dx, each fine bin's mass placed at the mean of its values",
            binning=FINE,
            range="[0, inf), in the feature's units",
            notes="exact when the two distributions do not overlap within a bin; each bin's mean is kept exactly",
        ),
        Definition(
            id=Statistic.WASSERSTEIN_NORMED,
            version=1,
            name="Wasserstein-1 distance in reference standard deviations",
            formula="W1 / s_ref, s_ref the reference's sample standard deviation (n - 1)",
            binning=FINE,
            range="[0, inf)",
            notes="undefined (null) when the reference is constant",
        ),
        Definition(
            id=Statistic.JENSEN_SHANNON,
            version=1,
            name="Jensen-Shannon distance",
            formula="JS = sqrt((KL(r || m) + KL(c || m)) / 2), m = (r + c) / 2 (scipy.spatial.distance.jensenshannon)",
            binning=COARSE,
            log_base="2",
            smoothing="none (0 * log 0 = 0)",
            range="[0, 1]",
            notes="a distance, the square root of the divergence; in base 2, so 1.2x the natural-log figure",
        ),
        Definition(
            id=Statistic.HELLINGER,
            version=1,
            name="Hellinger distance",
            formula="H = sqrt(1 - sum_i sqrt(r_i * c_i)) = ||sqrt(r) - sqrt(c)||_2 / sqrt(2)",
            binning=COARSE,
            smoothing="none",
            range="[0, 1]",
        ),
        Definition(
            id=Statistic.CHI_SQUARE,
            version=1,
            name="Pearson chi-square test of homogeneity",
            formula="X2 = sum over the 2 x k table of (observed - expected)^2 / expected, dof = k - 1",
            binning=COARSE,
            smoothing="none; no Yates correction (scipy.stats.chi2_contingency, correction=False)",
            range="[0, inf); grows with the row counts, so a test, not an effect size",
        ),
        Definition(
            id=Statistic.CRAMERS_V,
            version=1,
            name="Cramer's V",
            formula="V = sqrt(X2 / (N * (min(2, k) - 1))), N = n + m (scipy.stats.contingency.association)",
            binning=COARSE,
            smoothing="none; no bias correction",
            range="[0, 1]",
            notes="shrinks as the reference outgrows the current sample: reported, never a default",
        ),
        Definition(
            id=Statistic.LINF,
            version=1,
            name="L-infinity distance",
            formula="L = max_i |r_i - c_i| over the bin proportions",
            binning=COARSE,
            range="[0, 1]",
        ),
    )
}


# -- helpers ---------------------------------------------------------------------------------------


def _counts(reference: Any, current: Any) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if r.shape[-1] != c.shape[-1]:
        raise ValueError(f"reference has {r.shape[-1]} bins, current {c.shape[-1]}")
    return r, c


def _proportions(counts: np.ndarray) -> np.ndarray:
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / np.where(total > 0, total, 1.0), np.nan)


def _scalar(value: np.ndarray) -> Any:
    return float(value) if np.ndim(value) == 0 else value


# -- distances over binned counts -------------------------------------------------------------------


def psi(reference: Any, current: Any) -> Any:
    """Population stability index, natural log, 0.5 pseudo-count per used bin."""
    r, c = _counts(reference, current)
    used = (r > 0) | (c > 0)
    k = used.sum(axis=-1, keepdims=True)
    pr = np.where(used, r + PSI_PSEUDO_COUNT, 0.0) / (r.sum(axis=-1, keepdims=True) + PSI_PSEUDO_COUNT * k)
    pc = np.where(used, c + PSI_PSEUDO_COUNT, 0.0) / (c.sum(axis=-1, keepdims=True) + PSI_PSEUDO_COUNT * k)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(used, (pc - pr) * np.log(np.where(used, pc / np.where(used, pr, 1.0), 1.0)), 0.0)
    return _scalar(terms.sum(axis=-1))


def ks(reference: Any, current: Any) -> Any:
    """Largest gap between the cumulative proportions at the bin edges (binned KS distance)."""
    r, c = _counts(reference, current)
    gap = np.abs(np.cumsum(_proportions(r), axis=-1) - np.cumsum(_proportions(c), axis=-1))
    return _scalar(gap.max(axis=-1))


def ks_pvalue(d: float, n_reference: int, n_current: int) -> float:
    """Two-sided p-value of a KS distance between samples of these sizes."""
    en = n_reference * n_current / (n_reference + n_current)
    if en <= KS_EXACT_DISTRIBUTION_UP_TO:
        return float(stats.kstwo.sf(d, max(1, round(en))))
    return float(special.kolmogorov(math.sqrt(en) * d))


def ks_exact(reference_values: np.ndarray, current_values: np.ndarray) -> tuple[float, float]:
    """Exact two-sample KS distance and p-value over raw values (scipy)."""
    result = stats.ks_2samp(reference_values, current_values, method="auto")
    return float(result.statistic), float(result.pvalue)


def wasserstein(reference: Any, reference_positions: Any, current: Any, current_positions: Any) -> Any:
    """W1 between two sets of point masses (counts at positions), vectorised over replicates.

    The CDFs of both are step functions on the merged, sorted positions; W1 is the area
    between them. Positions of empty bins do not matter (they carry no mass).
    """
    r, c = _counts(reference, current)
    rp = np.nan_to_num(np.asarray(reference_positions, dtype=np.float64))
    cp = np.nan_to_num(np.asarray(current_positions, dtype=np.float64))
    positions = np.concatenate([rp, cp])
    order = np.argsort(positions, kind="stable")
    pr, pc = _proportions(r), _proportions(c)
    wr = np.concatenate([pr, np.zeros((*pr.shape[:-1], cp.size))], axis=-1)[..., order]
    wc = np.concatenate([np.zeros((*pc.shape[:-1], rp.size)), pc], axis=-1)[..., order]
    gap = np.abs(np.cumsum(wr, axis=-1) - np.cumsum(wc, axis=-1))[..., :-1]
    return _scalar((gap * np.diff(positions[order])).sum(axis=-1))


def jensen_shannon(reference: Any, current: Any) -> Any:
    """Jensen-Shannon distance in base 2 (scipy)."""
    r, c = _counts(reference, current)
    r, c = np.broadcast_arrays(_proportions(r), _proportions(c))
    return _scalar(np.asarray(distance.jensenshannon(r, c, base=2, axis=-1)))


def hellinger(reference: Any, current: Any) -> Any:
    r, c = _counts(reference, current)
    overlap = np.sqrt(_proportions(r) * _proportions(c)).sum(axis=-1)
    return _scalar(np.sqrt(np.clip(1.0 - overlap, 0.0, None)))


def linf(reference: Any, current: Any) -> Any:
    r, c = _counts(reference, current)
    return _scalar(np.abs(_proportions(r) - _proportions(c)).max(axis=-1))


# -- tests over one table ------------------------------------------------------------------------------


def _table(reference: Any, current: Any) -> np.ndarray:
    r, c = _counts(reference, current)
    if r.ndim != 1 or c.ndim != 1:
        raise ValueError("the chi-square test takes one table, not replicates")
    used = (r > 0) | (c > 0)
    return np.rint(np.stack([r[used], c[used]])).astype(np.int64)


def chi_square(reference: Any, current: Any) -> tuple[float, float, int]:
    """Pearson's chi-square test of homogeneity of the 2 x k table: (statistic, p-value, dof)."""
    table = _table(reference, current)
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue), int(result.dof)


def cramers_v(reference: Any, current: Any) -> float:
    table = _table(reference, current)
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0
    return float(stats.contingency.association(table, method="cramer", correction=False))


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (scipy), in the order given."""
    if not p_values:
        return []
    return [float(p) for p in stats.false_discovery_control(np.asarray(p_values, dtype=np.float64), method="bh")]
