"""The reference profile: what the training data looked like, in a few KiB per feature.

Built by streaming record batches three times, so memory is flat in rows:

1. pass one picks the bins: the exact minimum and maximum of each numeric column and a
   seeded uniform sample of 131,072 rows (algorithm R), whose percentiles 1..99 are the
   inner edges; bounded level counts (Misra-Gries) give each categorical column's top-K;
2. pass two replaces the sample's deciles by the exact ones (see :class:`_Deciles`);
   skipped when the sample held every row, whose percentiles are then exact already;
3. pass three counts the reference exactly into those bins, chunk by chunk, with the
   same :class:`~scoregate.monitoring.counts.Accumulator` that monitors current data.

Rows are re-cut into blocks of 65,536 before anything is summed, so the same rows in the
same order give the same profile bit for bit, whatever the file format or its batches.

Why this and not exact quantiles throughout: they need every value in memory (80 MB a
column at 10M rows). Why not a KLL sketch: the DataSketches binding is randomised with no
seed, so the same data gave a different profile, and digest, on every build; a validator
must be able to rebuild it bit for bit. Since the counts are exact, the sample's rank
error (about 0.14 % at the median, 0.4 % at worst over 99 edges) only makes the fine bins
slightly unequal in mass, which KS and Wasserstein barely notice; PSI's ten bins, where a
decile in a near-empty stretch of the reference makes that error matter, are cut at the
exact deciles. The sample costs 1 MB per numeric column whatever the row count.

The chunk counts (the reference cut into up to 20 consecutive chunks) are what the
calibrated drift mode bootstraps over. A profile holds counts and a few moments, never a
row; it is content-addressed (SHA-256 of its canonical JSON) and bound to one version.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from enum import StrEnum
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scoregate.errors import InvalidInputError
from scoregate.monitoring.counts import Accumulator, Bins, ColumnCounts, Kind, _as_float, _as_text
from scoregate.monitoring.sources import BATCH_ROWS, Column
from scoregate.monitoring.statistics import STATISTICS_VERSION
from scoregate.schema import FeatureType, ModelSchema

PROFILE_FORMAT = "scoregate-profile/1"


class Role(StrEnum):
    INPUT = "input"
    OUTPUT = "output"


class ProfileSettings(BaseModel):
    """How a profile is binned; recorded in it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fine_bins: int = Field(100, ge=10, le=1000)
    coarse_bins: int = Field(10, ge=2, le=100)
    top_k: int = Field(50, ge=1, le=1000)
    sample_rows: int = Field(1 << 17, ge=1000, le=1 << 22)
    seed: int = 0
    chunks: int = Field(20, ge=0, le=200)
    min_chunk_rows: int = Field(1000, ge=1)

    def model_post_init(self, context: Any) -> None:
        if self.fine_bins % self.coarse_bins:
            raise ValueError(f"fine_bins ({self.fine_bins}) must be a multiple of coarse_bins ({self.coarse_bins})")


class ColumnProfile(BaseModel):
    """One column of the reference: its bins, its exact counts, and per-chunk counts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    role: Role
    type: FeatureType
    kind: Kind
    edges: list[float] = Field(default_factory=list)
    coarse_edges: list[float] = Field(default_factory=list)
    exact_deciles: bool = True
    levels: list[str] = Field(default_factory=list)
    rows: int
    nulls: int
    invalid: int = 0
    counts: list[int] = Field(default_factory=list)
    sums: list[float] = Field(default_factory=list)
    mean: float | None = None
    std: float | None = None
    m2: float = 0.0
    minimum: float | None = None
    maximum: float | None = None
    chunks: list[list[int]] = Field(default_factory=list)

    @property
    def bins(self) -> Bins:
        return Bins(self.name, self.kind, tuple(self.edges), tuple(self.levels))

    @property
    def count(self) -> int:
        return sum(self.counts)

    def inconsistency(self) -> str | None:
        """What makes this column's counts unusable, if anything."""
        try:
            size = self.bins.size
        except ValueError as exc:
            return str(exc)
        if len(self.counts) != size or any(c < 0 for c in self.counts):
            return f"{len(self.counts)} counts for {size} bins"
        if self.kind is Kind.NUMERIC and len(self.sums) != size:
            return f"{len(self.sums)} sums for {size} bins"
        if not set(self.coarse_edges) <= set(self.edges):
            return "coarse edges that are not bin edges"
        if any(len(chunk) != size for chunk in self.chunks):
            return "chunk counts of another size"
        if self.chunks and [sum(c) for c in zip(*self.chunks, strict=True)] != self.counts:
            return "chunk counts that do not add up to the counts"
        if self.count + self.nulls + self.invalid != self.rows:
            return f"{self.count} values, {self.nulls} nulls and {self.invalid} invalid for {self.rows} rows"
        return None

    def to_counts(self) -> ColumnCounts:
        column = ColumnCounts.empty(self.bins)
        column.counts = np.asarray(self.counts, dtype=np.int64)
        if self.kind is Kind.NUMERIC:
            column.sums = np.asarray(self.sums, dtype=np.float64)
        column.rows, column.nulls, column.invalid = self.rows, self.nulls, self.invalid
        column.n = self.count if self.kind is Kind.NUMERIC else 0
        column.mean, column.m2 = self.mean or 0.0, self.m2
        column.minimum, column.maximum = self.minimum, self.maximum
        return column

    def coarse_map(self) -> np.ndarray:
        """For each fine bin, the coarse bin that holds it (categorical: the identity)."""
        if self.kind is not Kind.NUMERIC:
            return np.arange(len(self.counts))
        lower = np.concatenate([[-np.inf], self.edges])
        return np.searchsorted(np.asarray(self.coarse_edges), lower, side="right")


class SourceInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str | None = None
    sha256: str | None = None
    rows: int


class Subject(BaseModel):
    """The version a profile describes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    version: int
    artifact_digest: str
    schema_digest: str

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"


class ReferenceProfile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = PROFILE_FORMAT
    statistics: str = STATISTICS_VERSION
    subject: Subject | None = None
    source: SourceInfo
    settings: ProfileSettings
    chunk_rows: int | None = None
    columns: list[ColumnProfile]

    def canonical_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json()).hexdigest()

    @classmethod
    def from_json(cls, data: bytes | str) -> ReferenceProfile:
        try:
            profile = cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidInputError(f"invalid reference profile: {where}: {first['msg']}") from None
        if profile.format != PROFILE_FORMAT:
            raise InvalidInputError(f"unsupported reference profile format {profile.format!r}")
        for column in profile.columns:
            problem = column.inconsistency()
            if problem:
                raise InvalidInputError(f"invalid reference profile: column {column.name!r}: {problem}")
        return profile

    def role(self, role: Role) -> list[ColumnProfile]:
        return [c for c in self.columns if c.role is role]

    def column(self, name: str, role: Role = Role.INPUT) -> ColumnProfile:
        for column in self.columns:
            if column.name == name and column.role is role:
                return column
        raise KeyError(name)

    def columns_to_read(self, role: Role) -> list[Column]:
        return [column_of(c.name, c.type, c.kind) for c in self.role(role)]

    def accumulator(self, role: Role) -> Accumulator:
        """Empty counters over this profile's bins, for current data."""
        return Accumulator(c.bins for c in self.role(role))


# -- what to profile -----------------------------------------------------------------------------------


def kind_of(kind: FeatureType) -> Kind:
    if kind in (FeatureType.FLOAT, FeatureType.INT):
        return Kind.NUMERIC
    if kind in (FeatureType.CATEGORY, FeatureType.BOOL):
        return Kind.CATEGORICAL
    return Kind.UNTRACKED


def output_kind(kind: FeatureType) -> Kind:
    """A float output is a score; any other is a label."""
    return Kind.NUMERIC if kind is FeatureType.FLOAT else Kind.CATEGORICAL


def input_columns(schema: ModelSchema) -> list[tuple[Column, FeatureType]]:
    return [(column_of(f.name, f.type, kind_of(f.type)), f.type) for f in schema.features]


def output_columns(schema: ModelSchema) -> list[tuple[Column, FeatureType]]:
    return [(column_of(o.name, o.type, output_kind(o.type)), o.type) for o in schema.outputs]


def column_of(name: str, kind: FeatureType, binned: Kind) -> Column:
    return Column(name, binned, boolean=kind is FeatureType.BOOL)


# -- building --------------------------------------------------------------------------------------------


