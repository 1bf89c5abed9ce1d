"""``scoregate monitor policy|evaluate|status|rules|dashboard|report`` as a user and a hostile one."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier

from scoregate.config import Settings
from scoregate.monitoring.prometheus import METRICS
from scoregate.monitoring.report import MAX_HTML_BYTES
from scoregate.registry import Registry
from tests.monitoring.test_cli import one_line_error

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is not installed")
HOSTILE = "<img src=x onerror=alert(1)>&\"'"


def _drift_twice(run, credit, data: str) -> str:  # type: ignore[no-untyped-def]
    outs = []
    for _ in range(2):
        code, out, err = run("monitor", "drift", "credit-risk@1", "--current", credit[data], "--no-score")
        assert code == 0, err
        outs.append(out)
    return "\n".join(outs)


def test_status_shows_the_alert_a_recorded_drift_fired_and_its_resolution(run, credit) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("monitor", "status")
    assert code == 0 and "credit-risk@1" in out and "none" in out  # no reference yet
    assert run("monitor", "reference", "credit-risk@1", credit["train"], "--no-score")[0] == 0
    out = _drift_twice(run, credit, "shifted")
    assert out.count("alert drift fired") == 1
    code, out, _ = run("monitor", "status", "credit-risk@1")
    assert code == 0 and re.search(r"drift since \d{4}-\d\d-\d\d", out) and "income (input): psi" in out
    code, out, _ = run("monitor", "status", "credit-risk@1", "--json")
    status = json.loads(out)
    assert [a["kind"] for a in status["open_alerts"]] == ["drift"] and status["results"] == 2
    assert status["last_result"]["drifted"] == ["income"] and status["tier"] == "high"
    code, out, _ = run("models", "list")
    assert code == 0 and "1 open alert (drift)" in out
    code, out, _ = run("models", "list", "--json")
    assert json.loads(out)[0]["monitoring"]["open_alerts"] == ["drift"]

    out = _drift_twice(run, credit, "same")
    assert "alert drift resolved" in out
    code, out, _ = run("monitor", "status", "credit-risk@1", "--json")
    assert json.loads(out)["open_alerts"] == [] and len(json.loads(out)["alerts"]) == 1
    code, out, _ = run("audit", "log", "--subject", "credit-risk@1")
    assert "monitor.alert.fire" in out and "monitor.alert.resolve" in out
    code, out, _ = run("audit", "verify")
    assert code == 0 and "chain intact" in out


def test_policy_set_is_audited_and_a_bad_policy_is_one_line(run, credit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("monitor", "policy", "show")
    assert code == 0 and "monitoring policy version 0" in out and "max_drifted_share" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiers: {high: {drift: {consecutive: 0}}}\n")
    code, _, err = run("monitor", "policy", "set", bad, "--reason", "try")
    assert code == 3
    assert "invalid monitoring policy at tiers.high.drift.consecutive: Input should be greater" in one_line_error(err)
    good = tmp_path / "good.yaml"
    good.write_text("default_tier: high\ntiers: {high: {drift: {consecutive: 1}}}\n")
    code, out, err = run("monitor", "policy", "set", good, "--reason", "page at once")
    assert code == 0 and "version 1 in force" in out, err
    code, out, _ = run("monitor", "policy", "history")
    assert "page at once" in out
    code, out, _ = run("audit", "log", "--subject", "monitoring-policy")
    assert "monitor.policy" in out
    assert run("monitor", "reference", "credit-risk@1", credit["train"], "--no-score")[0] == 0
    code, out, _ = run("monitor", "drift", "credit-risk@1", "--current", credit["shifted"], "--no-score")
    assert "alert drift fired" in out  # one result suffices under the new policy


def test_hostile_arguments_get_one_line(run, credit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run("monitor", "status", "no-such-model@1")
    assert code == 4 and one_line_error(err)
    code, _, err = run("monitor", "rules", "-o", tmp_path / "missing" / "rules.yml")
    assert code != 0 and "does not exist" in one_line_error(err)
    (tmp_path / "file").write_text("x")
    code, _, err = run("monitor", "report", "credit-risk@1", "-o", tmp_path / "file")
    assert code != 0 and "it is a file" in one_line_error(err)
    binary = tmp_path / "policy.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    code, _, err = run("monitor", "policy", "set", binary, "--reason", "x")
    assert code == 3 and "not UTF-8" in one_line_error(err)


# -- Prometheus and Grafana ---------------------------------------------------------------------------

PROMTOOL_TESTS = """\
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'scoregate_feature_drift{model="credit-risk",version="1",feature="income",statistic="psi",window="1h"}'
        values: '0.05x10 0.4x30'
      - series: 'scoregate_feature_drift{model="credit-risk",version="1",feature="age",statistic="psi",window="1h"}'
        values: '0.02x40'
      - series: 'scoregate_feature_drift{model="fraud.v2",version="7",feature="amount",statistic="psi",window="1h"}'
        values: '0.3x40'
      - series: 'scoregate_feature_quality_ratio{model="credit-risk",version="1",feature="age",kind="null",window="1h"}'
        values: '0.2x40'
      - series: 'scoregate_output_drift{model="credit-risk",version="1",statistic="psi",window="1h"}'
        values: '0.01x40'
      - series: 'scoregate_monitoring_errors_total{instance="server:8000"}'
        values: '0x20 1 2 3x20'
    alert_rule_test:
      - eval_time: 20m
        alertname: ScoregateFeatureDrift
        exp_alerts: []
      - eval_time: 30m
        alertname: ScoregateFeatureDrift
        exp_alerts:
          - exp_labels: {severity: warning, scoregate_scope: high, scoregate_rule: psi, model: credit-risk,
                         version: "1", feature: income, statistic: psi, window: 1h}
            exp_annotations:
              summary: "credit-risk@1: feature income drifted"
              description: "psi 0.400 over the 1h window reached 0.25 (monitoring policy, high)"
      - eval_time: 30m
        alertname: ScoregateFeatureQuality
        exp_alerts:
          - exp_labels: {severity: warning, scoregate_scope: high, scoregate_rule: "null", model: credit-risk,
                         version: "1", feature: age, kind: "null", window: 1h}
            exp_annotations:
              summary: "credit-risk@1: null values in feature age"
              description: "20% of the 1h window's rows are null; the policy allows 5.0% (high)"
      - eval_time: 30m
        alertname: ScoregateOutputDrift
        exp_alerts: []
      - eval_time: 25m
        alertname: ScoregateMonitoringErrors
        exp_alerts:
          - exp_labels: {severity: warning, scoregate_scope: server, instance: "server:8000"}
            exp_annotations:
              summary: scoregate live monitoring is failing
              description: >-
                3 monitoring errors in 15 minutes: drift figures may be missing or stale (see the server log)
"""


@needs_promtool
def test_rules_pass_promtool_check_and_unit_tests(run, credit, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """credit-risk is high tier (the default); fraud.v2 is low tier with a 1h ``for``, so its breach
    of 40 minutes stays pending, and the '.' in its name must not match other models."""
    registry = Registry(Settings(home=home))
    try:
        registry.register("fraud.v2", credit["model"], flavor="sklearn", train_data=credit["train"], target="default")
        registry.set_risk_tier("fraud.v2", "low", reason="test")
    finally:
        registry.close()
    folder = tmp_path / "prom"
    folder.mkdir()
    code, _, err = run("monitor", "rules", "-o", folder / "rules.yml")
    assert code == 0, err
    text = (folder / "rules.yml").read_text()
    assert 'model=~"fraud[.]v2"' in text and "# Prometheus alerting rules generated" in text
    checked = subprocess.run([PROMTOOL, "check", "rules", "rules.yml"], cwd=folder, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (folder / "tests.yml").write_text(PROMTOOL_TESTS)
    tested = subprocess.run([PROMTOOL, "test", "rules", "tests.yml"], cwd=folder, capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr

    broken = PROMTOOL_TESTS.replace(
        "exp_alerts: []\n      - eval_time: 30m", "exp_alerts:\n          - exp_labels: {}\n      - eval_time: 30m", 1
    )
    (folder / "tests.yml").write_text(broken)  # the unit tests can fail: an alert that does not come
    tested = subprocess.run([PROMTOOL, "test", "rules", "tests.yml"], cwd=folder, capture_output=True, text=True)
    assert tested.returncode != 0


def test_dashboard_is_json_whose_panels_query_exported_metrics(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run("monitor", "dashboard", "-o", tmp_path / "dashboard.json")
    assert code == 0, err
    board = json.loads((tmp_path / "dashboard.json").read_text())
    assert board["panels"] and board["uid"] == "scoregate-monitoring"
    queried = set()
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bscoregate_[a-z_]+", target["expr"]))
            assert names and names <= set(METRICS), target["expr"]
            queried |= names
    assert queried == set(METRICS)
    for variable in board["templating"]["list"][1:]:
        assert set(re.findall(r"\bscoregate_[a-z_]+", variable["query"]["query"])) <= set(METRICS)


# -- the report -------------------------------------------------------------------------------------


def _wide_model(tmp_path: Path, home: Path, features: int, rows: int) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    names = [f"{HOSTILE} {i}" for i in range(features)]
    frame = pd.DataFrame(rng.normal(size=(rows, features)), columns=names)
    frame["level"] = rng.choice(["a", "b", HOSTILE], rows)
    frame["default"] = rng.integers(0, 2, rows)
    model = DummyClassifier(strategy="prior").fit(frame.drop(columns=["default", "level"]), frame["default"])
    paths = {"model": tmp_path / "wide.joblib", "train": tmp_path / "wide.parquet", "current": tmp_path / "cur.parquet"}
    joblib.dump(model, paths["model"])
    frame.to_parquet(paths["train"], index=False)
    shifted = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    shifted[names[: features // 2]] += 1.0
    shifted.to_parquet(paths["current"], index=False)
    registry = Registry(Settings(home=home))
    try:
        registry.register("wide", paths["model"], flavor="sklearn", train_data=paths["train"], target="default")
    finally:
        registry.close()
    return paths


def test_the_report_is_self_contained_escaped_and_bounded_for_a_large_profile(run, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths = _wide_model(tmp_path, home, features=2_500, rows=2_000)
    assert run("monitor", "reference", "wide@1", paths["train"], "--no-score")[0] == 0
    for _ in range(2):
        code, _, err = run("monitor", "drift", "wide@1", "--current", paths["current"], "--no-score")
        assert code == 0, err
    code, _, err = run("monitor", "report", "wide@1", "-o", tmp_path / "report")
    assert code == 0, err
    page = (tmp_path / "report" / "report.html").read_text()
    assert len(page.encode()) <= MAX_HTML_BYTES
    assert HOSTILE not in page and "<img" not in page and "onerror=alert(1)&gt;" not in page.replace("&lt;", "")
    assert "&lt;img src=x onerror=alert(1)&gt;&amp;&quot;&#x27;" in page
    assert not re.search(r"<script|<link|<iframe|\bsrc=|\bhref=|url\(|@import", page, re.I)
    assert page.count("<svg") > 10 and "more in report.json" in page
    assert "Drift over time" in page and "Data quality" in page and "Alerts" in page and "open" in page
    facts = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(facts["latest_result"]["columns"]) == 2_501 and len(facts["history"]) == 2
    assert facts["status"]["open_alerts"][0]["kind"] == "drift"
    assert any(c["name"] == f"{HOSTILE} 0" and c["drifted"] for c in facts["latest_result"]["columns"])


def test_a_report_without_results_says_so(run, credit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run("monitor", "report", "credit-risk@1", "-o", tmp_path / "r")
    assert code == 0, err
    page = (tmp_path / "r" / "report.html").read_text()
    assert "No reference profile recorded" in page and "No drift result recorded yet" in page
    assert "No performance result recorded" in page
