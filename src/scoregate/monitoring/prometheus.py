"""Prometheus alerting rules and a Grafana dashboard for the live monitoring gauges.

The scoring server exports, per served version and live window:

- ``scoregate_feature_drift{model,version,feature,statistic,window}``
- ``scoregate_feature_quality_ratio{model,version,feature,kind,window}``
- ``scoregate_output_drift{model,version,output,statistic,window}``
- ``scoregate_monitoring_errors_total``

The rules are generated from the monitoring policy in force and the registry's models
(their risk tiers), so Prometheus pages on the same thresholds the recorded alerts use:
one rule per tier and statistic or quality kind, restricted to the models of that tier
(models not in the registry yet fall under the default tier), with per-version
overrides as rules of their own, excluded from their tier's. ``promtool check rules``
and ``promtool test rules`` run on the output in the tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from scoregate.monitoring.rules import LiveRule, MonitoringPolicy, TierRules

FEATURE_DRIFT = "scoregate_feature_drift"
QUALITY_RATIO = "scoregate_feature_quality_ratio"
OUTPUT_DRIFT = "scoregate_output_drift"
MONITORING_ERRORS = "scoregate_monitoring_errors_total"
METRICS = (FEATURE_DRIFT, QUALITY_RATIO, OUTPUT_DRIFT, MONITORING_ERRORS)
GROUP = "scoregate-monitoring"


@dataclass(frozen=True, slots=True)
class Scope:
    """Which series a rule covers: a tier's models (or all others) or one version."""

    name: str  # the tier, or NAME@VERSION
    models: tuple[str, ...] = ()
    others: tuple[str, ...] | None = None  # the default tier: every model not in this list
    version: tuple[str, int] | None = None
    excluded: tuple[tuple[str, int], ...] = ()  # versions with rules of their own

    def matchers(self) -> str:
        if self.version is not None:
            return f'model="{self.version[0]}",version="{self.version[1]}"'
        if self.others is not None:
            return f'model!~"{_alternatives(self.others)}"' if self.others else ""
        return f'model=~"{_alternatives(self.models)}"'

    def exclusion(self, metric: str) -> str:
        if not self.excluded:
            return ""
        each = " or ".join(
            f'group by (model, version) ({metric}{{model="{m}",version="{v}"}})' for m, v in self.excluded
        )
        return f" unless on (model, version) ({each})"


def _alternatives(names: Sequence[str]) -> str:
    # model names use letters, digits, '.', '_' and '-' (refs.NAME_PATTERN): only '.' is special in RE2
    return "|".join(name.replace(".", "[.]") for name in sorted(names))


def _selector(metric: str, scope: Scope, **labels: str) -> str:
    parts = [scope.matchers()] + [f'{k}="{v}"' for k, v in labels.items()]
    return f"{metric}{{{','.join(p for p in parts if p)}}}"


def scopes(policy: MonitoringPolicy, tiers: Mapping[str, str | None]) -> list[tuple[Scope, TierRules]]:
    """The scopes to write rules for, given each registered model's risk tier."""
    overrides: list[tuple[str, int]] = []
    for ref in sorted(policy.versions):
        name, _, number = ref.partition("@")
        overrides.append((name, int(number)))
    by_tier: dict[str, list[str]] = {}
    for model, tier in sorted(tiers.items()):
        by_tier.setdefault(tier if tier in policy.tiers else policy.default_tier, []).append(model)
    found = []
    for tier, rules in policy.tiers.items():
        models = tuple(by_tier.get(tier, ()))
        excluded = tuple(o for o in overrides if o[0] in models or (tier == policy.default_tier and o[0] not in tiers))
        if tier == policy.default_tier:
            others = tuple(m for t, ms in by_tier.items() if t != tier for m in ms)
            found.append((Scope(tier, others=others, excluded=excluded), rules))
        elif models:
            found.append((Scope(tier, models=models, excluded=excluded), rules))
    for name, number in overrides:
        ref = f"{name}@{number}"
        found.append((Scope(ref, version=(name, number)), policy.rules_for(ref, tiers.get(name))))
    return found


def _rule(
    alert: str, expr: str, live: LiveRule, scope: Scope, on: str, summary: str, description: str
) -> dict[str, Any]:
    return {
        "alert": alert,
        "expr": expr,
        "for": live.for_,
        "labels": {"severity": "warning", "scoregate_scope": scope.name, "scoregate_rule": on},
        "annotations": {"summary": summary, "description": description},
    }