class _Sample:
    """A uniform random sample of up to ``size`` rows of the numeric columns (seeded algorithm R).

    Seeded, so the same rows in the same order give the same sample and the same profile
    digest however they are cut into batches.
    """

    def __init__(self, names: list[str], size: int, seed: int) -> None:
        self.names, self.size = names, size
        self.values = np.full((len(names), size), np.nan)  # a row per column: writes stay contiguous
        self.rng = np.random.default_rng(seed)
        self.seen = 0

    def add(self, columns: list[np.ndarray]) -> None:
        n = len(columns[0]) if columns else 0
        fill = max(0, min(n, self.size - self.seen))
        for i, x in enumerate(columns):
            self.values[i, self.seen : self.seen + fill] = x[:fill]
        if n > fill:
            # row t (0-based) replaces slot j ~ U{0..t} when j < size; a later row wins a slot
            rows = np.arange(self.seen + fill, self.seen + n)
            slots = self.rng.integers(0, rows + 1)
            kept = np.flatnonzero(slots < self.size)
            last = len(kept) - 1 - np.unique(slots[kept][::-1], return_index=True)[1]
            kept, targets = kept[last], slots[kept][last]
            for i, x in enumerate(columns):
                self.values[i, targets] = x[fill:][kept]
        self.seen += n

    def column(self, i: int) -> np.ndarray:
        x = self.values[i, : min(self.seen, self.size)]
        return x[np.isfinite(x)]


class _Levels:
    """Counts of a categorical column's levels, bounded (Misra-Gries): the top-K survive."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.counts: dict[str, int] = {}

    def add(self, text: pa.Array) -> None:
        counted = pc.value_counts(text.drop_null())
        counts = self.counts
        for value, count in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True):
            counts[value] = counts.get(value, 0) + count
        if len(counts) > self.capacity:
            cut = sorted(counts.values(), reverse=True)[self.capacity // 2]
            self.counts = {v: c - cut for v, c in counts.items() if c > cut}

    def top(self, k: int) -> tuple[str, ...]:
        ranked = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))[:k]
        return tuple(sorted(value for value, _ in ranked))


class _Bins:
    """Pass 1: the sample, exact ranges and finite counts, and bounded level counts."""

    def __init__(self, columns: Sequence[tuple[Column, FeatureType, Role]], settings: ProfileSettings) -> None:
        self.columns, self.settings = columns, settings
        self.numeric = [c.name for c, _, _ in columns if c.kind is Kind.NUMERIC]
        self.sample = _Sample(self.numeric, settings.sample_rows, settings.seed)
        self.low = dict.fromkeys(self.numeric, np.inf)
        self.high = dict.fromkeys(self.numeric, -np.inf)
        self.finite = dict.fromkeys(self.numeric, 0)
        self.levels = {
            c.name: _Levels(max(1000, 20 * settings.top_k))
            for c, kind, _ in columns
            if c.kind is Kind.CATEGORICAL and kind is not FeatureType.BOOL
        }

    def add(self, batch: pa.RecordBatch, pool: Executor | None) -> None:
        arrays = {name: _as_float(_whole(batch.column(name)), name) for name in self.numeric}

        def ranges(name: str) -> None:
            x = arrays[name]
            finite = x[np.isfinite(x)] if not np.isfinite(x).all() else x
            if len(finite):
                self.low[name] = min(self.low[name], float(finite.min()))
                self.high[name] = max(self.high[name], float(finite.max()))
                self.finite[name] += len(finite)

        _each(ranges, self.numeric, pool)
        self.sample.add(list(arrays.values()))
        for name, levels in self.levels.items():
            levels.add(_as_text(_whole(batch.column(name)), name))

    def cuts(self, name: str) -> tuple[list[float], bool]:
        """The sample's percentiles of a numeric column, and whether they are exact (it held every value)."""
        values = self.sample.column(self.numeric.index(name))
        ranks = np.arange(1, self.settings.fine_bins) / self.settings.fine_bins
        exact = len(values) == self.finite[name]
        return np.quantile(values, ranks, method="inverted_cdf").tolist() if len(values) else [], exact

    def categorical(self, column: Column, kind: FeatureType) -> Bins:
        if kind is FeatureType.BOOL:
            return Bins(column.name, Kind.CATEGORICAL, levels=("false", "true"))
        return Bins(column.name, Kind.CATEGORICAL, levels=self.levels[column.name].top(self.settings.top_k))


