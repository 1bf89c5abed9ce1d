"""Live monitoring in the scoring server: each scored row counted for its version, off the hot path.

The event loop only appends ``(version, rows, outputs)`` to a bounded queue after a
request is scored (and ``(version, violations)`` when one is refused): an O(1) append,
about a microsecond. A monitor thread wakes every ``TICK`` seconds, takes everything
queued, and counts it per version in one vectorised update (columns pulled out of the
rows with ``operator.itemgetter``, then the same Arrow/NumPy binning batch monitoring
uses), so the per-request cost is amortised over every request of the tick and the
scoring thread never waits for it. When a window ends the thread writes it (see
:mod:`scoregate.monitoring.live`) and, whenever the version's folder holds new windows
(this worker's or another's), recomputes the gauges of each comparison span from the
windows every worker wrote, so all workers export the same figures.

A version is monitored once its reference profile is found (asked of the model source
on the monitor thread, again every ``PROFILE_RETRY`` seconds while it has none, so a
profile recorded after the server started is picked up). Monitoring never fails a
request: an error in counting, writing or computing is logged, counted in
``scoregate_monitoring_errors_total{stage}`` and the rows of that tick are dropped; a
queue already holding ``MAX_PENDING_ROWS`` rows drops new requests and counts them
(``scoregate_monitoring_dropped_rows_total``).
"""

from __future__ import annotations

import collections
import itertools
import logging
import operator
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scoregate.monitoring import live
from scoregate.monitoring.counts import Kind
from scoregate.monitoring.profile import ReferenceProfile, Role
from scoregate.monitoring.statistics import Statistic
from scoregate.serving.batcher import Outputs
from scoregate.serving.metrics import Metrics
from scoregate.serving.options import ServeOptions

log = logging.getLogger("scoregate.serving")

#: Seconds between the monitor thread's passes over the queue.
TICK = 0.25
#: Rows the queue holds before new requests are dropped (counted), bounding its memory.
MAX_PENDING_ROWS = 200_000
#: Seconds before a version without a reference profile is asked for one again.
PROFILE_RETRY = 60.0
#: Seconds between looks at a version's folder for windows other workers wrote.
REFRESH = 1.0
#: The comparison spans: label -> seconds (the closed windows that ended within it).
SPANS: dict[str, int] = {"15m": 15 * 60, "24h": 24 * 3600}
#: The statistics exported as gauges (each where it is defined for the column's kind).
EXPORTED = (Statistic.PSI, Statistic.JENSEN_SHANNON, Statistic.KS, Statistic.WASSERSTEIN_NORMED)


class Stage:
    """Where monitoring failed (the ``stage`` label of the errors counter)."""

    PROFILE = "profile"
    COUNT = "count"
    PERSIST = "persist"
    FIGURES = "figures"


@dataclass
class _Tracker:
    """One version's live state on the monitor thread."""

    name: str
    version: int
    profile: ReferenceProfile | None = None
    digest: str = ""
    asked_at: float = -1e18
    window: live.Window | None = None
    exported: list[str] = field(default_factory=list)  # input features with gauges (capped)
    outputs: list[str] = field(default_factory=list)
    listing: frozenset[str] = frozenset()
    boundary: int = -1
    checked_at: float = -1e18
    cache: dict[Path, live.Window] = field(default_factory=dict)
    getter: Callable[[Any], tuple[Any, ...]] | None = None


