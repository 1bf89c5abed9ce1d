"""``scoregate loadtest``: Locust (headless, as a library, in a subprocess) against a scoring endpoint.

Rows are drawn from the version's reference data, one request body per row batch.
The run is summarised overall and per interval (requests, failures, throughput,
p50/p90/p95/p99/max); p95 and p99 are compared with the version's latency budget.
A sample of the responses is checked against reference scores computed, after the run,
from the registered artifact in the model worker (:mod:`scoregate.isolation`).

Every part has a bound, so a hanging model cannot hang the command: each request has a
timeout (by default ten times the budget, from 1 s to 30 s; a request that times out is a
failure and counts in the percentiles at the time it waited); the requests still unanswered
when the run ends are failures too, once they have waited longer than the budget; the load
generator is killed with its process group if it overruns; and the local server of a model
reference (``serve``) must become ready within ``timeout`` seconds, or the report says so
and nothing is sent.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson

from scoregate import isolation, limits
from scoregate.errors import InvalidInputError, ModelTimeoutError, ScoregateError
from scoregate.limits import (
    DEFAULT_MODEL_TIMEOUT_S,
    MAX_DURATION_S,
    MAX_ROWS_PER_REQUEST,
    MAX_RPS,
    MAX_USERS,
    between,
)
from scoregate.refs import ModelRef

PERCENTILES = (50, 90, 95, 99)
#: How a request that did not get an answer is recorded (the ``error`` column starts with it).
TIMED_OUT = "timeout"
UNANSWERED = "unanswered"
#: Seconds the load generator may take beyond the run to start and to write its result.
GENERATOR_GRACE_S = 60.0


def request_timeout_for(budget_ms: float) -> float:
    """The default per-request timeout: ten times the budget, from 1 s to 30 s, never under
    twice the budget (a request that waited that long is over budget anyway)."""
    return max(min(max(10 * budget_ms / 1000.0, 1.0), 30.0), 2 * budget_ms / 1000.0)


def parse_duration(text: str | float) -> float:
    """``"10m"``, ``"90s"``, ``"1h30m"``, ``"3"`` (seconds) -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    value = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise InvalidInputError(f"invalid duration {text!r}: use e.g. 30s, 10m, 1h30m or a number of seconds")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


@dataclass
class Window:
    start_s: float
    requests: int
    failures: int
    throughput: float
    percentiles: dict[str, float]
    max_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_s": round(self.start_s, 3),
            "requests": self.requests,
            "failures": self.failures,
            "throughput_rps": round(self.throughput, 3),
            **{k: round(v, 3) for k, v in self.percentiles.items()},
            "max_ms": round(self.max_ms, 3),
        }


def summarise(
    latencies: np.ndarray, ok: np.ndarray, seconds: float, start: float = 0.0, waited: np.ndarray | None = None
) -> Window:
    """One window. The percentiles are over the answered requests and those that got no answer
    (``waited``: timed out or cut off by the end of the run, at the time they waited), not over
    quick refusals: a model that stops answering must not look fast."""
    measured = ok | waited if waited is not None else ok
    good = latencies[measured] if measured.any() else latencies
    if len(good):
        pcts = {f"p{p}_ms": float(np.percentile(good, p)) for p in PERCENTILES}
        worst = float(good.max())
    else:
        pcts = {f"p{p}_ms": math.nan for p in PERCENTILES}
        worst = math.nan
    return Window(
        start, len(latencies), int((~ok).sum()), len(latencies) / seconds if seconds > 0 else 0.0, pcts, worst
    )


