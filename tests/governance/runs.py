"""Documents shaped like scoregate's own run results, for tests of the gates' logic.

A gate judges a recorded run from its document; these build documents that meet (or,
with ``**changes``, break) the default high tier's rules without paying for a real run.
Real runs are exercised end to end in tests/governance/test_evidence_gate.py.
"""

from __future__ import annotations

import itertools
from typing import Any

from scoregate.registry import Registry
from scoregate.registry.records import ModelVersion
from scoregate.validation.cases import generate_cases

#: A different start for every document, as real runs have, so no two share a digest.
_STARTS = (f"2026-12-01T00:00:{n:06d}" for n in itertools.count())

CHECKS = (
    "output_contract",
    "probabilities",
    "label_consistency",
    "batch_invariance",
    "determinism",
    "sensitivity",
    "latency",
    "memory",
    "reference_performance",
)


def validation_document(registry: Registry, version: ModelVersion, **changes: Any) -> dict[str, Any]:
    """A format-2 validation result of ``version`` in which every case and check passed."""
    try:
        reference = registry.reference_data(version.ref)
    except Exception:
        reference = None
    cases = [
        {**case.summary(), "outcome": "scored", "status": "pass", "reason": "", "elapsed_ms": 1.0}
        for case in generate_cases(version.input_schema, reference, seed=0)
    ]
    settings = {
        "target": "python",
        "reference": "subprocess",
        "reference_scorer_digest": None,
        "golden_digest": None,
        "atol": 1e-6,
        "rtol": 1e-6,
        "independent_atol": 1e-4,
        "independent_rtol": 1e-4,
        "timeout_s": 10.0,
        "max_duration_s": 600.0,
        "latency_budget_ms": version.latency_budget_ms,
        "memory_calls": 50,
        "memory_limit_mb": 32.0,
        "seed": 0,
        "reference_rows": 100,
    }
    settings.update(changes.pop("settings", {}))
    document = {
        "kind": "scoregate.validation",
        "format": 2,
        "ref": version.ref,
        "artifact_digest": version.artifact_digest,
        "schema_digest": version.input_schema.contract_digest(),
        "settings": settings,
        "case_set": {"digest": "0" * 64, "cases": len(cases), "by_kind": {}},
        "cases": cases,
        "checks": [{"id": c, "status": "pass", "expect": "pass", "reason": "", "details": {}} for c in CHECKS],
        "parity": {"reference": settings["reference"], "available": True, "rows_compared": 100, "mismatches": 0},
        "passed": True,
        "started_at": next(_STARTS),
    }
    document.update(changes)
    return document


def loadtest_document(version: ModelVersion, **overall: Any) -> dict[str, Any]:
    """A load-test result of ``version`` within its budget, with every answer checked."""
    figures = {"requests": 500, "failures": 0, "p50_ms": 3.0, "p90_ms": 5.0, "p95_ms": 6.0, "p99_ms": 9.0}
    figures.update(overall)
    return {
        "kind": "scoregate.loadtest",
        "ref": version.ref,
        "artifact_digest": version.artifact_digest,
        "duration_s": 10.0,
        "elapsed_s": 10.0,
        "overall": figures,
        "correctness": {"checked_responses": 20, "mismatched_responses": 0},
        "passed": True,
        "started_at": next(_STARTS),
    }