def alerting_rules(policy: MonitoringPolicy, tiers: Mapping[str, str | None]) -> dict[str, Any]:
    """The rules file (a Prometheus ``groups:`` document) for the policy and these models."""
    rules: list[dict[str, Any]] = []
    subject = "{{ $labels.model }}@{{ $labels.version }}"
    for scope, tier_rules in scopes(policy, tiers):
        live = tier_rules.live
        drift = (
            ("ScoregateFeatureDrift", FEATURE_DRIFT, live.feature_drift, "feature {{ $labels.feature }} drifted"),
            ("ScoregateOutputDrift", OUTPUT_DRIFT, live.output_drift, "output {{ $labels.output }} drifted"),
        )
        for alert, metric, thresholds, what in drift:
            for statistic, threshold in sorted(thresholds.items()):
                series = _selector(metric, scope, statistic=statistic, window=live.window)
                rules.append(
                    _rule(
                        alert,
                        f"{series} >= {threshold:g}{scope.exclusion(metric)}",
                        live,
                        scope,
                        statistic,
                        f"{subject}: {what}",
                        f'{statistic} {{{{ $value | printf "%.3f" }}}} over the {live.window} window reached '
                        f"{threshold:g} (monitoring policy, {scope.name})",
                    )
                )
        for kind, ratio in sorted(live.quality_ratio.items()):
            series = _selector(QUALITY_RATIO, scope, kind=kind, window=live.window)
            rules.append(
                _rule(
                    "ScoregateFeatureQuality",
                    f"{series} > {ratio:g}{scope.exclusion(QUALITY_RATIO)}",
                    live,
                    scope,
                    kind,
                    f"{subject}: {kind} values in feature {{{{ $labels.feature }}}}",
                    f"{{{{ $value | humanizePercentage }}}} of the {live.window} window's rows are {kind}; "
                    f"the policy allows {ratio:.1%} ({scope.name})",
                )
            )
    rules.append(
        {
            "alert": "ScoregateMonitoringErrors",
            "expr": f"increase({MONITORING_ERRORS}[15m]) > 0",
            "labels": {"severity": "warning", "scoregate_scope": "server"},
            "annotations": {
                "summary": "scoregate live monitoring is failing",
                "description": '{{ $value | printf "%.0f" }} monitoring errors in 15 minutes: drift figures '
                "may be missing or stale (see the server log)",
            },
        }
    )
    return {"groups": [{"name": GROUP, "rules": rules}]}


def rules_yaml(policy: MonitoringPolicy, tiers: Mapping[str, str | None], *, header: str = "") -> str:
    body = yaml.safe_dump(alerting_rules(policy, tiers), sort_keys=False, allow_unicode=True, width=1000)
    return header + body


# -- Grafana ----------------------------------------------------------------------------------------


def _panel(pid: int, title: str, expr: str, legend: str, y: int, x: int, unit: str = "none") -> dict[str, Any]:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "right"}},
        "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}],
    }


def _variable(name: str, query: str, *, multi: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "multi": multi,
        "includeAll": multi,
        "current": {},
    }


def dashboard() -> dict[str, Any]:
    """A Grafana dashboard (JSON model, schema 39) over the live monitoring gauges."""
    sel = 'model=~"$model",version=~"$version",window=~"$window"'
    panels = [
        _panel(
            1,
            "Feature drift ($statistic)",
            f'max by (model, version, feature) ({FEATURE_DRIFT}{{{sel},statistic="$statistic"}})',
            "{{model}}@{{version}} {{feature}}",
            0,
            0,
        ),
        _panel(
            2,
            "Output drift ($statistic)",
            f'max by (model, version, output) ({OUTPUT_DRIFT}{{{sel},statistic="$statistic"}})',
            "{{model}}@{{version}} {{output}}",
            0,
            12,
        ),
        _panel(
            3,
            "Data quality: share of rows",
            f"max by (model, version, feature, kind) ({QUALITY_RATIO}{{{sel}}})",
            "{{model}}@{{version}} {{feature}} {{kind}}",
            8,
            0,
            "percentunit",
        ),
        _panel(
            4,
            "Features over the drift threshold (0.25)",
            f'count by (model, version) ({FEATURE_DRIFT}{{{sel},statistic="$statistic"}} >= 0.25)',
            "{{model}}@{{version}}",
            8,
            12,
        ),
        _panel(
            5,
            "Monitoring errors per minute",
            f"sum(rate({MONITORING_ERRORS}[5m])) * 60",
            "errors/min",
            16,
            0,
        ),
    ]
    return {
        "title": "scoregate monitoring",
        "uid": "scoregate-monitoring",
        "tags": ["scoregate"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-7d", "to": "now"},
        "refresh": "1m",
        "timezone": "utc",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "current": {}},
                _variable("model", f"label_values({FEATURE_DRIFT}, model)"),
                _variable("version", f'label_values({FEATURE_DRIFT}{{model=~"$model"}}, version)'),
                _variable("window", f"label_values({FEATURE_DRIFT}, window)"),
                _variable("statistic", f"label_values({FEATURE_DRIFT}, statistic)", multi=False),
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }
