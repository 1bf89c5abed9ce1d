"""Drift: current counts against a reference profile, one verdict per column.

Every statistic of :mod:`~scoregate.monitoring.statistics` is computed for every column
where it is defined and recorded; one of them, chosen by type and size, decides:

=================  ===================  ==============  =============================
column             current values       statistic       significance companion
=================  ===================  ==============  =============================
numeric            < 1,000              KS distance     KS test
numeric            >= 1,000             PSI             chi-square on the PSI bins
categorical, bool  < 1,000              Jensen-Shannon  chi-square
categorical, bool  >= 1,000             PSI             chi-square
=================  ===================  ==============  =============================

A column drifts when the statistic reaches its **effect-size threshold** (0.1 for each:
PSI's "moderate shift" band in credit scoring, about a 0.33 standard deviation shift of
a normal feature; a 10-point gap between the CDFs for KS; 0.1 for Jensen-Shannon in base
2, Evidently's figure in base e being 0.083 of ours) **and** the companion test's
Benjamini-Hochberg adjusted p-value across the columns is at most ``alpha``. The
threshold keeps a million rows from flagging a negligible shift (their p-values are all
tiny); the test keeps a small window's noise from crossing the threshold by chance. PSI
and KS switch at 1,000 rows because ten-bin PSI's own noise (about 9/n) is small only
from there on.

The **calibrated** mode replaces the fixed threshold by the statistic's distribution
under no drift, for this current size: a null current is drawn from real reference rows
(the binned counts of randomly pooled consecutive chunks, enough to hold the current's
size, sampled without replacement, so the variation between chunks, such as
seasonality, is part of the null) and compared with the reference *without those
chunks*: comparing rows with a reference that contains them shrinks the statistic and
so the thresholds, which then raise false alarms. A current larger than half the
reference is drawn with replacement from half of it instead, which overstates the null
(fewer alarms, never more) and is counted in the result. A gamma law
fitted to the replicates by their mean and variance gives the p-value (the replicates
alone cannot resolve the p-values BH needs across many columns), and a column drifts
when its BH-adjusted p-value is at most ``alpha``.

False alarms: at ``alpha`` 0.01 a comparison flags anything under no drift at most 1 %
of the time (BH controls the family-wise rate under the global null), and far less once
the threshold binds (from about 1,000 rows no undrifted column reaches PSI 0.1). Thirty
daily comparisons thus raise at most one alert; monitoring that repeats a comparison
more often (live windows) should divide ``alpha`` by the comparisons per period.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats as scipy_stats

from scoregate.monitoring import statistics as st
from scoregate.monitoring.counts import Accumulator, ColumnCounts, Kind
from scoregate.monitoring.profile import ColumnProfile, ReferenceProfile, Role, Subject
from scoregate.monitoring.statistics import DEFINITIONS, STATISTICS_VERSION, Definition, Statistic
from scoregate.schema import FeatureType

RESULT_FORMAT = "scoregate-drift/1"

DEFAULT_THRESHOLDS: dict[Statistic, float] = {
    Statistic.PSI: 0.1,
    Statistic.KS: 0.1,
    Statistic.KS_EXACT: 0.1,
    Statistic.WASSERSTEIN_NORMED: 0.1,
    Statistic.JENSEN_SHANNON: 0.1,
    Statistic.HELLINGER: 0.1,
    Statistic.LINF: 0.1,
}
#: Statistics a user may make the deciding one (the others are tests, not effect sizes).
DECIDING = frozenset(DEFAULT_THRESHOLDS)
NUMERIC_ONLY = frozenset({Statistic.KS, Statistic.KS_EXACT, Statistic.WASSERSTEIN_NORMED})


class DriftSettings(BaseModel):
    """How columns are judged; recorded in every result."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(0.01, gt=0, lt=1)
    small_sample_rows: int = Field(1000, ge=1)
    min_rows: int = Field(100, ge=1)
    thresholds: dict[Statistic, float] = Field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    statistic: Statistic | None = None
    calibrated: bool = False
    replicates: int = Field(1000, ge=100, le=100_000)
    seed: int = 0

    def model_post_init(self, context: Any) -> None:
        if self.statistic is not None and self.statistic not in DECIDING:
            allowed = ", ".join(sorted(DECIDING))
            raise ValueError(f"{self.statistic.value} is a test statistic, not an effect size: choose one of {allowed}")
        for key, value in self.thresholds.items():
            if not value > 0:
                raise ValueError(f"threshold of {key.value} must be positive")


