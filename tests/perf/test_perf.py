"""Profiling names the slow step and function; load tests compare latency with the budget."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

from scoregate.cli.quality import register_commands
from scoregate.perf import parse_duration, profile_version, run_loadtest

PLANTED = """
    import numpy as np
    import pandas as pd


    def planted_slow_function(n):
        total = 0
        for i in range(n):
            total += i * i % 7
        return total


    class Scorer:
        def predict(self, frame):
            planted_slow_function(20000)
            p = 1 / (1 + np.exp(-(3 * frame["debt_ratio"].to_numpy(dtype=float) - 1)))
            return pd.DataFrame({"prediction": (p > 0.5).astype(int), "proba_1": p})
"""


def test_profile_names_the_planted_slow_function(registry: Any, credit_files: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "planted"
    folder.mkdir()
    (folder / "scorer.py").write_text(textwrap.dedent(PLANTED))
    version = registry.register(
        "slow-model", folder, flavor="python", train_data=credit_files["train"], target="default"
    )
    report = profile_version(registry, version.ref, requests=40, out_dir=tmp_path / "prof")
    assert report.rate_limiting_step == "framework call"
    assert report.steps["framework call"] > 0.5
    assert report.hottest_function is not None and "planted_slow_function" in report.hottest_function.function
    assert report.summary_line.startswith("rate-limiting step: framework call python ")
    assert "planted_slow_function" in report.summary_line
    assert any("planted_slow_function" in f.function for f in report.by_own[:3])
    text = report.render_text()
    assert "top functions by cumulative time" in text and "top functions by own time" in text
    assert (tmp_path / "prof" / "profile.prof").stat().st_size > 0
    assert "planted_slow_function" in (tmp_path / "prof" / "flamegraph.html").read_text()
    if report.callgraph_path is not None:  # graphviz installed
        assert "<svg" in report.callgraph_path.read_text()
    data = json.loads(report.to_json_bytes())
    assert data["summary"] == report.summary_line


def test_parse_duration() -> None:
    assert parse_duration("10m") == 600 and parse_duration("3") == 3 and parse_duration("1h30m") == 5400
    assert parse_duration("2.5s") == 2.5
    with pytest.raises(Exception, match="invalid duration"):
        parse_duration("ten minutes")


class SlowScoringServer:
    """A real HTTP endpoint that scores correctly, after ``delay`` seconds."""

    def __init__(self, loaded: Any, delay: float) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                time.sleep(delay)
                rows = orjson.loads(body)["rows"]
                predictions = loaded.predict(rows).to_dict(orient="records")
                payload = orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)
                outer.calls += 1
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.calls = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_loadtest_against_a_slow_endpoint_exceeds_the_budget_and_exits_non_zero(
    registry: Any, credit_files: dict[str, Path], tmp_path: Path
) -> None:
    version = registry.register(
        "credit-risk",
        credit_files["model"],
        flavor="sklearn",
        train_data=credit_files["train"],
        target="default",
        latency_budget_ms=50,
    )
    app = typer.Typer()
    register_commands(app, lambda: registry)
    with SlowScoringServer(registry.load(version.ref), delay=0.12) as base:
        url = f"{base}/models/{version.ref}/predict"
        result = CliRunner().invoke(
            app,
            [
                "loadtest",
                url,
                "--rps",
                "10",
                "--duration",
                "3s",
                "--users",
                "2",
                "--interval",
                "1",
                "--output",
                str(tmp_path / "load"),
            ],
        )
    assert result.exit_code == 1, result.output
    assert "EXCEEDED" in result.output
    report = json.loads((tmp_path / "load" / "report.json").read_text())
    assert report["passed"] is False and report["latency_budget_ms"] == 50
    assert report["overall"]["p95_ms"] > 100 and report["overall"]["requests"] >= 10
    assert any(p.startswith("p95") for p in report["problems"]) and any(p.startswith("p99") for p in report["problems"])
    # correct answers, slowly: the sampled responses match the reference scores
    assert report["correctness"]["checked_responses"] >= 1 and report["correctness"]["mismatched_responses"] == 0
    assert len(report["intervals"]) == 3
    assert sum(w["requests"] for w in report["intervals"]) == report["overall"]["requests"]
    assert (tmp_path / "load" / "requests.csv").read_text().count("\n") == report["overall"]["requests"] + 1
    page = (tmp_path / "load" / "report.html").read_text()
    assert "<polyline" in page and "budget 50 ms" in page


def test_loadtest_of_a_model_ref_serves_it_locally_and_checks_answers(registry: Any, good: Any, tmp_path: Path) -> None:
    from scoregate.serving import local_server

    report = run_loadtest(
        registry, good.ref, rps=20, duration="2s", users=2, sample_every=2, budget_ms=2000, serve=local_server
    )
    assert report.url.endswith(f"/models/{good.ref}/predict")
    assert report.overall.requests >= 20 and report.overall.failures == 0
    assert report.checked_responses >= 10 and report.mismatched_responses == 0
    assert report.passed, report.problems
    data = json.loads(report.to_json_bytes())
    assert data["overall"]["p99_ms"] <= data["overall"]["max_ms"]