@dataclass
class LoadTestReport:
    model: str
    url: str
    users: int
    target_rps: float
    duration_s: float
    elapsed_s: float
    budget_ms: float
    overall: Window
    intervals: list[Window]
    interval_s: float
    checked_responses: int
    mismatched_responses: int
    mismatch_examples: list[dict[str, Any]]
    failure_examples: list[str]
    max_failure_ratio: float
    requests: list[list[Any]] = field(default_factory=list, repr=False)
    started_at: str = ""
    folder: Path | None = None
    #: the sha256 of the registered artifact the run was checked against
    artifact_digest: str | None = None
    #: the version's recorded latency budget (``budget_ms`` may be a ``--budget-ms`` override)
    version_budget_ms: float | None = None
    #: seconds a request waited for its answer before it counted as failed
    request_timeout_s: float | None = None
    timed_out: int = 0
    unanswered: int = 0
    #: why nothing (or not everything) could be measured: the server never became ready, or
    #: the reference scores could not be computed in time
    stopped: str | None = None
    #: the sampled response bodies, by request index (checked against the reference after the run)
    _samples: dict[str, Any] = field(default_factory=dict, repr=False)

    def _over(self, budget: float) -> list[str]:
        out = []
        for key in ("p95_ms", "p99_ms"):
            value = self.overall.percentiles.get(key, math.nan)
            if not math.isfinite(value) or value > budget:
                out.append(f"{key[:-3]} {value:.1f} ms > budget {budget:g} ms")
        return out

    @property
    def exceeded(self) -> list[str]:
        return self._over(self.budget_ms)

    @property
    def within_budget(self) -> bool:
        """p95 and p99 within the version's own latency budget (what the policy gates read):
        a looser ``--budget-ms`` can make a run pass but not make it evidence of meeting the budget."""
        budget = self.version_budget_ms if self.version_budget_ms is not None else self.budget_ms
        return self.overall.requests > 0 and not self._over(budget)

    @property
    def failure_ratio(self) -> float:
        return self.overall.failures / self.overall.requests if self.overall.requests else 1.0

    @property
    def problems(self) -> list[str]:
        out = [self.stopped] if self.stopped else []
        out += self.exceeded
        if self.overall.requests == 0:
            out.append("no requests completed")
        elif self.failure_ratio > self.max_failure_ratio:
            out.append(f"{self.overall.failures} of {self.overall.requests} requests failed ({self.failure_ratio:.1%})")
        if self.mismatched_responses:
            out.append(
                f"{self.mismatched_responses} of {self.checked_responses} checked responses differ from the reference"
            )
        return out

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "scoregate.loadtest",
            "ref": self.model,
            "model": self.model,
            "artifact_digest": self.artifact_digest,
            "url": self.url,
            "started_at": self.started_at,
            "users": self.users,
            "target_rps": self.target_rps,
            "duration_s": self.duration_s,
            "elapsed_s": round(self.elapsed_s, 3),
            "latency_budget_ms": self.budget_ms,
            "budget_ms": self.version_budget_ms if self.version_budget_ms is not None else self.budget_ms,
            "within_budget": self.within_budget,
            "passed": self.passed,
            "problems": self.problems,
            "stopped": self.stopped,
            "request_timeout_s": self.request_timeout_s,
            "timed_out": self.timed_out,
            "unanswered": self.unanswered,
            "overall": self.overall.to_dict(),
            "interval_s": self.interval_s,
            "intervals": [w.to_dict() for w in self.intervals],
            "correctness": {
                "checked_responses": self.checked_responses,
                "mismatched_responses": self.mismatched_responses,
                "examples": self.mismatch_examples[:5],
            },
            "failure_examples": self.failure_examples[:5],
        }

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)

    def render_text(self) -> str:
        o = self.overall
        lines = [
            f"load test of {self.model} at {self.url}: {self.users} user(s), target {self.target_rps:g} rps, "
            f"{self.elapsed_s:.1f} s",
            f"requests {o.requests}, failures {o.failures} ({self.timed_out} timed out after "
            f"{self.request_timeout_s or 0:g} s, {self.unanswered} unanswered at the end), "
            f"throughput {o.throughput:.2f} rps",
            "latency: "
            + ", ".join(f"{k[:-3]} {v:.1f} ms" for k, v in o.percentiles.items())
            + f", max {o.max_ms:.1f} ms",
            f"budget {self.budget_ms:g} ms: "
            + ("within" if not self.exceeded else "EXCEEDED (" + "; ".join(self.exceeded) + ")"),
            f"correctness: {self.checked_responses - self.mismatched_responses}/{self.checked_responses} "
            "sampled responses match",
            "PASSED" if self.passed else "FAILED: " + "; ".join(self.problems),
        ]
        return "\n".join(lines)

    def write(self, folder: Path) -> Path:
        from scoregate.perf.loadtest_html import render_loadtest_html

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "requests.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["offset_s", "latency_ms", "ok", "status", "body", "error"])
            writer.writerows(self.requests)
        with (folder / "intervals.csv").open("w", newline="") as handle:
            rows = [w.to_dict() for w in self.intervals] + [{**self.overall.to_dict(), "start_s": "overall"}]
            # an empty run (the server never became ready) still has the header
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (folder / "report.json").write_bytes(self.to_json_bytes())
        (folder / "report.html").write_text(render_loadtest_html(self))
        self.folder = folder
        return folder


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def ref_from_url(url: str) -> str | None:
    match = re.search(r"/models/([^/]+)/predict/?$", urlsplit(url).path)
    return match.group(1) if match else None