class _Deciles:
    """Pass 2: the exact reference deciles of a numeric column the sample did not hold whole.

    Each decile is bracketed by the sample (its percentiles either side, wide enough for
    six standard errors of the sample's rank); the pass counts the values below each
    bracket and histograms those inside on 4,096 cells, keeping each cell's smallest
    value. The decile is then the smallest value of the cell holding its rank: exact to
    within that cell (about 5e-6 of the rows at 1M). Why bother: where a decile falls in
    a near-empty stretch of the reference (between two modes), a rank error of 0.1 %
    moves the sample's decile across the gap and PSI by 0.06; exact deciles do not.
    """

    CELLS = 4096

    def __init__(self, cuts: list[float], low: float, high: float, finite: int, sampled: int, s: ProfileSettings):
        step = s.fine_bins // s.coarse_bins
        width = max(1, math.ceil(6 * math.sqrt(0.25 / max(sampled, 1)) * s.fine_bins))
        bounds = [low, *cuts, high]  # bounds[i] is the sample's i / fine_bins quantile
        self.ranks = [(k * finite + s.coarse_bins - 1) // s.coarse_bins for k in range(1, s.coarse_bins)]
        self.estimates = [cuts[k * step - 1] for k in range(1, s.coarse_bins)]
        self.lows = [bounds[max(0, k * step - width)] for k in range(1, s.coarse_bins)]
        self.highs = [bounds[min(len(bounds) - 1, k * step + width)] for k in range(1, s.coarse_bins)]
        self.below = [0] * len(self.ranks)
        self.counts = [np.zeros(self.CELLS, dtype=np.int64) for _ in self.ranks]
        self.minima = [np.full(self.CELLS, np.inf) for _ in self.ranks]

    def add(self, x: np.ndarray) -> None:
        for k, (low, high) in enumerate(zip(self.lows, self.highs, strict=True)):
            self.below[k] += int(np.count_nonzero(x < low))
            inside = x[(x >= low) & (x <= high)]
            if not len(inside):
                continue
            if high > low:
                cells = ((inside - low) * (self.CELLS / (high - low))).astype(np.intp)
                np.clip(cells, 0, self.CELLS - 1, out=cells)
            else:
                cells = np.zeros(len(inside), dtype=np.intp)
            self.counts[k] += np.bincount(cells, minlength=self.CELLS)
            np.minimum.at(self.minima[k], cells, inside)

    def values(self) -> tuple[list[float], bool]:
        """The deciles, and whether every one was found in its bracket (else the sample's stands)."""
        out, exact = [], True
        for k, rank in enumerate(self.ranks):
            running = self.below[k] + np.cumsum(self.counts[k])
            if self.below[k] < rank <= running[-1]:
                out.append(float(self.minima[k][int(np.searchsorted(running, rank))]))
            else:
                out.append(self.estimates[k])
                exact = False
        return out, exact


def _blocks(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """The same rows in blocks of exactly ``size`` (the last may be shorter).

    Every sum is then taken over the same rows in the same order whatever batches the
    reader gave, so the same data gives the same profile, bit for bit, from Parquet or CSV.
    """
    pending: list[pa.RecordBatch] = []
    have = 0
    for batch in batches:
        while batch.num_rows:
            take = min(size - have, batch.num_rows)
            pending.append(batch.slice(0, take))
            have += take
            batch = batch.slice(take)
            if have == size:
                yield _concat(pending)
                pending, have = [], 0
    if pending:
        yield _concat(pending)


def _concat(pieces: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(pieces) == 1:
        return pieces[0]
    return pa.Table.from_batches(pieces).combine_chunks().to_batches()[0]


def _each(function: Callable[[Any], None], items: Iterable[Any], pool: Executor | None) -> None:
    """``function`` on every item, on the pool's threads when there is one (one column per task)."""
    if pool is None:
        for item in items:
            function(item)
        return
    for _ in pool.map(function, list(items)):
        pass


def _whole(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def build_profile(
    columns: Sequence[tuple[Column, FeatureType, Role]],
    batches: Callable[[], Iterable[pa.RecordBatch]],
    *,
    settings: ProfileSettings | None = None,
    subject: Subject | None = None,
    source: Callable[[int], SourceInfo] | None = None,
    pool: Executor | None = None,
) -> ReferenceProfile:
    """Profile ``columns`` of the rows ``batches()`` yields; it is called once per pass (2 or 3).

    ``source(rows)`` describes where the rows came from, once every pass is done.
    """
    settings = settings or ProfileSettings()
    names = [(c.name, role) for c, _, role in columns]
    if len(set(names)) != len(names):
        raise ValueError("a column is profiled twice")
    picker = _Bins(columns, settings)
    rows = 0
    for batch in _blocks(batches(), BATCH_ROWS):
        rows += batch.num_rows
        picker.add(batch, pool)
    chosen = _choose(columns, picker, batches, settings, pool)
    bins = [b for b, _, _ in chosen]
    chunk_count = min(settings.chunks, rows // settings.min_chunk_rows) if settings.chunks else 0
    chunk_rows = rows // chunk_count if chunk_count >= 2 else None
    parts = [Accumulator(bins) for _ in range(chunk_count if chunk_rows else 1)]
    seen = 0
    for batch in _blocks(batches(), BATCH_ROWS):
        start = 0
        while start < batch.num_rows:
            part = min((seen + start) // chunk_rows, len(parts) - 1) if chunk_rows else 0
            end = batch.num_rows if part == len(parts) - 1 else min(batch.num_rows, (part + 1) * chunk_rows - seen)
            parts[part].update(batch.slice(start, end - start), pool=pool)
            start = end
        seen += batch.num_rows
    if seen != rows:
        raise InvalidInputError(f"the data changed while it was profiled ({rows} rows, then {seen})")
    if rows == 0:
        raise InvalidInputError("the reference data has no rows")
    total = Accumulator(bins)
    for part in parts:
        total.merge(part)
    profiles = []
    for (column, kind, role), (b, coarse, exact) in zip(columns, chosen, strict=True):
        counted = total[column.name]
        profiles.append(
            ColumnProfile(
                name=column.name,
                role=role,
                type=kind,
                kind=column.kind,
                edges=list(b.edges),
                coarse_edges=coarse,
                exact_deciles=exact,
                levels=list(b.levels),
                rows=counted.rows,
                nulls=counted.nulls,
                invalid=counted.invalid,
                counts=counted.counts.tolist(),
                sums=counted.sums.tolist(),
                mean=counted.mean if counted.n else None,
                std=counted.std,
                m2=counted.m2,
                minimum=counted.minimum,
                maximum=counted.maximum,
                chunks=[p[column.name].counts.tolist() for p in parts] if chunk_rows and b.size else [],
            )
        )
    return ReferenceProfile(
        subject=subject,
        source=source(rows) if source is not None else SourceInfo(rows=rows),
        settings=settings,
        chunk_rows=chunk_rows,
        columns=profiles,
    )


def _choose(
    columns: Sequence[tuple[Column, FeatureType, Role]],
    picker: _Bins,
    batches: Callable[[], Iterable[pa.RecordBatch]],
    settings: ProfileSettings,
    pool: Executor | None,
) -> list[tuple[Bins, list[float], bool]]:
    """Every column's bins: (bins, coarse edges, whether the coarse edges are exact deciles)."""
    step = settings.fine_bins // settings.coarse_bins
    cuts = {c.name: picker.cuts(c.name) for c, _, _ in columns if c.kind is Kind.NUMERIC}
    refine = {
        name: _Deciles(found, picker.low[name], picker.high[name], picker.finite[name], picker.sample.size, settings)
        for name, (found, exact) in cuts.items()
        if found and not exact
    }
    if refine:
        for batch in _blocks(batches(), BATCH_ROWS):

            def add(item: tuple[str, _Deciles], batch: pa.RecordBatch = batch) -> None:
                x = _as_float(_whole(batch.column(item[0])), item[0])
                item[1].add(x[np.isfinite(x)])

            _each(add, refine.items(), pool)
    out = []
    for column, kind, _ in columns:
        name = column.name
        if column.kind is Kind.CATEGORICAL:
            out.append((picker.categorical(column, kind), [], True))
            continue
        if column.kind is Kind.UNTRACKED or not cuts[name][0]:
            out.append((Bins(name, column.kind), [], True))
            continue
        found, exact = cuts[name]
        deciles = [found[k * step - 1] for k in range(1, settings.coarse_bins)]
        if name in refine:
            deciles, exact = refine[name].values()
            for k, value in enumerate(deciles, start=1):
                found[k * step - 1] = value
        high = float(np.nextafter(picker.high[name], np.inf))
        edges = tuple(sorted({picker.low[name], *found, high}))
        out.append((Bins(name, Kind.NUMERIC, edges=edges), sorted(set(deciles)), exact))
    return out
