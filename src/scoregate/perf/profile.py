"""``scoregate profile``: where the time of one scoring request goes.

The scoring path of the server (JSON bytes in, JSON bytes out) is run on representative
rows from the version's reference data under :mod:`cProfile`. Each step is a named
function here, so the profile splits the time by step and the report names the
rate-limiting one.

A registered version is profiled in a worker process (:mod:`scoregate.isolation`) with
two bounds: ``timeout`` for the whole run and ``call_timeout`` for any one request. A
model that hangs past either is stopped; the worker dumps what its profiler saw so far,
including the request in progress, so the report shows where the time went up to the stop.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from scoregate import isolation
from scoregate.errors import ModelTimeoutError
from scoregate.limits import (
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_MODEL_TIMEOUT_S,
    MAX_PROFILED_REQUESTS,
    MAX_PROFILED_ROWS,
    MAX_ROWS_PER_REQUEST,
    at_least,
    at_most,
    between,
    seconds,
)
from scoregate.perf.flamegraph import label, render_flamegraph
from scoregate.schema import RecordValidator, raise_for

#: step function name -> words used in the report
STEPS: dict[str, str] = {
    "step_request_parsing": "request parsing",
    "step_validation": "validation",
    "step_frame_conversion": "conversion to frame",
    "step_framework_call": "framework call",
    "step_serialization": "serialization",
}


def step_request_parsing(body: bytes) -> list[Any]:
    return orjson.loads(body)["rows"]


def step_validation(validator: RecordValidator, records: list[Any]) -> None:
    problems = []
    for i, record in enumerate(records):
        problems.extend(validator.check(record, i))
    raise_for(problems)


def step_frame_conversion(validator: RecordValidator, records: list[Any]) -> Any:
    return validator.frame(records)


def step_framework_call(scorer: Any, frame: Any) -> Any:
    return scorer.predict(frame)


def step_serialization(predictions: Any) -> bytes:
    names = [str(c) for c in predictions.columns]
    columns = [predictions[c].tolist() for c in predictions.columns]
    rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    return orjson.dumps({"predictions": rows}, option=orjson.OPT_SERIALIZE_NUMPY)


def score_request(scorer: Any, validator: RecordValidator, body: bytes) -> bytes:
    """One request through every step, as the server runs it."""
    records = step_request_parsing(body)
    step_validation(validator, records)
    frame = step_frame_conversion(validator, records)
    predictions = step_framework_call(scorer, frame)
    return step_serialization(predictions)


@dataclass
class FunctionStat:
    function: str
    calls: int
    own_s: float
    cumulative_s: float
    own_share: float
    cumulative_share: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "calls": self.calls,
            "own_s": round(self.own_s, 6),
            "cumulative_s": round(self.cumulative_s, 6),
            "own_share": round(self.own_share, 4),
            "cumulative_share": round(self.cumulative_share, 4),
        }


@dataclass
class ProfileReport:
    model: str
    flavor: str
    requests: int
    rows_per_request: int
    wall_s: float
    total_s: float
    steps: dict[str, float]  # step words -> share of the scoring time
    by_cumulative: list[FunctionStat]
    by_own: list[FunctionStat]
    rate_limiting_step: str
    hottest_function: FunctionStat | None
    prof_path: Path | None = None
    callgraph_path: Path | None = None
    flamegraph_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    #: the sha256 of the registered artifact that was profiled (None for a bare scorer)
    artifact_digest: str | None = None
    #: the requests asked for; ``requests`` is how many were profiled
    requests_planned: int | None = None
    #: why the run was stopped before it finished (a hanging model), None when it finished
    stopped: str | None = None

    @property
    def passed(self) -> bool:
        """The profile is a measurement, not a gate: it passed when every profiled request scored
        (a failure raises, a hang stops the run) and the scoring path's steps were found in it."""
        return self.stopped is None and self.requests > 0 and bool(self.steps) and self.rate_limiting_step != "unknown"

    @property
    def summary_line(self) -> str:
        if self.stopped is not None and not self.steps:
            return f"stopped: {self.stopped}"
        share = self.steps.get(self.rate_limiting_step, 0.0)
        step = self.rate_limiting_step
        if step == "framework call":
            step = f"framework call {self.flavor}"
        line = f"rate-limiting step: {step} {share:.0%} of time"
        if self.hottest_function is not None:
            hot = self.hottest_function
            line += f"; hottest function in it: {hot.function} ({hot.own_share:.0%} own time)"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "scoregate.profile",
            "ref": self.model,
            "model": self.model,
            "artifact_digest": self.artifact_digest,
            "passed": self.passed,
            "flavor": self.flavor,
            "complete": self.stopped is None,
            "stopped": self.stopped,
            "requests": self.requests,
            "requests_planned": self.requests_planned if self.requests_planned is not None else self.requests,
            "rows_per_request": self.rows_per_request,
            "wall_s": round(self.wall_s, 4),
            "profiled_s": round(self.total_s, 4),
            "mean_request_ms": round(1000 * self.wall_s / max(self.requests, 1), 4),
            "steps": {k: round(v, 4) for k, v in self.steps.items()},
            "rate_limiting_step": self.rate_limiting_step,
            "summary": self.summary_line,
            "hottest_function": self.hottest_function.to_dict() if self.hottest_function else None,
            "top_cumulative": [f.to_dict() for f in self.by_cumulative],
            "top_own": [f.to_dict() for f in self.by_own],
            "files": {
                "prof": str(self.prof_path) if self.prof_path else None,
                "callgraph_svg": str(self.callgraph_path) if self.callgraph_path else None,
                "flamegraph_html": str(self.flamegraph_path) if self.flamegraph_path else None,
            },
            "notes": self.notes,
        }

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2)

    def render_text(self, top: int = 15) -> str:
        out = io.StringIO()
        if self.stopped is not None:
            out.write(f"STOPPED: {self.stopped}; the timings include the request in progress at the stop\n\n")
        out.write(
            f"profile of {self.model} ({self.flavor}): {self.requests} requests of {self.rows_per_request} row(s), "
        )
        out.write(f"{1000 * self.wall_s / max(self.requests, 1):.3f} ms per request\n\nsteps:\n")
        for name, share in sorted(self.steps.items(), key=lambda kv: -kv[1]):
            out.write(f"  {share:6.1%}  {name}\n")
        for title, rows, key in (
            ("top functions by cumulative time", self.by_cumulative, "cumulative"),
            ("top functions by own time", self.by_own, "own"),
        ):
            out.write(f"\n{title}:\n  {'share':>6}  {'seconds':>9}  {'calls':>8}  function\n")
            for f in rows[:top]:
                share = f.cumulative_share if key == "cumulative" else f.own_share
                seconds = f.cumulative_s if key == "cumulative" else f.own_s
                out.write(f"  {share:6.1%}  {seconds:9.4f}  {f.calls:8d}  {f.function}\n")
        out.write(f"\n{self.summary_line}\n")
        return out.getvalue()