def run_loadtest(
    registry: Any,
    target: str,
    *,
    model: str | None = None,
    rps: float = 10.0,
    duration: float | str = 60.0,
    users: int = 10,
    rows_per_request: int = 1,
    budget_ms: float | None = None,
    interval_s: float | None = None,
    sample_every: int = 10,
    max_failure_ratio: float = 0.01,
    atol: float = 1e-6,
    seed: int = 0,
    request_timeout: float | None = None,
    timeout: float = DEFAULT_MODEL_TIMEOUT_S,
    out_dir: Path | None = None,
    serve: Callable[[Any, str], AbstractContextManager[str]] | None = None,
) -> LoadTestReport:
    """Load-test ``target``: a URL (``http://host:port/models/name@3/predict``, or a base URL with
    ``model``) or a model reference, which ``serve(registry, ref)`` (a context manager giving a
    base URL, e.g. ``scoregate.serving.local_server``) serves for the duration.

    ``request_timeout``: seconds one request may wait (default from the budget, see
    :func:`request_timeout_for`). ``timeout``: seconds the reference scores may take; a
    ``serve`` that raises :class:`ModelTimeoutError` (its model did not become ready in time)
    gives a report of zero requests that says so."""
    seconds = between("duration", parse_duration(duration), 1, MAX_DURATION_S, "seconds")
    between("rps", rps, 0.001, MAX_RPS)
    between("users", users, 1, MAX_USERS)
    between("rows per request", rows_per_request, 1, MAX_ROWS_PER_REQUEST)
    between("sample every", sample_every, 1, 10**9)
    between("max failure ratio", max_failure_ratio, 0.0, 1.0)
    limits.seconds("timeout", timeout)
    if interval_s is not None:
        limits.seconds("interval", interval_s)
    if request_timeout is not None:
        limits.seconds("request timeout", request_timeout)
    is_url = target.startswith(("http://", "https://"))
    ref = model or (ref_from_url(target) if is_url else target)
    if ref is None:
        raise InvalidInputError(f"cannot tell the model from {target!r}: give --model NAME@VERSION")
    ModelRef.parse(ref)
    version = registry.resolve(ref)
    budget = limits.milliseconds(
        "latency budget", float(budget_ms if budget_ms is not None else version.latency_budget_ms)
    )
    waiting = request_timeout if request_timeout is not None else request_timeout_for(budget)
    bodies, batches = _bodies(registry, version, rows_per_request, seed)
    settings = _Settings(
        ref=version.ref,
        bodies=bodies,
        rps=rps,
        seconds=seconds,
        users=users,
        budget=budget,
        interval_s=interval_s,
        sample_every=sample_every,
        max_failure_ratio=max_failure_ratio,
        request_timeout=waiting,
        artifact_digest=version.artifact_digest,
        version_budget_ms=float(version.latency_budget_ms),
    )
    if is_url:
        report = _run(target if ref_from_url(target) else f"{target.rstrip('/')}/models/{ref}/predict", settings)
    elif serve is None:
        raise InvalidInputError(f"{target!r} is not a URL: give a server to load-test a model reference")
    else:
        with contextlib.ExitStack() as stack:
            try:
                base = stack.enter_context(serve(registry, version.ref))
            except ModelTimeoutError as exc:
                report = _not_run(f"http://127.0.0.1/models/{version.ref}/predict", settings, exc.message)
            else:
                report = _run(f"{base}/models/{version.ref}/predict", settings)
    _check_answers(report, registry, version, batches, atol, timeout)
    if out_dir is not None:
        report.write(Path(out_dir))
    return report


