"""``scoregate loadtest``: Locust (headless, as a library, in a subprocess) against a scoring endpoint.

Rows are drawn from the version's reference data, one request body per row batch.
The run is summarised overall and per interval (requests, failures, throughput,
p50/p90/p95/p99/max); p95 and p99 are compared with the version's latency budget.
A sample of the responses is checked against reference scores computed in this
process from the registered artifact.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
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

from scoregate.errors import InvalidInputError, ScoregateError
from scoregate.refs import ModelRef

PERCENTILES = (50, 90, 95, 99)


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


def summarise(latencies: np.ndarray, ok: np.ndarray, seconds: float, start: float = 0.0) -> Window:
    good = latencies[ok] if ok.any() else latencies
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
        out = list(self.exceeded)
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
            f"requests {o.requests}, failures {o.failures}, throughput {o.throughput:.2f} rps",
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
    timeout: float = 30.0,
    out_dir: Path | None = None,
    serve: Callable[[Any, str], AbstractContextManager[str]] | None = None,
) -> LoadTestReport:
    """Load-test ``target``: a URL (``http://host:port/models/name@3/predict``, or a base URL with
    ``model``) or a model reference, which ``serve(registry, ref)`` (a context manager giving a
    base URL, e.g. ``scoregate.serving.local_server``) serves for the duration."""
    seconds = parse_duration(duration)
    if seconds <= 0 or rps <= 0 or users <= 0:
        raise InvalidInputError("duration, rps and users must be positive")
    is_url = target.startswith(("http://", "https://"))
    ref = model or (ref_from_url(target) if is_url else target)
    if ref is None:
        raise InvalidInputError(f"cannot tell the model from {target!r}: give --model NAME@VERSION")
    ModelRef.parse(ref)
    loaded = registry.load(ref)
    version = loaded.version
    budget = float(budget_ms if budget_ms is not None else version.latency_budget_ms)
    bodies, rows = _bodies(registry, loaded, rows_per_request, seed)
    reference = [loaded.predict(batch) for batch in rows]

    def run_against(url: str) -> Any:
        return _run(
            url,
            version.ref,
            bodies,
            reference,
            rps,
            seconds,
            users,
            budget,
            interval_s,
            sample_every,
            max_failure_ratio,
            atol,
            timeout,
            out_dir,
            artifact_digest=version.artifact_digest,
            version_budget_ms=float(version.latency_budget_ms),
        )

    if is_url:
        return run_against(target if ref_from_url(target) else f"{target.rstrip('/')}/models/{ref}/predict")
    if serve is None:
        raise InvalidInputError(f"{target!r} is not a URL: give a server to load-test a model reference")
    with serve(registry, version.ref) as base:
        return run_against(f"{base}/models/{version.ref}/predict")


def _bodies(registry: Any, loaded: Any, rows_per_request: int, seed: int) -> tuple[list[str], list[list[dict]]]:
    from scoregate.schema import RecordValidator
    from scoregate.validation.cases import frame_to_rows, synthetic_row

    schema = loaded.version.input_schema
    try:
        rows = frame_to_rows(schema, registry.reference_data(loaded.version.ref))
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


def _run(
    url: str,
    ref: str,
    bodies: list[str],
    reference: list[Any],
    rps: float,
    seconds: float,
    users: int,
    budget: float,
    interval_s: float | None,
    sample_every: int,
    max_failure_ratio: float,
    atol: float,
    timeout: float,
    out_dir: Path | None,
    *,
    artifact_digest: str | None = None,
    version_budget_ms: float | None = None,
) -> LoadTestReport:
    parts = urlsplit(url)
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="scoregate-loadtest-") as tmp:
        config_path = Path(tmp) / "config.json"
        result_path = Path(tmp) / "result.json"
        config = {
            "host": f"{parts.scheme}://{parts.netloc}",
            "path": parts.path + (f"?{parts.query}" if parts.query else ""),
            "bodies": bodies,
            "rps": rps,
            "users": users,
            "duration_s": seconds,
            "sample_every": sample_every,
            "timeout": timeout,
            "result": str(result_path),
        }
        config_path.write_text(json.dumps(config))
        proc = subprocess.run(
            [sys.executable, "-m", "scoregate.perf._locust_worker", str(config_path)],
            capture_output=True,
            timeout=seconds + timeout + 120,
            check=False,
        )
        if proc.returncode != 0 or not result_path.exists():
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
            raise ScoregateError(f"the load generator failed (exit {proc.returncode}): {' | '.join(tail)}")
        result = json.loads(result_path.read_text())
    records = result["records"]
    elapsed = float(result["elapsed_s"])
    offsets = np.array([r[0] for r in records], dtype=float)
    latencies = np.array([r[1] for r in records], dtype=float)
    ok = np.array([bool(r[2]) for r in records], dtype=bool)
    overall = summarise(latencies, ok, elapsed)
    step = interval_s or max(1.0, round(seconds / 30.0))
    windows = []
    count = max(math.ceil(seconds / step - 1e-9), 1)
    # requests start before the stop time; one started in the last instant stays in the last window
    bucket = np.minimum(np.floor(offsets / step), count - 1).astype(int) if len(offsets) else offsets.astype(int)
    for k in range(count):
        mask = bucket == k
        windows.append(summarise(latencies[mask], ok[mask], step, k * step))
    checked, mismatched, examples = _check_samples(result["samples"], records, reference, atol)
    failures = [f"HTTP {r[3]}: {r[5]}" for r in records if not r[2]][:5]
    report = LoadTestReport(
        model=ref,
        url=url,
        users=users,
        target_rps=rps,
        duration_s=seconds,
        elapsed_s=elapsed,
        budget_ms=budget,
        overall=overall,
        intervals=windows,
        interval_s=step,
        checked_responses=checked,
        mismatched_responses=mismatched,
        mismatch_examples=examples,
        failure_examples=failures,
        max_failure_ratio=max_failure_ratio,
        requests=records,
        started_at=started_at,
        artifact_digest=artifact_digest,
        version_budget_ms=version_budget_ms,
    )
    if out_dir is not None:
        report.write(Path(out_dir))
    return report


def _check_samples(
    samples: dict[str, Any], records: list[list[Any]], reference: list[Any], atol: float
) -> tuple[int, int, list[dict[str, Any]]]:
    from scoregate.validation.reference import compare

    checked = mismatched = 0
    examples: list[dict[str, Any]] = []
    for key, payload in samples.items():
        body_index = records[int(key)][4]
        expected = reference[body_index].to_dict(orient="records")
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
