"""Run the generated cases against a target, check each outcome, compare scores for parity."""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from scoregate.errors import ScoregateError
from scoregate.schema import FeatureType, OutputField
from scoregate.validation.cases import EMPTY, REFUSE, SCORE, Case, generate_cases
from scoregate.validation.reference import DEFAULT_ATOL, DEFAULT_RTOL, compare, read_golden, subprocess_reference
from scoregate.validation.targets import ERROR, REFUSED, SCORED, TIMEOUT, PythonTarget, Reply, Target

PASS = "pass"
FAIL = "fail"
SKIP = "skip"
#: How many of the largest parity differences the report lists.
WORST_DIFFERENCES = 10


@dataclass
class CaseResult:
    case: Case
    outcome: str  # scored / refused / error / timeout / skipped
    status: str  # pass / fail / skip
    reason: str = ""
    http_status: int | None = None
    elapsed_ms: float = 0.0
    refusal: list[dict[str, Any]] = field(default_factory=list)
    outputs_sample: list[dict[str, Any]] = field(default_factory=list)
    #: every output row of a passing scored case (kept for parity, not written to the report)
    outputs: list[dict[str, Any]] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.case.summary(),
            "outcome": self.outcome,
            "status": self.status,
            "reason": self.reason,
            "http_status": self.http_status,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "refusal_details": self.refusal[:5],
            "outputs_sample": self.outputs_sample[:3],
        }


@dataclass
class Difference:
    case_id: str
    row: int
    output: str
    target: Any
    reference: Any
    size: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case_id,
            "row": self.row,
            "output": self.output,
            "target": self.target,
            "reference": self.reference,
            "difference": self.size if math.isfinite(self.size) else "incomparable",
        }


@dataclass
class ParityResult:
    reference: str  # "subprocess", "golden", "subprocess+golden" or "none"
    atol: float
    rtol: float
    rows_compared: int = 0
    values_compared: int = 0
    mismatches: int = 0
    max_difference: float = 0.0
    worst: list[Difference] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.mismatches == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "tolerance": {
                "atol": self.atol,
                "rtol": self.rtol,
                "rule": "|target - reference| <= atol + rtol*|reference|",
            },
            "rows_compared": self.rows_compared,
            "values_compared": self.values_compared,
            "mismatches": self.mismatches,
            "max_difference": self.max_difference if math.isfinite(self.max_difference) else "incomparable",
            "worst_differences": [d.to_dict() for d in self.worst],
            "error": self.error,
            "passed": self.passed,
        }


@dataclass
class ValidationReport:
    model: str
    target: str
    seed: int
    timeout_s: float
    started_at: str
    duration_s: float
    cases: list[CaseResult]
    parity: ParityResult
    artifact_digest: str | None = None
    folder: Path | None = None

    @property
    def passed(self) -> bool:
        return all(c.status != FAIL for c in self.cases) and self.parity.passed

    @property
    def failures(self) -> list[CaseResult]:
        return [c for c in self.cases if c.status == FAIL]

    def counts(self) -> dict[str, int]:
        out = {PASS: 0, FAIL: 0, SKIP: 0}
        for c in self.cases:
            out[c.status] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "scoregate.validation",
            "ref": self.model,
            "model": self.model,
            "artifact_digest": self.artifact_digest,
            "target": self.target,
            "seed": self.seed,
            "timeout_s": self.timeout_s,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "passed": self.passed,
            "counts": self.counts(),
            "failures": [{"case": c.case.id, "reason": c.reason} for c in self.failures],
            "parity": self.parity.to_dict(),
            "cases": [c.to_dict() for c in self.cases],
        }

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(
            self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
        )

    def write(self, folder: Path) -> Path:
        from scoregate.validation.html import render_html

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.json").write_bytes(self.to_json_bytes())
        (folder / "report.html").write_text(render_html(self))
        self.folder = folder
        return folder


# ---------------------------------------------------------------------------------------------
# Outcome checks
# ---------------------------------------------------------------------------------------------