@dataclass(frozen=True)
class _Settings:
    """One load test's parameters, as :func:`run_loadtest` checked them."""

    ref: str
    bodies: list[str]
    rps: float
    seconds: float
    users: int
    budget: float
    interval_s: float | None
    sample_every: int
    max_failure_ratio: float
    request_timeout: float
    artifact_digest: str | None
    version_budget_ms: float


def _bodies(registry: Any, version: Any, rows_per_request: int, seed: int) -> tuple[list[str], list[list[dict]]]:
    from scoregate.schema import RecordValidator
    from scoregate.validation.cases import frame_to_rows, synthetic_row

    schema = version.input_schema
    try:
        rows = frame_to_rows(schema, registry.reference_data(version.ref))
    except ScoregateError:
        rows = []
    validator = RecordValidator(schema)
    rows = [r for r in rows if not validator.check(r)] or [synthetic_row(schema)]
    rng = np.random.default_rng(seed)
    count = min(200, max(1, len(rows) // rows_per_request))
    batches = []
    for _ in range(count):
        picks = rng.integers(len(rows), size=rows_per_request)
        batches.append([rows[int(i)] for i in picks])
    return [orjson.dumps({"rows": b}).decode() for b in batches], batches


def _generate(url: str, run: _Settings) -> dict[str, Any]:
    """Run the load generator and read its result; kill it with its process group if it overruns."""
    parts = urlsplit(url)
    with tempfile.TemporaryDirectory(prefix="scoregate-loadtest-") as tmp:
        config_path = Path(tmp) / "config.json"
        result_path = Path(tmp) / "result.json"
        config = {
            "host": f"{parts.scheme}://{parts.netloc}",
            "path": parts.path + (f"?{parts.query}" if parts.query else ""),
            "bodies": run.bodies,
            "rps": run.rps,
            "users": run.users,
            "duration_s": run.seconds,
            "sample_every": run.sample_every,
            "timeout": run.request_timeout,
            "budget_s": run.budget / 1000.0,
            "result": str(result_path),
        }
        config_path.write_text(json.dumps(config))
        limit = run.seconds + run.request_timeout + GENERATOR_GRACE_S
        proc = subprocess.Popen(
            [sys.executable, "-m", "scoregate.perf._locust_worker", str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=isolation.child_environment(),
            start_new_session=True,
        )
        try:
            _, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise ScoregateError(f"the load generator did not finish within {limit:g} s; it was killed") from None
        if proc.returncode != 0 or not result_path.exists():
            tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
            raise ScoregateError(f"the load generator failed (exit {proc.returncode}): {' | '.join(tail)}")
        return json.loads(result_path.read_text())


def _run(url: str, run: _Settings) -> LoadTestReport:
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result = _generate(url, run)
    records = result["records"]
    elapsed = float(result["elapsed_s"])
    offsets = np.array([r[0] for r in records], dtype=float)
    latencies = np.array([r[1] for r in records], dtype=float)
    ok = np.array([bool(r[2]) for r in records], dtype=bool)
    timed_out = np.array([str(r[5]).startswith(TIMED_OUT) for r in records], dtype=bool)
    unanswered = np.array([str(r[5]).startswith(UNANSWERED) for r in records], dtype=bool)
    waited = timed_out | unanswered
    overall = summarise(latencies, ok, elapsed, waited=waited)
    step = run.interval_s or max(1.0, round(run.seconds / 30.0))
    windows = []
    count = max(math.ceil(run.seconds / step - 1e-9), 1)
    # requests start before the stop time; one started in the last instant stays in the last window
    bucket = np.minimum(np.floor(offsets / step), count - 1).astype(int) if len(offsets) else offsets.astype(int)
    for k in range(count):
        mask = bucket == k
        windows.append(summarise(latencies[mask], ok[mask], step, k * step, waited=waited[mask]))
    report = _report(url, run, overall, windows, step, elapsed, started_at)
    report.requests = records
    report.timed_out, report.unanswered = int(timed_out.sum()), int(unanswered.sum())
    report.failure_examples = [f"HTTP {r[3]}: {r[5]}" for r in records if not r[2]][:5]
    report._samples = result["samples"]
    return report


def _not_run(url: str, run: _Settings, why: str) -> LoadTestReport:
    """The report of a run that could not start: no request was sent."""
    empty = np.array([], dtype=float)
    overall = summarise(empty, empty.astype(bool), 0.0)
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report = _report(url, run, overall, [], run.interval_s or 1.0, 0.0, started_at)
    report.stopped = why
    return report


def _report(
    url: str, run: _Settings, overall: Window, windows: list[Window], step: float, elapsed: float, started_at: str
) -> LoadTestReport:
    return LoadTestReport(
        model=run.ref,
        url=url,
        users=run.users,
        target_rps=run.rps,
        duration_s=run.seconds,
        elapsed_s=elapsed,
        budget_ms=run.budget,
        overall=overall,
        intervals=windows,
        interval_s=step,
        checked_responses=0,
        mismatched_responses=0,
        mismatch_examples=[],
        failure_examples=[],
        max_failure_ratio=run.max_failure_ratio,
        started_at=started_at,
        artifact_digest=run.artifact_digest,
        version_budget_ms=run.version_budget_ms,
        request_timeout_s=run.request_timeout,
    )


def _check_answers(
    report: LoadTestReport, registry: Any, version: Any, batches: list[list[dict]], atol: float, timeout: float
) -> None:
    """Score the sampled bodies with the registered artifact, in the model worker, and compare."""
    samples = report._samples
    needed = sorted({int(report.requests[int(key)][4]) for key in samples})
    if not needed:
        return
    artifact = registry.artifacts.materialize(version.artifact_digest, version.artifact_kind, version.artifact_name)
    payload = {
        "flavor": version.flavor,
        "artifact": str(artifact),
        "schema": version.input_schema,
        "batches": {i: batches[i] for i in needed},
    }
    try:
        reference = isolation.call(
            "scoregate.perf.loadtest:_reference_job",
            payload,
            timeout=timeout,
            what=f"the reference scorer of {version.ref}",
        )
    except ModelTimeoutError as exc:
        report.stopped = f"no reference scores to check the answers against: {exc.message}"
        return
    report.checked_responses, report.mismatched_responses, report.mismatch_examples = _check_samples(
        samples, report.requests, reference, atol
    )


def _reference_job(payload: dict[str, Any], progress: isolation.Progress) -> dict[int, list[dict[str, Any]]]:
    """In the worker: the registered artifact's answers for the sampled bodies."""
    from scoregate.flavors import get_flavor
    from scoregate.schema import prepare_records

    scorer = get_flavor(payload["flavor"]).load(Path(payload["artifact"]))
    progress.tick()
    answers = {}
    for index, batch in payload["batches"].items():
        answers[index] = scorer.predict(prepare_records(payload["schema"], batch)).to_dict(orient="records")
        progress.tick()
    return answers


def _check_samples(
    samples: dict[str, Any], records: list[list[Any]], reference: list[Any], atol: float
) -> tuple[int, int, list[dict[str, Any]]]:
    from scoregate.validation.reference import compare

    checked = mismatched = 0
    examples: list[dict[str, Any]] = []
    for key, payload in samples.items():
        body_index = records[int(key)][4]
        expected = reference[body_index]
        checked += 1
        got = payload.get("predictions") if isinstance(payload, dict) else None
        problem = None
        if not isinstance(got, list) or len(got) != len(expected):
            problem = f"malformed answer: {str(payload)[:200]}"
        else:
            for row, (g, e) in enumerate(zip(got, expected, strict=True)):
                for name, value in e.items():
                    size = compare(g.get(name) if isinstance(g, dict) else None, value, atol, atol)
                    if size is not None:
                        problem = f"row {row} output {name!r}: got {g.get(name)!r}, reference {value!r}"
                        break
                if problem:
                    break
        if problem:
            mismatched += 1
            examples.append({"request": int(key), "body": body_index, "problem": problem})
    return checked, mismatched, examples