class LiveMonitor:
    """Counts what a worker scores into live windows and exports their drift as gauges."""

    def __init__(
        self,
        folder: Path,
        metrics: Metrics,
        options: ServeOptions,
        worker: str,
        source: Callable[[], Any],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = Path(folder)
        self.metrics = metrics
        self.length = int(options.monitoring_window)
        self.max_features = options.monitoring_max_features
        self.max_versions = options.monitoring_max_versions
        self.retention = options.monitoring_retention_days * 86400.0
        # a fresh suffix per process: a restarted worker never overwrites its predecessor's window
        self.worker = live.worker_name(f"{worker}_{secrets.token_hex(3)}")
        self._source = source
        self._clock = clock
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        # rows queued minus rows taken, each side written by one thread (a shadow's callback on
        # a scoring thread may rarely lose an increment: the bound is approximate, never unbounded)
        self._queued_rows = 0
        self._taken_rows = 0
        self._trackers: dict[tuple[str, int], _Tracker] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one pass at a time (the thread's, or a test's/shutdown's)
        self._dropped = metrics.monitoring_dropped
        self._errors = {
            s: metrics.child(metrics.monitoring_errors, s)
            for s in (Stage.PROFILE, Stage.COUNT, Stage.PERSIST, Stage.FIGURES)
        }

    # --- on the event loop (keep these O(1)) -------------------------------------------------

    def observe(self, served: Any, records: list[Any], outputs: Outputs) -> None:
        n = len(records)
        if self._queued_rows - self._taken_rows + n > MAX_PENDING_ROWS:
            self._dropped.inc(n)
            return
        self._queued_rows += n
        self._queue.append((served.name, served.version, records, outputs))

    def refused(self, served: Any, problems: list[Any]) -> None:
        if self._queued_rows - self._taken_rows < MAX_PENDING_ROWS:
            self._queued_rows += 1
            self._queue.append((served.name, served.version, problems, None))

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scoregate-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Count what is queued and write every open window (a restart then loses nothing)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if not self._lock.acquire(timeout=timeout):  # a pass stuck on a dead disk: do not hang the shutdown
            log.error("live monitoring: the open windows were not written at shutdown (a pass is stuck)")
            return
        try:
            self._pass(final=True)
        finally:
            self._lock.release()

    def _run(self) -> None:
        while not self._stop.wait(TICK):
            self.run_once()

    def run_once(self, *, final: bool = False) -> None:
        """One pass: count the queue, close ended windows, refresh the gauges."""
        with self._lock:
            self._pass(final=final)

    def _pass(self, *, final: bool) -> None:
        now = self._clock()
        try:
            self._drain(now)
        except Exception:  # pragma: no cover - _drain guards each version itself
            self._fail(Stage.COUNT, "counting")
        for tracker in list(self._trackers.values()):
            self._roll(tracker, now, final)
            if not final:
                self._refresh(tracker, now)

    # --- counting -------------------------------------------------------------------------------

    def _drain(self, now: float) -> None:
        queue = self._queue
        grouped: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
        for _ in range(len(queue)):
            item = queue.popleft()
            self._taken_rows += len(item[2]) if item[3] is not None else 1
            grouped.setdefault((item[0], item[1]), []).append(item)
        for key, items in grouped.items():
            tracker = self._tracker(key, now)
            if tracker is None or tracker.profile is None:
                continue
            try:
                self._count(tracker, items, now)
            except Exception:
                self._fail(Stage.COUNT, f"counting the rows of {key[0]}@{key[1]}")

    def _tracker(self, key: tuple[str, int], now: float) -> _Tracker | None:
        tracker = self._trackers.get(key)
        if tracker is None:
            if len(self._trackers) >= self.max_versions:
                return None  # bounded labels: the first versions seen are monitored
            tracker = self._trackers[key] = _Tracker(*key)
        if tracker.profile is None and now - tracker.asked_at >= PROFILE_RETRY:
            tracker.asked_at = now
            try:
                self._load_profile(tracker)
            except Exception:
                self._fail(Stage.PROFILE, f"reading the reference profile of {key[0]}@{key[1]}")
        return tracker

    def _load_profile(self, tracker: _Tracker) -> None:
        source = self._source()
        read = getattr(source, "reference_profile", None)
        profile = read(tracker.name, tracker.version) if read is not None else None
        if profile is None:
            return
        subject = profile.subject
        if subject is None or (subject.model, subject.version) != (tracker.name, tracker.version):
            raise ValueError(f"the source's reference profile does not describe {tracker.name}@{tracker.version}")
        tracker.profile, tracker.digest = profile, profile.digest()
        inputs = [c.name for c in profile.role(Role.INPUT)]
        tracker.exported = inputs[: self.max_features]
        tracker.outputs = [c.name for c in profile.role(Role.OUTPUT)][: self.max_features]
        tracker.getter = operator.itemgetter(*inputs) if len(inputs) > 1 else None
        log.info("monitoring %s@%s live against profile sha256:%s", tracker.name, tracker.version, tracker.digest[:12])

    def _count(self, tracker: _Tracker, items: list[tuple[Any, ...]], now: float) -> None:
        profile = tracker.profile
        assert profile is not None
        self._roll(tracker, now, False)
        window = tracker.window
        if window is None:
            window = tracker.window = live.Window.empty(
                profile, tracker.digest, live.window_start(now, self.length), self.length, self.worker
            )
        scored = [item for item in items if item[3] is not None]
        refused = [item[2] for item in items if item[3] is None]
        # counted into fresh accumulators and merged only when whole: a failure leaves the window as it was
        inputs = profile.accumulator(Role.INPUT)
        outputs = profile.accumulator(Role.OUTPUT) if window.outputs is not None else None
        if scored:
            records = list(itertools.chain.from_iterable(item[2] for item in scored))
            inputs.update(_columns(list(inputs.columns), records, tracker.getter))
            if outputs is not None:
                outputs.update(_output_columns(list(outputs.columns), [item[3] for item in scored]))
        fields: dict[str, int] = {}
        rows = 0
        for problems in refused:
            seen_rows = set()
            for violation in problems:
                fields[violation.field] = fields.get(violation.field, 0) + 1
                seen_rows.add(violation.row)
            rows += len(seen_rows)
        window.inputs.merge(inputs)
        if outputs is not None and window.outputs is not None:
            window.outputs.merge(outputs)
        known = window.inputs.columns
        for name, n in fields.items():
            if name in known:
                window.refused[name] = window.refused.get(name, 0) + n
        window.refused_rows += rows

    # --- windows --------------------------------------------------------------------------------

    def _roll(self, tracker: _Tracker, now: float, final: bool) -> None:
        window = tracker.window
        if window is None or (not final and now < window.end):
            return
        tracker.window = None
        if not window.rows and not window.refused_rows:
            return
        try:
            live.write_window(self.folder, window, self.worker)
            if self.retention:
                live.prune(self.folder, tracker.name, tracker.version, now - self.retention)
        except Exception:
            self._fail(Stage.PERSIST, f"writing the live window of {tracker.name}@{tracker.version}")

    def _refresh(self, tracker: _Tracker, now: float) -> None:
        """Recompute the gauges when a window ended or a worker wrote a new one."""
        if tracker.profile is None:
            return
        boundary = live.window_start(now, self.length)
        if boundary == tracker.boundary and now - tracker.checked_at < REFRESH:
            return
        tracker.checked_at = now
        try:
            files = live.list_windows(self.folder, tracker.name, tracker.version)
            listing = frozenset(str(f.path) for f in files)
            if listing == tracker.listing and boundary == tracker.boundary:
                return
            tracker.listing, tracker.boundary = listing, boundary
            self._export(tracker, files, boundary)
        except Exception:
            self._fail(Stage.FIGURES, f"computing the live figures of {tracker.name}@{tracker.version}")

    def _export(self, tracker: _Tracker, files: list[live.WindowFile], boundary: int) -> None:
        profile = tracker.profile
        assert profile is not None
        oldest = boundary - max(SPANS.values())
        wanted = {f.path: f for f in files if f.start >= oldest and f.end <= boundary}
        cache = tracker.cache
        for path in [p for p in cache if p not in wanted]:
            del cache[path]
        for path in wanted:
            if path not in cache:
                try:
                    window = live.Window.from_json(path.read_bytes())
                except (OSError, live.InvalidInputError):
                    continue
                if window.profile_digest == tracker.digest and window.matches(profile):
                    cache[path] = window
        m = self.metrics
        labels = (tracker.name, str(tracker.version))
        values: list[tuple[Any, float]] = []  # computed first, set together: a scrape sees few torn spans
        rows: list[tuple[Any, float]] = []
        ordered = sorted(cache.items(), key=lambda item: (wanted[item[0]].start, wanted[item[0]].worker))
        for span, seconds in SPANS.items():
            combined = live.combine(w for path, w in ordered if wanted[path].start >= boundary - seconds)
            rows.append((m.child(m.monitoring_rows, *labels, span), combined.rows if combined else 0))
            result = live.figures(profile, combined, profile_digest=tracker.digest) if combined else None
            columns = {(c.role, c.name): c for c in result.columns} if result else {}
            for role, names, gauge in (
                (Role.INPUT, tracker.exported, m.feature_drift),
                (Role.OUTPUT, tracker.outputs, m.output_drift),
            ):
                for name in names:
                    column = columns.get((role, name))
                    kind = profile.column(name, role).kind
                    for statistic in EXPORTED:
                        if _defined(statistic, kind):
                            figure = column.statistics.get(statistic.value) if column is not None else None
                            values.append((m.child(gauge, *labels, name, statistic.value, span), _gauge(figure)))
            quality = combined.quality(profile) if combined else {}
            for name in tracker.exported:
                shares = quality.get(name) or dict.fromkeys(_kinds(profile, name))
                for kind, share in shares.items():
                    values.append((m.child(m.quality_ratio, *labels, name, kind.value, span), _gauge(share)))
        for child, figure in values + rows:  # the row counts last: a test waiting for them sees the rest
            child.set(figure)

    def _fail(self, stage: str, what: str) -> None:
        self._errors[stage].inc()
        log.exception("live monitoring: %s failed (scoring goes on)", what)

    # --- for tests and the report ------------------------------------------------------------------

    def pending(self) -> int:
        return len(self._queue)


def _defined(statistic: Statistic, kind: Kind) -> bool:
    if kind is Kind.UNTRACKED:
        return False
    return kind is Kind.NUMERIC or statistic not in (Statistic.KS, Statistic.WASSERSTEIN_NORMED)


def _kinds(profile: ReferenceProfile, name: str) -> list[live.Quality]:
    kind = profile.column(name).kind
    extra = {
        Kind.NUMERIC: [live.Quality.OUT_OF_RANGE, live.Quality.INVALID],
        Kind.CATEGORICAL: [live.Quality.UNSEEN_CATEGORY],
    }.get(kind, [])
    return [live.Quality.MISSING, live.Quality.REFUSED, *extra]


def _gauge(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _columns(names: list[str], records: list[Any], getter: Callable[[Any], tuple[Any, ...]] | None) -> dict[str, list]:
    """``{feature: values}`` of validated rows; a nullable feature may be absent from a row."""
    if getter is not None:
        try:
            return dict(zip(names, map(list, zip(*map(getter, records), strict=True)), strict=True))
        except KeyError:
            pass
    return {name: [r.get(name) for r in records] for name in names}


def _output_columns(names: list[str], parts: list[Outputs]) -> dict[str, list]:
    out = {}
    for name in names:
        values: list[Any] = []
        for part in parts:
            values.extend(part.columns[part.names.index(name)])
        out[name] = values
    return out