def check_outputs(outputs: list[dict[str, Any]], n_rows: int, schema: list[OutputField]) -> str | None:
    """Why these outputs break the output schema, or ``None``."""
    if len(outputs) != n_rows:
        return f"returned {len(outputs)} output rows for {n_rows} input rows"
    for i, row in enumerate(outputs):
        if not isinstance(row, dict):
            return f"row {i}: output is not an object"
        for f in schema:
            if f.name not in row:
                return f"row {i}: output {f.name!r} is missing"
            value = row[f.name]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                if not f.nullable:
                    shown = "NaN" if value is not None else "null"
                    return f"row {i}: {shown} in output {f.name!r} where the output schema forbids it"
                continue
            problem = _type_problem(f, value)
            if problem:
                return f"row {i}: output {f.name!r}: {problem}"
            if f.name.startswith("proba_") and isinstance(value, (int, float)) and not -1e-9 <= value <= 1 + 1e-9:
                return f"row {i}: probability {f.name!r} = {value!r} is outside [0, 1]"
    return None


def _type_problem(f: OutputField, value: Any) -> str | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if f.type is FeatureType.FLOAT:
        if not number:
            return f"expected a number, got {value!r}"
        if math.isinf(value):
            return f"value {value!r} is not finite"
    elif f.type is FeatureType.INT:
        if not number or (isinstance(value, float) and not value.is_integer()):
            return f"expected an integer, got {value!r}"
    elif f.type is FeatureType.BOOL:
        if not isinstance(value, bool):
            return f"expected true or false, got {value!r}"
    elif not isinstance(value, str):
        return f"expected a string, got {value!r}"
    return None


def judge(case: Case, reply: Reply, output_schema: list[OutputField]) -> tuple[str, str]:
    """(pass|fail, reason) for one reply."""
    if reply.status == TIMEOUT:
        return FAIL, f"hung: {reply.message}"
    if reply.status == ERROR:
        return FAIL, f"crashed: {reply.message}"
    named = {str(d.get("field")) for d in reply.details if isinstance(d, dict)}
    if case.expect == EMPTY:
        if reply.status == REFUSED and "rows" in named:
            return PASS, "refused the empty batch, naming 'rows'"
        if reply.status == SCORED and not reply.outputs:
            return PASS, "returned no outputs for no rows"
        if reply.status == REFUSED:
            return FAIL, f"refused the empty batch without naming 'rows': {reply.message}"
        return FAIL, f"returned {len(reply.outputs or [])} output rows for an empty batch"
    if case.expect == REFUSE:
        if reply.status == SCORED:
            return (
                FAIL,
                f"returned a score for input that must be refused (expected rule {case.rule!r} on {case.field!r})",
            )
        if reply.http_status is not None and reply.http_status != 422:
            return FAIL, f"refused with HTTP {reply.http_status}, expected 422"
        if case.field not in named:
            return (
                FAIL,
                f"refused without naming the field {case.field!r} (named: {', '.join(sorted(named)) or 'none'})",
            )
        rules = {str(d.get("rule")) for d in reply.details if isinstance(d, dict) and d.get("field") == case.field}
        note = (
            ""
            if case.rule is None or case.rule in rules
            else f" (rule {', '.join(sorted(rules))}, expected {case.rule})"
        )
        return PASS, f"refused, naming {case.field!r}{note}"
    # SCORE
    if reply.status == REFUSED:
        return FAIL, f"refused input that must be scored: {reply.message}"
    problem = check_outputs(reply.outputs or [], len(case.rows), output_schema)
    if problem:
        return FAIL, problem
    return PASS, "scored within the output schema"


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def validate(
    registry: Any,
    ref: str,
    *,
    target: Target | None = None,
    seed: int = 0,
    timeout: float = 10.0,
    reference: str = "subprocess",
    golden: Path | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    reference_rows: int = 100,
    out_dir: Path | None = None,
) -> ValidationReport:
    """Validate version ``ref`` of ``registry`` against ``target`` (default: in-process Python).

    ``reference``: ``"subprocess"`` compares every score with the artifact loaded in a
    separate process, ``"none"`` skips that; ``golden`` adds cases with expected outputs.
    """
    if reference not in ("subprocess", "none"):
        raise ScoregateError(f"unknown reference {reference!r}: use subprocess or none")
    started = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    version = registry.resolve(ref)
    ref = version.ref
    schema = version.input_schema
    try:
        reference_frame = registry.reference_data(ref)
    except ScoregateError:
        reference_frame = None
    cases = generate_cases(schema, reference_frame, seed=seed, reference_rows=reference_rows)
    golden_expected: dict[str, dict[str, Any]] = {}
    if golden is not None:
        pairs = read_golden(Path(golden), schema.feature_names, [o.name for o in version.output_schema])
        for i, (row, expected) in enumerate(pairs):
            case = Case(id=f"golden[{i}]", kind="golden", rows=[row], expect=SCORE, description="golden file row")
            cases.append(case)
            golden_expected[case.id] = expected
    own_target = target is None
    if target is None:
        target = PythonTarget(registry.load(ref))
    results: list[CaseResult] = []
    try:
        for case in cases:
            if target.json_only and not case.json_safe:
                results.append(CaseResult(case, "skipped", SKIP, "input cannot be sent as JSON (NaN/inf)"))
                continue
            reply = target.score(case.rows, timeout)
            status, reason = judge(case, reply, version.output_schema)
            results.append(
                CaseResult(
                    case,
                    reply.status,
                    status,
                    reason,
                    http_status=reply.http_status,
                    elapsed_ms=reply.elapsed_ms,
                    refusal=reply.details if reply.status != SCORED else [],
                    outputs_sample=(reply.outputs or [])[:3] if reply.status == SCORED else [],
                )
            )
            results[-1].outputs = reply.outputs if reply.status == SCORED and status == PASS else None
    finally:
        if own_target:
            target.close()
    kinds = [k for k, on in (("subprocess", reference == "subprocess"), ("golden", bool(golden_expected))) if on]
    parity = ParityResult("+".join(kinds) or "none", atol, rtol)
    _parity(registry, ref, results, parity, golden_expected, use_subprocess=reference == "subprocess")
    report = ValidationReport(
        model=ref,
        target=target.description,
        seed=seed,
        timeout_s=timeout,
        started_at=started_at,
        duration_s=time.perf_counter() - started,
        cases=results,
        parity=parity,
        artifact_digest=version.artifact_digest,
    )
    if out_dir is not None:
        report.write(Path(out_dir))
    return report


def _parity(
    registry: Any,
    ref: str,
    results: list[CaseResult],
    parity: ParityResult,
    golden_expected: dict[str, dict[str, Any]],
    *,
    use_subprocess: bool,
) -> None:
    """Compare scored rows with the reference; a case with a difference beyond tolerance fails."""
    compared: list[tuple[CaseResult, int, dict[str, Any], dict[str, Any]]] = []  # result, row, target out, expected
    to_reference: list[tuple[CaseResult, int, dict[str, Any]]] = []
    for r in results:
        outputs = r.outputs
        if r.status != PASS or not outputs or not r.case.parity:
            continue
        if r.case.id in golden_expected:
            compared.append((r, 0, outputs[0], golden_expected[r.case.id]))
        elif use_subprocess:
            for i, out in enumerate(outputs):
                to_reference.append((r, i, out))
    if to_reference:
        rows = [r.case.rows[i] for r, i, _ in to_reference]
        try:
            expected = subprocess_reference(registry.settings, ref, rows, token=getattr(registry, "token", None))
        except (ScoregateError, OSError, ValueError) as exc:
            parity.error = f"reference scorer failed: {exc}"
            expected = []
        compared += [(r, i, out, exp) for (r, i, out), exp in zip(to_reference, expected, strict=False)]
    differences: list[Difference] = []
    rows_seen: set[tuple[str, int]] = set()
    failed: dict[str, Difference] = {}
    for r, i, out, exp in compared:
        rows_seen.add((r.case.id, i))
        for name, ref_value in exp.items():
            parity.values_compared += 1
            size = compare(out.get(name), ref_value, parity.atol, parity.rtol) if name in out else math.inf
            if size is None:
                continue
            diff = Difference(r.case.id, i, name, out.get(name), ref_value, size)
            differences.append(diff)
            if r.case.id not in failed or size > failed[r.case.id].size:
                failed[r.case.id] = diff
    parity.rows_compared = len(rows_seen)
    parity.mismatches = len(differences)
    differences.sort(key=lambda d: d.size, reverse=True)
    parity.worst = differences[:WORST_DIFFERENCES]
    parity.max_difference = differences[0].size if differences else 0.0
    for r in results:
        diff = failed.get(r.case.id)
        if diff is not None:
            r.status = FAIL
            size = f"{diff.size:.3g}" if math.isfinite(diff.size) else "incomparable"
            r.reason = (
                f"parity: output {diff.output!r} of row {diff.row} differs from the reference by {size} "
                f"(target {diff.target!r}, reference {diff.reference!r}; "
                f"tolerance atol={parity.atol:g}, rtol={parity.rtol:g})"
            )


__all__ = ["CaseResult", "ParityResult", "ValidationReport", "check_outputs", "judge", "validate"]