class Calibration(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    replicates: int
    chunks: int
    resampled: int  # replicates drawn with replacement (current larger than half the reference)
    null_mean: float
    null_std: float
    critical_value: float | None
    empirical_p: float


class Quality(BaseModel):
    """Data-quality figures beside the drift statistics."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    null_share_reference: float | None
    null_share_current: float | None
    invalid_current: int = 0
    below_range_share: float | None = None
    above_range_share: float | None = None
    other_share_reference: float | None = None
    other_share_current: float | None = None
    mean_reference: float | None = None
    mean_current: float | None = None
    std_reference: float | None = None
    std_current: float | None = None


class ColumnDrift(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    role: Role
    type: FeatureType
    kind: Kind
    reference_count: int
    current_count: int
    statistic: Statistic | None = None
    value: float | None = None
    threshold: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    drifted: bool | None = None
    note: str | None = None
    statistics: dict[str, float | None] = Field(default_factory=dict)
    p_values: dict[str, float | None] = Field(default_factory=dict)
    calibration: Calibration | None = None
    quality: Quality
    #: the counts over the coarse bins (reference deciles, or levels plus 'other'), for reports
    reference_bins: list[float] | None = None
    current_bins: list[float] | None = None


class CurrentData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str  # "file", "log" or "live" (the server's windows)
    uri: str | None = None
    sha256: str | None = None
    rows: int
    since: dt.datetime | None = None
    until: dt.datetime | None = None


class DriftResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = RESULT_FORMAT
    statistics_version: str = STATISTICS_VERSION
    subject: Subject | None
    profile_digest: str
    reference_rows: int
    current: CurrentData
    settings: DriftSettings
    computed_at: dt.datetime
    columns: list[ColumnDrift]
    definitions: list[Definition]

    @property
    def drifted(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.drifted]

    def canonical_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json()).hexdigest()


# -- computing ------------------------------------------------------------------------------------------


def compare(
    profile: ReferenceProfile,
    inputs: Accumulator,
    outputs: Accumulator | None = None,
    *,
    current: CurrentData,
    settings: DriftSettings | None = None,
    exact_ks: Mapping[str, tuple[float, float]] | None = None,
    profile_digest: str | None = None,
    now: dt.datetime | None = None,
) -> DriftResult:
    """Judge every column of ``inputs`` (and ``outputs``) against ``profile``."""
    settings = settings or DriftSettings()
    rng = np.random.default_rng(settings.seed)
    pending: list[dict[str, Any]] = []
    for role, counted in ((Role.INPUT, inputs), (Role.OUTPUT, outputs)):
        if counted is None:
            continue
        for name, column in counted.columns.items():
            reference = profile.column(name, role)
            exact = (exact_ks or {}).get(name) if role is Role.INPUT else None
            pending.append(_judge(reference, column, settings, exact, rng))
    judged = [i for i, p in enumerate(pending) if p.get("p_value") is not None]
    adjusted = st.benjamini_hochberg([pending[i]["p_value"] for i in judged])
    for i, p_adj in zip(judged, adjusted, strict=True):
        entry = pending[i]
        entry["p_adjusted"] = p_adj
        material = settings.calibrated or entry["value"] >= entry["threshold"]
        entry["drifted"] = bool(material and p_adj <= settings.alpha)
    columns = [ColumnDrift(**p) for p in pending]
    used = sorted({Statistic(k) for c in columns for k, v in c.statistics.items() if v is not None})
    return DriftResult(
        subject=profile.subject,
        profile_digest=profile_digest or profile.digest(),
        reference_rows=profile.source.rows,
        current=current,
        settings=settings,
        computed_at=now or dt.datetime.now(dt.UTC),
        columns=columns,
        definitions=[DEFINITIONS[s] for s in used],
    )


def choose(kind: Kind, n_current: int, settings: DriftSettings, exact: bool) -> Statistic:
    """The deciding statistic for a column of this kind and current size."""
    chosen = settings.statistic
    if chosen is not None and not (kind is Kind.CATEGORICAL and chosen in NUMERIC_ONLY):
        if chosen in (Statistic.KS, Statistic.KS_EXACT):
            return Statistic.KS_EXACT if exact else Statistic.KS
        return chosen
    small = n_current < settings.small_sample_rows
    if kind is Kind.NUMERIC:
        if small:
            return Statistic.KS_EXACT if exact else Statistic.KS
        return Statistic.PSI
    return Statistic.JENSEN_SHANNON if small else Statistic.PSI


def _judge(
    reference: ColumnProfile,
    current: ColumnCounts,
    settings: DriftSettings,
    exact: tuple[float, float] | None,
    rng: np.random.Generator,
) -> dict[str, Any]:
    ref = reference.to_counts()
    entry: dict[str, Any] = {
        "name": reference.name,
        "role": reference.role,
        "type": reference.type,
        "kind": reference.kind,
        "reference_count": ref.count,
        "current_count": current.count,
        "quality": _quality(reference, ref, current),
    }
    if reference.kind is Kind.UNTRACKED:
        entry["note"] = f"{reference.type.value} columns are not binned: only rows and nulls are compared"
        return entry
    if ref.count == 0:
        entry["note"] = "the reference has no values in this column"
        return entry
    values, p_values = _all_statistics(reference, ref, current, exact)
    entry["statistics"] = {k.value: v for k, v in values.items()}
    entry["reference_bins"] = _coarse(reference, ref.counts).tolist()
    entry["current_bins"] = _coarse(reference, current.counts).tolist()
    entry["p_values"] = {k.value: v for k, v in p_values.items()}
    if current.count < settings.min_rows:
        entry["note"] = f"too few current values to judge ({current.count} < {settings.min_rows})"
        return entry
    # the calibrated mode simulates binned counts, so it judges the binned KS
    chosen = choose(reference.kind, current.count, settings, exact is not None and not settings.calibrated)
    value = values.get(chosen)
    if value is None:
        entry["note"] = f"{chosen.value} is undefined here (constant reference)"
        return entry
    entry["statistic"], entry["value"] = chosen, value
    entry["threshold"] = settings.thresholds.get(chosen, DEFAULT_THRESHOLDS[chosen])
    if settings.calibrated:
        calibration, p_value = _calibrate(reference, ref, current, chosen, value, settings, rng)
        if calibration is None:
            entry["note"] = "the reference has too few chunks to calibrate against (at least 5 are needed)"
            return entry
        entry["calibration"] = calibration
        entry["p_value"] = p_value
    else:
        companion = Statistic.KS_EXACT if chosen is Statistic.KS_EXACT else _COMPANION.get(chosen, Statistic.CHI_SQUARE)
        if reference.kind is not Kind.NUMERIC:
            companion = Statistic.CHI_SQUARE
        entry["p_value"] = p_values[companion]
    return entry


_COMPANION = {Statistic.KS: Statistic.KS, Statistic.WASSERSTEIN_NORMED: Statistic.KS}


def _coarse(reference: ColumnProfile, counts: np.ndarray) -> np.ndarray:
    mapping = reference.coarse_map()
    size = int(mapping.max()) + 1 if len(mapping) else 0
    if counts.ndim == 1:
        return np.bincount(mapping, weights=counts, minlength=size)
    starts = np.flatnonzero(np.r_[True, np.diff(mapping) > 0])
    return np.add.reduceat(counts, starts, axis=-1)


def _all_statistics(
    reference: ColumnProfile, ref: ColumnCounts, current: ColumnCounts, exact: tuple[float, float] | None
) -> tuple[dict[Statistic, float | None], dict[Statistic, float | None]]:
    values: dict[Statistic, float | None] = {}
    p_values: dict[Statistic, float | None] = {}
    if current.count == 0:
        return values, p_values
    r_coarse, c_coarse = _coarse(reference, ref.counts), _coarse(reference, current.counts)
    values[Statistic.PSI] = st.psi(r_coarse, c_coarse)
    values[Statistic.JENSEN_SHANNON] = st.jensen_shannon(r_coarse, c_coarse)
    values[Statistic.HELLINGER] = st.hellinger(r_coarse, c_coarse)
    values[Statistic.LINF] = st.linf(r_coarse, c_coarse)
    chi2, chi2_p, _ = st.chi_square(r_coarse, c_coarse)
    values[Statistic.CHI_SQUARE], p_values[Statistic.CHI_SQUARE] = chi2, chi2_p
    values[Statistic.CRAMERS_V] = st.cramers_v(r_coarse, c_coarse)
    if reference.kind is Kind.NUMERIC:
        d = st.ks(ref.counts, current.counts)
        values[Statistic.KS], p_values[Statistic.KS] = d, st.ks_pvalue(d, ref.count, current.count)
        w1 = st.wasserstein(ref.counts, ref.bin_means(), current.counts, current.bin_means())
        values[Statistic.WASSERSTEIN] = w1
        values[Statistic.WASSERSTEIN_NORMED] = w1 / reference.std if reference.std else None
        if exact is not None:
            values[Statistic.KS_EXACT], p_values[Statistic.KS_EXACT] = exact
    return values, p_values


_ON_COARSE_BINS = {
    Statistic.PSI: st.psi,
    Statistic.JENSEN_SHANNON: st.jensen_shannon,
    Statistic.HELLINGER: st.hellinger,
    Statistic.LINF: st.linf,
}


def _calibrate(
    reference: ColumnProfile,
    ref: ColumnCounts,
    current: ColumnCounts,
    chosen: Statistic,
    observed: float,
    settings: DriftSettings,
    rng: np.random.Generator,
) -> tuple[Calibration | None, float | None]:
    chunks = np.asarray(reference.chunks, dtype=np.int64)
    if chunks.ndim != 2 or len(chunks) < 5:
        return None, None
    if chosen in _ON_COARSE_BINS:
        # a multinomial over the fine bins, summed into coarse ones, is a multinomial over
        # the coarse ones: simulate those directly (ten times fewer draws)
        chunks = _coarse(reference, chunks).astype(np.int64)
        statistic = _ON_COARSE_BINS[chosen]
    elif chosen is Statistic.WASSERSTEIN_NORMED:
        positions = np.nan_to_num(ref.bin_means())
        statistic = lambda r, c: st.wasserstein(r, positions, c, positions) / reference.std  # noqa: E731
    else:
        statistic = st.ks
    total = chunks.sum(axis=0)
    sizes = chunks.sum(axis=1)
    n = current.count
    groups = min(100, settings.replicates)
    per_group = -(-settings.replicates // groups)
    nulls, resampled = [], 0
    for _ in range(groups):
        # pool random chunks until they hold the current's size (at most half the reference)
        pooled, held = [], 0
        for j in rng.permutation(len(chunks)):
            if len(pooled) >= len(chunks) // 2 or held >= n:
                break
            pooled.append(j)
            held += int(sizes[j])
        pool = chunks[pooled].sum(axis=0)
        if held >= n:  # real rows of the pooled chunks, drawn without replacement
            simulated = rng.multivariate_hypergeometric(pool, n, size=per_group)
        else:  # the current outnumbers half the reference: draw with replacement (conservative)
            simulated = rng.multinomial(n, pool / held, size=per_group)
            resampled += per_group
        nulls.append(np.atleast_1d(statistic(total - pool, simulated)))
    null = np.concatenate(nulls)
    mean, var = float(null.mean()), float(null.var(ddof=1))
    empirical = float((1 + (null >= observed).sum()) / (len(null) + 1))
    if var <= 0 or mean <= 0:
        p_value = 0.0 if observed > mean else 1.0
        critical = mean
    else:
        shape, scale = mean * mean / var, var / mean
        p_value = float(scipy_stats.gamma.sf(observed, shape, scale=scale))
        critical = float(scipy_stats.gamma.isf(settings.alpha, shape, scale=scale))
    calibration = Calibration(
        replicates=len(null),
        chunks=len(chunks),
        resampled=resampled,
        null_mean=mean,
        null_std=float(np.sqrt(var)),
        critical_value=critical,
        empirical_p=empirical,
    )
    return calibration, p_value


def _share(part: float, whole: int) -> float | None:
    return float(part) / whole if whole else None


def _quality(reference: ColumnProfile, ref: ColumnCounts, current: ColumnCounts) -> Quality:
    figures: dict[str, Any] = {
        "null_share_reference": _share(ref.nulls, ref.rows),
        "null_share_current": _share(current.nulls, current.rows),
        "invalid_current": current.invalid,
    }
    if reference.kind is Kind.NUMERIC and len(reference.edges) >= 2:
        # the first fine bin lies below the reference minimum, the last above its maximum
        figures["below_range_share"] = _share(current.counts[0], current.count)
        figures["above_range_share"] = _share(current.counts[-1], current.count)
        figures |= {
            "mean_reference": reference.mean,
            "mean_current": current.mean if current.n else None,
            "std_reference": reference.std,
            "std_current": current.std,
        }
    elif reference.kind is Kind.CATEGORICAL:
        figures["other_share_reference"] = _share(ref.counts[-1], ref.count)
        figures["other_share_current"] = _share(current.counts[-1], current.count)
    return Quality(**figures)