def _descendants(stats: dict, root: tuple) -> set[tuple]:
    callees: dict[tuple, set[tuple]] = {}
    for func, (_cc, _nc, _tt, _ct, callers) in stats.items():
        for caller in callers:
            callees.setdefault(caller, set()).add(func)
    seen: set[tuple] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        for child in callees.get(node, ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def analyse(
    stats: pstats.Stats, model: str, flavor: str, requests: int, rows: int, wall_s: float, top: int = 25
) -> ProfileReport:
    raw: dict = stats.stats  # type: ignore[attr-defined]
    root = next((f for f in raw if f[2] == "score_request"), None)
    total = raw[root][3] if root is not None else sum(v[2] for v in raw.values())
    total = total or 1e-12
    here = Path(__file__).resolve()
    in_scope = _descendants(raw, root) | {root} if root is not None else set(raw)
    items = []
    for func, (_cc, nc, tt, ct, _callers) in raw.items():
        if func not in in_scope:
            continue
        items.append(FunctionStat(label(func), nc, tt, ct, tt / total, min(ct / total, 1.0)))
    by_cum = sorted(items, key=lambda f: f.cumulative_s, reverse=True)[:top]
    by_own = sorted(items, key=lambda f: f.own_s, reverse=True)[:top]
    steps: dict[str, float] = {}
    step_funcs: dict[str, tuple] = {}
    for func, values in raw.items():
        if func[2] in STEPS and Path(func[0]).resolve() == here:
            steps[STEPS[func[2]]] = values[3] / total
            step_funcs[STEPS[func[2]]] = func
    rate_limiting = max(steps, key=lambda k: steps[k]) if steps else "unknown"
    hottest = None
    if rate_limiting in step_funcs:
        inside = _descendants(raw, step_funcs[rate_limiting])
        candidates = [(raw[f][2], f) for f in inside]
        if candidates:
            tt, func = max(candidates)
            hottest = FunctionStat(label(func), raw[func][1], tt, raw[func][3], tt / total, raw[func][3] / total)
    return ProfileReport(model, flavor, requests, rows, wall_s, total, steps, by_cum, by_own, rate_limiting, hottest)


def request_bodies(rows: list[dict[str, Any]], requests: int, rows_per_request: int) -> list[bytes]:
    """``requests`` JSON bodies of ``rows_per_request`` rows, cycled from ``rows``."""
    if not rows:
        raise ValueError("profiling needs at least one row")
    bodies = []
    for i in range(requests):
        batch = [rows[(i * rows_per_request + j) % len(rows)] for j in range(rows_per_request)]
        bodies.append(orjson.dumps({"rows": batch}))
    return bodies


@dataclass
class _Run:
    """Where a profiling run is: what a stop reads to dump the partial profile."""

    profiler: cProfile.Profile | None = None
    started: float = 0.0
    completed: int = 0
    warming_up: bool = True
    wall_s: float = 0.0


def _profile_requests(
    scorer: Any, validator: RecordValidator, bodies: list[bytes], run: _Run, tick: Callable[[], None]
) -> None:
    """The warm-up request, then every body under cProfile. The warm-up (lazy imports and
    caches stay out of the profile) has a profiler of its own, kept only if it hangs."""
    run.profiler, run.started = cProfile.Profile(), time.perf_counter()
    run.profiler.enable()
    score_request(scorer, validator, bodies[0])
    run.profiler.disable()
    tick()
    profiler = cProfile.Profile()
    run.warming_up = False
    run.profiler, run.started = profiler, time.perf_counter()
    profiler.enable()
    for body in bodies:
        score_request(scorer, validator, body)
        run.completed += 1  # an attribute store, not a call: nothing for the profiler to record
        tick()
    profiler.disable()
    run.wall_s = time.perf_counter() - run.started


def profile_scoring(
    scorer: Any,
    schema: Any,
    rows: list[dict[str, Any]],
    *,
    model: str = "model",
    flavor: str = "?",
    requests: int = 200,
    rows_per_request: int = 1,
    out_dir: Path | None = None,
    graph: bool = True,
    artifact_digest: str | None = None,
    notes: list[str] | None = None,
) -> ProfileReport:
    """Profile ``requests`` requests of ``rows_per_request`` rows cycled from ``rows``, in this
    process and without a bound (a scorer object at hand; registered versions go through
    :func:`profile_version`, which bounds the run)."""
    _check_sizes(requests, rows_per_request)
    bodies = request_bodies(rows, requests, rows_per_request)
    run = _Run()
    _profile_requests(scorer, RecordValidator(schema), bodies, run, lambda: None)
    assert run.profiler is not None
    stats = pstats.Stats(run.profiler)
    report = analyse(stats, model, flavor, requests, rows_per_request, run.wall_s)
    report.artifact_digest = artifact_digest
    report.notes.extend(notes or [])
    if out_dir is not None:
        write_outputs(report, stats, Path(out_dir), graph=graph)
    return report


def _check_sizes(requests: int, rows_per_request: int) -> None:
    between("requests", requests, 1, MAX_PROFILED_REQUESTS)
    between("rows per request", rows_per_request, 1, MAX_ROWS_PER_REQUEST)
    at_most("requests x rows per request", requests * rows_per_request, MAX_PROFILED_ROWS)


def _profile_job(payload: dict[str, Any], progress: isolation.Progress) -> dict[str, Any]:
    """In the worker: load the artifact, tick, profile (a tick per request), dump the stats.

    On a stop the profiler in use (the warm-up's or the main one) is dumped as it is: cProfile
    counts the calls still in progress, so the hanging call shows with its time so far."""
    from scoregate.flavors import get_flavor

    scorer = get_flavor(payload["flavor"]).load(Path(payload["artifact"]))
    progress.tick()
    run = _Run()
    stats_path = payload["stats_path"]

    def stop() -> dict[str, Any]:
        profiler = run.profiler
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(stats_path)
        wall = time.perf_counter() - run.started if run.started else 0.0
        return {"completed": run.completed, "warming_up": run.warming_up, "wall_s": wall}

    progress.on_stop(stop)
    _profile_requests(scorer, RecordValidator(payload["schema"]), payload["bodies"], run, progress.tick)
    progress.on_stop(None)
    assert run.profiler is not None
    run.profiler.dump_stats(stats_path)
    return {"completed": run.completed, "warming_up": False, "wall_s": run.wall_s}


#: Ticks of a profiling job before its first profiled request: loaded, warmed up.
_TICKS_BEFORE_REQUESTS = 2


def write_outputs(report: ProfileReport, stats: pstats.Stats | None, folder: Path, *, graph: bool = True) -> None:
    """profile.json and profile.txt; with call statistics, also profile.prof, the flame graph
    and the SVG call graph."""
    folder.mkdir(parents=True, exist_ok=True)
    if stats is not None:
        _write_graphs(report, stats, folder, graph=graph)
    (folder / "profile.txt").write_text(report.render_text())
    (folder / "profile.json").write_bytes(report.to_json_bytes())


def _write_graphs(report: ProfileReport, stats: pstats.Stats, folder: Path, *, graph: bool) -> None:
    prof = folder / "profile.prof"
    stats.dump_stats(str(prof))
    report.prof_path = prof

    flame = folder / "flamegraph.html"
    flame.write_text(render_flamegraph(stats, title=f"{report.model}: {report.summary_line}"))
    report.flamegraph_path = flame
    if graph:
        svg = folder / "callgraph.svg"
        problem = call_graph_svg(prof, svg)
        if problem is None:
            report.callgraph_path = svg
        else:
            report.notes.append(f"no SVG call graph: {problem}; see flamegraph.html")


def call_graph_svg(prof: Path, svg: Path) -> str | None:
    """Render the call graph with gprof2dot and graphviz ``dot``; the reason when not possible."""
    dot = shutil.which("dot")
    if dot is None:
        return "graphviz 'dot' is not installed"
    try:
        import gprof2dot  # noqa: F401
    except ImportError:
        return "gprof2dot is not installed"
    made = subprocess.run(
        [sys.executable, "-m", "gprof2dot", "-f", "pstats", "-n", "0.5", "-e", "0.1", str(prof)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    if made.returncode != 0:
        return f"gprof2dot failed: {made.stderr.decode(errors='replace')[-300:]}"
    drawn = subprocess.run(
        [dot, "-Tsvg", "-o", str(svg)], input=made.stdout, capture_output=True, timeout=120, check=False
    )
    if drawn.returncode != 0:
        return f"dot failed: {drawn.stderr.decode(errors='replace')[-300:]}"
    return None


def profile_version(
    registry: Any,
    ref: str,
    *,
    requests: int = 200,
    rows_per_request: int = 1,
    sample_rows: int = 200,
    seed: int = 0,
    out_dir: Path | None = None,
    graph: bool = True,
    timeout: float = DEFAULT_MODEL_TIMEOUT_S,
    call_timeout: float = DEFAULT_CALL_TIMEOUT_S,
) -> ProfileReport:
    """Profile the scoring path of a registered version on rows from its reference data.

    The run takes at most ``timeout`` seconds (loading the model included) and one request
    at most ``call_timeout``; a model past either is stopped and the report, with what ran,
    says so in ``stopped`` (``passed`` is then false)."""
    import numpy as np

    from scoregate.errors import ScoregateError
    from scoregate.validation.cases import frame_to_rows, synthetic_row

    _check_sizes(requests, rows_per_request)
    at_least("sample rows", sample_rows, 1)
    seconds("timeout", timeout)
    seconds("call timeout", call_timeout)
    version = registry.resolve(ref)
    artifact = registry.artifacts.materialize(version.artifact_digest, version.artifact_kind, version.artifact_name)
    schema = version.input_schema
    try:
        frame = registry.reference_data(version.ref)
        rows = frame_to_rows(schema, frame)
    except ScoregateError:
        rows = []
    validator = RecordValidator(schema)
    rows = [r for r in rows if not validator.check(r)]
    notes = []
    if not rows:
        rows = [synthetic_row(schema)]
        notes.append("no reference data: profiled a synthetic row built from the schema")
    rng = np.random.default_rng(seed)
    if len(rows) > sample_rows:
        rows = [rows[i] for i in sorted(rng.choice(len(rows), size=sample_rows, replace=False).tolist())]
    bodies = request_bodies(rows, requests, rows_per_request)
    with tempfile.TemporaryDirectory(prefix="scoregate-profile-") as tmp:
        stats_path = Path(tmp) / "profile.prof"
        payload = {
            "flavor": version.flavor,
            "artifact": str(artifact),
            "schema": schema,
            "bodies": bodies,
            "stats_path": str(stats_path),
        }
        stopped = None
        try:
            done = isolation.call(
                "scoregate.perf.profile:_profile_job",
                payload,
                timeout=timeout,
                stall=min(call_timeout, timeout),
                what=version.ref,
            )
        except ModelTimeoutError as exc:
            done = exc.partial or {"completed": max(exc.ticks - _TICKS_BEFORE_REQUESTS, 0), "wall_s": 0.0}
            stopped = _stop_reason(version.ref, exc, int(done["completed"]), requests)
            if exc.partial is None:
                notes.append("no call statistics: the model did not let its process dump them, so it was killed")
            elif done.get("warming_up"):
                notes.append("the model hung in the warm-up request: the profile shows that request")
        stats = _read_stats(stats_path)
    completed, wall = int(done["completed"]), float(done["wall_s"])
    if stats is not None:
        report = analyse(stats, version.ref, version.flavor, completed, rows_per_request, wall)
    else:
        report = ProfileReport(
            version.ref, version.flavor, completed, rows_per_request, wall, 0.0, {}, [], [], "unknown", None
        )
    report.artifact_digest = version.artifact_digest
    report.requests_planned = requests
    report.stopped = stopped
    report.notes.extend(notes)
    if out_dir is not None:
        write_outputs(report, stats, Path(out_dir), graph=graph)
    return report


def _read_stats(path: Path) -> pstats.Stats | None:
    """The worker's dump; None when there is none or a kill cut it short."""
    try:
        return pstats.Stats(str(path)) if path.is_file() and path.stat().st_size else None
    except Exception:  # a truncated marshal stream: EOFError, ValueError, TypeError
        return None


def _stop_reason(ref: str, exc: ModelTimeoutError, completed: int, planned: int) -> str:
    doing = "load" if exc.ticks == 0 else "answer"
    return f"{ref} did not {doing} within {exc.seconds:g} s; profiled {completed} of {planned} requests"
