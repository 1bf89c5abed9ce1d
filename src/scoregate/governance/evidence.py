"""What a recorded run proves, judged again under the policy in force.

A run (``validate``, ``loadtest``, ``profile``, ``image build``) writes its whole result
document to the artifact store by digest and its evidence row in the transaction of
its audit event. A gate never reads the document's own ``passed``: it re-derives the
verdict here, from the cases, checks, parity and measurements the run recorded, and
from the settings the run used, which the tier's rules bound (a run with a weaker
reference, looser tolerances, a longer timeout or a laxer latency budget is kept as it
was and does not count). Each judge is a pure function returning every problem in
words, so ``scoregate check`` can say exactly why a run does not count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from scoregate.governance.policy import (
    EvidenceKind,
    LoadtestRequirements,
    ParityReference,
    ProfileRequirements,
    TierPolicy,
    ValidationRequirements,
)
from scoregate.schema import ModelSchema

#: The validation report format whose settings and checks the gate understands.
VALIDATION_FORMAT = 2
#: How many case ids a problem names before it says "and N more".
SHOWN = 5


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def latency_budget(version_budget_ms: float | None, tier_budget_ms: float | None) -> float:
    """The budget a run is judged against: the tighter of the version's and the tier's."""
    budgets = [b for b in (version_budget_ms, tier_budget_ms) if b is not None and b > 0]
    return min(budgets) if budgets else math.inf


# -- validation ----------------------------------------------------------------------------------


def judge_validation(
    document: Mapping[str, Any],
    *,
    schema: ModelSchema,
    has_reference: bool,
    version_budget_ms: float | None,
    rules: ValidationRequirements,
) -> list[str]:
    """Every reason this validation run does not satisfy ``rules`` for the version."""
    if document.get("kind") != "scoregate.validation" or document.get("format") != VALIDATION_FORMAT:
        return [f"it is not a scoregate validation report of format {VALIDATION_FORMAT}"]
    settings = document.get("settings")
    cases = document.get("cases")
    if not isinstance(settings, Mapping) or not isinstance(cases, list):
        return ["its settings or cases are missing"]
    problems = _settings_problems(settings, rules)
    problems += _case_problems(cases, _retimed(document.get("checks")), schema, has_reference, version_budget_ms, rules)
    problems += _parity_problems(document.get("parity"), settings, rules)
    problems += _check_problems(document.get("checks"), rules)
    return problems


def _settings_problems(settings: Mapping[str, Any], rules: ValidationRequirements) -> list[str]:
    problems = []
    used = str(settings.get("reference") or "none")
    if ParityReference.of_run(used) < rules.reference.rank:
        problems.append(f"its parity reference was {used}; the tier requires {rules.reference.value} or stronger")
    bounds = [("atol", rules.max_atol), ("rtol", rules.max_rtol), ("timeout_s", rules.max_timeout_s)]
    if ParityReference.of_run(used) is ParityReference.INDEPENDENT:
        bounds += [
            ("independent_atol", rules.max_independent_atol),
            ("independent_rtol", rules.max_independent_rtol),
        ]
    for name, limit in bounds:
        value = _number(settings.get(name))
        if value is None or value > limit or value < 0:
            problems.append(f"it ran with {name}={settings.get(name)!r}; the tier allows at most {limit:g}")
    if "memory" in rules.checks:
        calls = _number(settings.get("memory_calls"))
        if calls is None or calls < rules.min_memory_calls:
            problems.append(
                f"it measured memory over {settings.get('memory_calls')!r} calls; the tier requires "
                f"{rules.min_memory_calls}"
            )
        growth = _number(settings.get("memory_limit_mb"))
        if rules.max_memory_growth_mb is not None and (growth is None or growth > rules.max_memory_growth_mb):
            problems.append(
                f"it allowed {settings.get('memory_limit_mb')!r} MB of memory growth; the tier allows at most "
                f"{rules.max_memory_growth_mb:g}"
            )
    return problems


def _retimed(checks: Any) -> dict[str, float]:
    """The fastest run of each case the latency check timed again (a slow first run is often
    the machine, so the check times a slow case twice more and keeps its best)."""
    best: dict[str, float] = {}
    for check in checks if isinstance(checks, list) else []:
        if not isinstance(check, Mapping) or check.get("id") != "latency":
            continue
        details = check.get("details") if isinstance(check.get("details"), Mapping) else {}
        for entry in [*details.get("retimed_within_budget", []), *details.get("over_budget", [])]:
            runs = (
                [r for r in (entry.get("runs_ms") or []) if _number(r) is not None]
                if isinstance(entry, Mapping)
                else []
            )
            if runs:
                best[str(entry.get("case"))] = min(runs)
    return best


def _case_problems(
    cases: list[Any],
    retimed: Mapping[str, float],
    schema: ModelSchema,
    has_reference: bool,
    version_budget_ms: float | None,
    rules: ValidationRequirements,
) -> list[str]:
    problems = []
    results = [c for c in cases if isinstance(c, Mapping)]
    failed = [str(c.get("id")) for c in results if c.get("status") == "fail"]
    if failed:
        problems.append(f"{len(failed)} case(s) failed: {_listing(failed)}")
    budget = latency_budget(version_budget_ms, rules.latency_budget_ms)
    slow = []
    for c in results:
        elapsed = _number(c.get("elapsed_ms"))
        if elapsed is not None:
            elapsed = min(elapsed, retimed.get(str(c.get("id")), elapsed))
            if elapsed > budget:
                slow.append(f"{c.get('id')} ({elapsed:.0f} ms)")
    if slow:
        problems.append(f"{len(slow)} case(s) took longer than the {budget:g} ms budget: {_listing(slow)}")
    problems += coverage_problems(results, schema, has_reference, rules.min_reference_rows)
    return problems


def coverage_problems(
    results: list[Mapping[str, Any]], schema: ModelSchema, has_reference: bool, min_reference_rows: int
) -> list[str]:
    """Where the run's cases fall short of the minimum case set for this schema.

    Every feature needs a passing scored case, a passing refusal of a wrong type, and
    its null and missing cases; the batch needs its empty and large cases; a version
    with reference data needs a reference sample of at least ``min_reference_rows``.
    """
    passed = [c for c in results if c.get("status") == "pass"]
    problems = []
    for feature in schema.features:
        own = [c for c in passed if c.get("feature") == feature.name]
        kinds = {str(c.get("kind")) for c in own}
        scored = any(c.get("expect") == "score" for c in own)
        lacking = [k for k in ("null", "missing") if k not in kinds]
        if not any(k.startswith("wrong_type") for k in kinds):
            lacking.append("wrong type")
        if not scored:
            lacking.append("a scored value")
        if lacking:
            problems.append(f"feature {feature.name!r} lacks passing cases: {', '.join(lacking)}")
    batch_kinds = {str(c.get("kind")) for c in passed}
    for kind in ("empty", "large"):
        if kind not in batch_kinds:
            problems.append(f"the {kind}-batch case did not pass")
    if has_reference and min_reference_rows:
        rows = sum(int(_number(c.get("rows")) or 0) for c in passed if c.get("kind") == "reference")
        if rows < min_reference_rows:
            problems.append(f"it scored {rows} reference row(s); the tier requires {min_reference_rows}")
    return problems


def _parity_problems(parity: Any, settings: Mapping[str, Any], rules: ValidationRequirements) -> list[str]:
    if ParityReference.of_run(str(settings.get("reference") or "none")) is ParityReference.NONE:
        return []
    if not isinstance(parity, Mapping):
        return ["its parity result is missing"]
    problems = []
    if parity.get("available") is False or parity.get("error"):
        problems.append(f"its parity reference did not run: {parity.get('error') or 'unavailable'}")
    mismatches = _number(parity.get("mismatches"))
    if mismatches is None or mismatches > 0:
        problems.append(f"parity found {parity.get('mismatches')!r} value(s) beyond tolerance")
    compared = _number(parity.get("rows_compared"))
    if compared is None or compared < 1:
        problems.append("parity compared no rows")
    return problems


def _check_problems(checks: Any, rules: ValidationRequirements) -> list[str]:
    by_id = {str(c.get("id")): c for c in checks if isinstance(c, Mapping)} if isinstance(checks, list) else {}
    problems = []
    for required in rules.checks:
        check = by_id.get(required)
        if check is None:
            problems.append(f"its {required} check did not run")
        elif check.get("status") == "fail":
            problems.append(f"its {required} check failed: {check.get('reason') or 'no reason given'}")
        elif check.get("status") not in ("pass", "skip"):
            problems.append(f"its {required} check has no verdict")
    return problems


# -- load test, profile, image -------------------------------------------------------------------


def judge_loadtest(
    document: Mapping[str, Any], *, version_budget_ms: float | None, rules: LoadtestRequirements
) -> list[str]:
    if document.get("kind") != "scoregate.loadtest":
        return ["it is not a scoregate load-test report"]
    overall = document.get("overall")
    if not isinstance(overall, Mapping):
        return ["its overall measurements are missing"]
    problems = [f"it did not complete: {document['stopped']}"] if document.get("stopped") else []
    elapsed = _number(document.get("elapsed_s"))
    duration = min(elapsed, _number(document.get("duration_s")) or elapsed) if elapsed is not None else None
    if duration is None or duration < rules.min_duration_s:
        problems.append(f"it ran {document.get('elapsed_s')!r} s; the tier requires {rules.min_duration_s:g} s")
    requests = _number(overall.get("requests")) or 0.0
    if requests < max(rules.min_requests, 1):
        problems.append(f"it sent {requests:.0f} request(s); the tier requires {rules.min_requests}")
    failures = _number(overall.get("failures"))
    if failures is None or (requests and failures / requests > rules.max_failure_ratio):
        problems.append(
            f"{overall.get('failures')!r} of {requests:.0f} requests failed; the tier allows a ratio of "
            f"{rules.max_failure_ratio:g}"
        )
    budget = latency_budget(version_budget_ms, rules.latency_budget_ms)
    for name in ("p95_ms", "p99_ms"):
        value = _number(overall.get(name))
        if value is None or value > budget:
            problems.append(f"its {name[:-3]} latency was {overall.get(name)!r} ms against a {budget:g} ms budget")
    correctness = document.get("correctness")
    correctness = correctness if isinstance(correctness, Mapping) else {}
    checked = _number(correctness.get("checked_responses")) or 0.0
    if checked < rules.min_checked_responses:
        problems.append(
            f"it checked {checked:.0f} answer(s) against reference scores; the tier requires "
            f"{rules.min_checked_responses}"
        )
    mismatched = _number(correctness.get("mismatched_responses"))
    if mismatched is None or mismatched > 0:
        problems.append(f"{correctness.get('mismatched_responses')!r} answer(s) differed from the reference scores")
    return problems


def judge_profile(document: Mapping[str, Any], *, rules: ProfileRequirements) -> list[str]:
    if document.get("kind") != "scoregate.profile":
        return ["it is not a scoregate profile report"]
    problems = []
    requests = _number(document.get("requests")) or 0.0
    if requests < rules.min_requests:
        problems.append(f"it profiled {requests:.0f} request(s); the tier requires {rules.min_requests}")
    if document.get("complete") is False or document.get("stopped"):
        problems.append(f"it did not complete: {document.get('stopped') or 'the run was cut short'}")
    return problems


def judge_image(document: Mapping[str, Any], *, artifact_digest: str) -> list[str]:
    if document.get("kind") != "image":
        return ["it is not a scoregate image record"]
    labelled = str((document.get("labels") or {}).get("scoregate.artifact.digest", "")).removeprefix("sha256:")
    if labelled != artifact_digest:
        return [f"the image is labelled with artifact sha256:{labelled[:12] or 'nothing'}"]
    return []


def judge(
    kind: str,
    document: Mapping[str, Any],
    *,
    tier: TierPolicy,
    schema: ModelSchema,
    artifact_digest: str,
    has_reference: bool,
    version_budget_ms: float | None,
) -> list[str]:
    """The problems of one recorded run of ``kind`` under ``tier`` (empty: it counts)."""
    judges: dict[str, Callable[[], list[str]]] = {
        EvidenceKind.VALIDATION: lambda: judge_validation(
            document,
            schema=schema,
            has_reference=has_reference,
            version_budget_ms=version_budget_ms,
            rules=tier.validation,
        ),
        EvidenceKind.LOADTEST: lambda: judge_loadtest(
            document, version_budget_ms=version_budget_ms, rules=tier.loadtest
        ),
        EvidenceKind.PROFILE: lambda: judge_profile(document, rules=tier.profile),
        EvidenceKind.IMAGE: lambda: judge_image(document, artifact_digest=artifact_digest),
    }
    run = judges.get(kind)
    return run() if run is not None else []


__all__ = [
    "VALIDATION_FORMAT",
    "coverage_problems",
    "judge",
    "judge_image",
    "judge_loadtest",
    "judge_profile",
    "judge_validation",
    "latency_budget",
]
