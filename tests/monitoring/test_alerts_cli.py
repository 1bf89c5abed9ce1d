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
from tests.conftest import _unavailable
from tests.monitoring.test_cli import one_line_error


@pytest.fixture
def promtool() -> str:
    """Debian's promtool (package prometheus; .ci/run installs it): a skip locally, a failure under CI."""
    found = shutil.which("promtool")
    if found is None:
        _unavailable("promtool (Debian package prometheus) is not installed")
    return str(found)


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
    code, out, _ = run("inventory", "--format", "json")
    assert code == 0 and json.loads(out)[0]["monitoring"].startswith("@1: 1/4 drifted")
    assert "1 open alert (drift)" in json.loads(out)[0]["monitoring"]
    code, out, _ = run("card", "credit-risk@1")
    monitoring = out.split("## Monitoring")[1]
    assert code == 0 and "| drift results recorded | 2 |" in monitoring
    assert "2 columns drifted (income" not in monitoring and "1 of 4 columns drifted (income)" in monitoring
    assert "- open alert **drift** since" in monitoring

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
      - series: 'scoregate_feature_drift{model="credit-risk",version="1",feature="income",statistic="psi",window="15m"}'
        values: '0.05x10 0.4x30'
      - series: 'scoregate_feature_drift{model="credit-risk",version="1",feature="age",statistic="psi",window="15m"}'
        values: '0.02x40'
      - series: 'scoregate_feature_drift{model="fraud.v2",version="7",feature="amount",statistic="psi",window="24h"}'
        values: '0.3x40'
      - series: 'scoregate_feature_quality_ratio{model="credit-risk",version="1",feature="age",
          kind="missing",window="15m"}'
        values: '0.2x40'
      - series: 'scoregate_output_drift{model="credit-risk",version="1",output="proba_1",statistic="psi",window="15m"}'
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
                         version: "1", feature: income, statistic: psi, window: 15m}
            exp_annotations:
              summary: "credit-risk@1: feature income drifted"
              description: "psi 0.400 over the 15m window reached 0.25 (monitoring policy, high)"
      - eval_time: 30m
        alertname: ScoregateFeatureQuality
        exp_alerts:
          - exp_labels: {severity: warning, scoregate_scope: high, scoregate_rule: missing, model: credit-risk,
                         version: "1", feature: age, kind: missing, window: 15m}
            exp_annotations:
              summary: "credit-risk@1: missing values in feature age"
              description: "20% of the 15m window's rows are missing; the policy allows 5.0% (high)"
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


def test_rules_pass_promtool_check_and_unit_tests(run, credit, home: Path, tmp_path: Path, promtool: str) -> None:  # type: ignore[no-untyped-def]
    """credit-risk is high tier (the default); fraud.v2 is low tier (its 24h window, a 1h ``for``), so its breach
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
    checked = subprocess.run([promtool, "check", "rules", "rules.yml"], cwd=folder, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (folder / "tests.yml").write_text(PROMTOOL_TESTS)
    tested = subprocess.run([promtool, "test", "rules", "tests.yml"], cwd=folder, capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr

    broken = PROMTOOL_TESTS.replace(
        "exp_alerts: []\n      - eval_time: 30m", "exp_alerts:\n          - exp_labels: {}\n      - eval_time: 30m", 1
    )
    (folder / "tests.yml").write_text(broken)  # the unit tests can fail: an alert that does not come
    tested = subprocess.run([promtool, "test", "rules", "tests.yml"], cwd=folder, capture_output=True, text=True)
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


def test_the_report_is_self_contained_escaped_and_bounded(run, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from scoregate.monitoring import service

    paths = _wide_model(tmp_path, home, features=300, rows=600)
    registry = Registry(Settings(home=home))
    try:
        service.record_reference(registry, "wide@1", paths["train"], score=False)
        for _ in range(2):
            service.drift_file(registry, "wide@1", paths["current"], score=False)
    finally:
        registry.close()
    code, out, err = run("monitor", "evaluate", "wide@1")
    assert code == 0 and "alert drift fired" in out, err
    code, _, err = run("monitor", "report", "wide@1", "-o", tmp_path / "report")
    assert code == 0, err
    page = (tmp_path / "report" / "report.html").read_text()
    assert len(page.encode()) <= MAX_HTML_BYTES
    assert HOSTILE not in page and "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;&amp;&quot;&#x27;" in page
    assert not re.search(r"<script|<link|<iframe|<img|<object|<[^>]*\b(src|href)=|url\(|@import", page, re.I)
    assert page.count("<svg") > 300 and "<polyline" in page  # histograms and drift over time
    assert "Drift over time" in page and "Data quality" in page and "open" in page
    facts = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(facts["latest_result"]["columns"]) == 301 and len(facts["history"]) == 2
    assert facts["status"]["open_alerts"][0]["kind"] == "drift"
    assert any(c["name"] == f"{HOSTILE} 0" and c["drifted"] for c in facts["latest_result"]["columns"])

    # the bound, whatever the size: the same facts with 40,000 columns of long names and 5,000 alerts
    from scoregate.monitoring.report import render

    template = facts["latest_result"]["columns"][0]
    facts["latest_result"]["columns"] = [
        template | {"name": f"{HOSTILE * 40} {i}", "bin_labels": [HOSTILE * 3] * len(template["bin_labels"])}
        for i in range(40_000)
    ]
    alert = facts["status"]["alerts"][0]
    facts["status"]["alerts"] = [alert | {"summary": HOSTILE * 100, "details": [HOSTILE * 50] * 20}] * 5_000
    big = render(facts)
    assert len(big.encode()) <= MAX_HTML_BYTES and HOSTILE not in big
    assert "39,000 more columns in report.json" in big and "more in report.json" in big


def test_a_report_without_results_says_so(run, credit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run("monitor", "report", "credit-risk@1", "-o", tmp_path / "r")
    assert code == 0, err
    page = (tmp_path / "r" / "report.html").read_text()
    assert "No reference profile recorded" in page and "No drift result recorded yet" in page
    assert "No performance result recorded" in page
    from scoregate.monitoring.report import render

    facts = json.loads((tmp_path / "r" / "report.json").read_text())
    facts["performance"] = [
        {
            "computed_at": f"2026-01-0{d}T00:00:00+00:00",
            "rows": 900,
            "metrics": {HOSTILE: 0.7 + d / 100},
            "digest": None,
        }
        for d in range(1, 4)
    ]
    page = render(facts)
    assert "performance per recorded result" in page and "<polyline" in page and "0.73" in page
    assert HOSTILE not in page and "&lt;img" in page


def test_only_an_admin_changes_the_monitoring_policy_and_a_viewer_cannot_fire_alerts(  # type: ignore[no-untyped-def]
    run, credit, monkeypatch, tmp_path: Path
) -> None:
    code, out, _ = run("init", "--name", "root")
    root = out.strip().splitlines()[1]
    monkeypatch.setenv("SCOREGATE_TOKEN", root)
    tokens = {}
    for name, role in [("dave", "developer"), ("vic", "viewer")]:
        code, out, err = run("users", "add", name, "--role", role)
        assert code == 0, err
        tokens[name] = out.strip().splitlines()[-1]
    policy = tmp_path / "p.yaml"
    policy.write_text("tiers: {high: {}}\n")
    monkeypatch.setenv("SCOREGATE_TOKEN", tokens["dave"])
    code, _, err = run("monitor", "policy", "set", policy, "--reason", "mine")
    assert code == 8 and "policy" in one_line_error(err)
    assert run("monitor", "reference", "credit-risk@1", credit["train"], "--no-score")[0] == 0
    monkeypatch.setenv("SCOREGATE_TOKEN", tokens["vic"])
    code, _, err = run("monitor", "evaluate", "credit-risk@1")
    assert code == 8 and one_line_error(err)
    code, out, _ = run("monitor", "status", "credit-risk@1")  # reading is allowed
    assert code == 0 and "credit-risk@1" in out
    monkeypatch.setenv("SCOREGATE_TOKEN", root)
    code, out, _ = run("monitor", "policy", "set", policy, "--reason", "simpler")
    assert code == 0 and "version 1" in out
    code, out, _ = run("audit", "log", "--subject", "monitoring-policy")
    assert "root" in out and "monitor.policy" in out
