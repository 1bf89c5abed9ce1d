"""Run a validation: the generated cases against a target, parity with a reference, the deeper checks.

Everything is bounded: each call of the target by the per-case timeout, the reference
process by its own wall-clock bound, and the whole run by ``max_duration_s``. A model
that hangs ends the run early (after :data:`MAX_CONSECUTIVE_TIMEOUTS` hung cases in a
row, or at the run's bound) with a report of what ran and ``stopped`` saying why.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import threading
from pathlib import Path
from typing import Any

from scoregate.errors import InvalidInputError, ScoregateError
from scoregate.validation.cases import SCORE, Case, describe_cases, generate_cases, probe_rows
from scoregate.validation.checks import PROBE_ROWS, CheckContext, run_checks
from scoregate.validation.golden import Golden, load_golden
from scoregate.validation.judge import FAIL, PASS, SKIP, check_outputs, judge
from scoregate.validation.parity import ParityResult
from scoregate.validation.reference import ReferenceAnswer, score_reference
from scoregate.validation.report import CaseResult, ValidationReport, probe_folder
from scoregate.validation.settings import Clock, ReferenceKind, TargetKind, ValidationSettings
from scoregate.validation.targets import SCORED, TIMEOUT, PythonTarget, Target

#: Hung cases in a row after which the run stops: a model that hangs once usually hangs
#: again, and every further case would cost a full timeout.
MAX_CONSECUTIVE_TIMEOUTS = 3
NOT_RUN = "not run"


def validate(
    registry: Any,
    ref: str,
    *,
    target: Target | None = None,
    settings: ValidationSettings | None = None,
    out_dir: Path | None = None,
    **keywords: Any,
) -> ValidationReport:
    """Validate version ``ref`` of ``registry`` against ``target`` (default: the in-process scorer).

    Give ``settings`` or their fields as keywords (``seed=``, ``timeout_s=``, ``reference=``,
    ``golden=``, ...; see :class:`ValidationSettings`). Bad settings, a golden file that is
    not one and an ``out_dir`` that cannot be written are refused before anything runs.
    """
    if settings is not None and keywords:
        raise InvalidInputError(f"give settings or keywords, not both (got {', '.join(sorted(keywords))})")
    settings = settings if settings is not None else ValidationSettings.from_keywords(**keywords)
    clock = Clock(settings.max_duration_s)
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    version = registry.resolve(ref)
    golden = _golden(settings, version)
    scorer_digest = _scorer_digest(settings.reference_scorer)
    if out_dir is not None:
        probe_folder(Path(out_dir))
    kind = TargetKind(getattr(target, "kind", TargetKind.PYTHON)) if target is not None else TargetKind.PYTHON
    settings = settings.resolved(target=kind, latency_budget_ms=version.latency_budget_ms)
    try:
        reference_frame = registry.reference_data(version.ref)
    except ScoregateError:
        reference_frame = None
    schema = version.input_schema
    cases = generate_cases(schema, reference_frame, seed=settings.seed, reference_rows=settings.reference_rows)
    case_set = describe_cases(cases)
    golden_expected: dict[str, dict[str, Any]] = {}
    for i, (row, expected) in enumerate(golden.pairs if golden else []):
        case = Case(id=f"golden[{i}]", kind="golden", rows=[row], expect=SCORE, description="golden file row")
        cases.append(case)
        golden_expected[case.id] = expected

    stopped: str | None = None
    own_target = target is None
    if target is None:
        target, stopped = _load_target(registry, version.ref, clock)
    try:
        results, stopped = run_cases(cases, target, schema.trusted_outputs(), settings, clock, stopped)
        parity = run_parity(registry, version, results, golden_expected, settings, clock, scorer_digest)
        context = CheckContext(
            settings=settings,
            version=version,
            target=target,  # type: ignore[arg-type]
            results=results,
            reference=reference_frame,
            probe=probe_rows(schema, reference_frame, settings.seed, PROBE_ROWS),
            clock=clock,
        )
        checks = run_checks(context, stopped)
    finally:
        if own_target and target is not None:
            target.close()
    report = ValidationReport(
        model=version.ref,
        target=target.description if target is not None else f"python (in-process scorer of {version.ref})",
        settings=settings,
        started_at=started_at,
        duration_s=clock.elapsed(),
        cases=results,
        parity=parity,
        checks=checks,
        case_set=case_set,
        artifact_digest=version.artifact_digest,
        schema_digest=schema.contract_digest(),
        golden_digest=golden.digest if golden else None,
        reference_scorer_digest=scorer_digest,
        stopped=stopped,
    )
    if out_dir is not None:
        report.write(Path(out_dir))
    return report


def _golden(settings: ValidationSettings, version: Any) -> Golden | None:
    if settings.golden is None:
        return None
    return load_golden(settings.golden, version.input_schema.feature_names, [o.name for o in version.output_schema])


def _scorer_digest(path: Path | None) -> str | None:
    """SHA-256 of the validator's scorer file, which must be a readable .py file."""
    if path is None:
        return None
    if path.suffix != ".py":
        raise InvalidInputError(f"reference scorer {path}: expected a .py file")
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise InvalidInputError(f"reference scorer {path} does not exist") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read reference scorer {path}: {exc.strerror}") from None


def _load_target(registry: Any, ref: str, clock: Clock) -> tuple[Target | None, str | None]:
    """The in-process target, loaded on a daemon thread so a model that hangs while loading cannot hang the run."""
    box: list[Any] = []

    def load() -> None:
        try:
            box.append(registry.load(ref))
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=load, name="validation-load", daemon=True)
    thread.start()
    thread.join(clock.remaining())
    if not box:
        return None, f"loading {ref} did not finish within the run's bound of {clock.max_duration_s:g} s"
    if isinstance(box[0], BaseException):
        raise box[0]
    return PythonTarget(box[0]), None


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------


def run_cases(
    cases: list[Case],
    target: Target | None,
    outputs: list[Any],
    settings: ValidationSettings,
    clock: Clock,
    stopped: str | None = None,
) -> tuple[list[CaseResult], str | None]:
    """Each case's result, and why the run stopped early (or ``None``)."""
    results: list[CaseResult] = []
    hung_in_a_row = 0
    for case in cases:
        if stopped is None and clock.expired:
            stopped = clock.stop_reason()
        if stopped is not None or target is None:
            results.append(CaseResult(case, NOT_RUN, SKIP, f"not run: {stopped}"))
            continue
        if target.json_only and not case.json_safe:
            results.append(CaseResult(case, "skipped", SKIP, "input cannot be sent as JSON (NaN/inf)"))
            continue
        timeout = clock.bound(settings.timeout_s)
        reply = target.score(case.rows, timeout)
        if reply.status == TIMEOUT and timeout < settings.timeout_s:
            stopped = clock.stop_reason()
            results.append(CaseResult(case, NOT_RUN, SKIP, f"cut short: {stopped}", elapsed_ms=reply.elapsed_ms))
            continue
        status, reason = judge(case, reply, outputs)
        scored = reply.status == SCORED
        results.append(
            CaseResult(
                case,
                reply.status,
                status,
                reason,
                http_status=reply.http_status,
                elapsed_ms=reply.elapsed_ms,
                refusal=reply.details if not scored else [],
                outputs_sample=(reply.outputs or [])[:3] if scored else [],
                outputs=reply.outputs if scored else None,
                conforms=scored and case.expect == SCORE and status == PASS,
            )
        )
        hung_in_a_row = hung_in_a_row + 1 if reply.status == TIMEOUT else 0
        if hung_in_a_row >= MAX_CONSECUTIVE_TIMEOUTS:
            stopped = (
                f"the model hung: {hung_in_a_row} cases in a row gave no answer within {settings.timeout_s:g} s "
                "(timeout_s)"
            )
    return results, stopped


# ---------------------------------------------------------------------------------------------
# Parity
# ---------------------------------------------------------------------------------------------


def run_parity(
    registry: Any,
    version: Any,
    results: list[CaseResult],
    golden_expected: dict[str, dict[str, Any]],
    settings: ValidationSettings,
    clock: Clock,
    scorer_digest: str | None,
) -> ParityResult:
    """Compare scored rows with the reference and the golden file; a case with a difference beyond tolerance fails."""
    comparable = [r for r in results if r.status == PASS and r.conforms and r.outputs and r.case.parity]
    to_reference = [
        (r, i, out) for r in comparable if r.case.id not in golden_expected for i, out in enumerate(r.outputs or [])
    ]
    if to_reference or settings.reference is ReferenceKind.NONE:
        rows = [r.case.rows[i] for r, i, _ in to_reference]
        answer = score_reference(registry, version, rows, settings, clock, scorer_digest=scorer_digest)
    else:
        answer = ReferenceAnswer(settings.reference, error="nothing to compare: no case scored within the contract")
    parity = ParityResult.start(
        answer, settings.tolerance(settings.reference), (settings.atol, settings.rtol) if golden_expected else None
    )
    if answer.available:
        for (r, i, out), expected in zip(to_reference, answer.outputs, strict=True):
            if expected is None:
                parity.rows_not_compared += 1
            else:
                parity.comparison.add(r.case.id, i, out, expected)
    if parity.golden is not None:
        for r in comparable:
            if r.case.id in golden_expected:
                parity.golden.add(r.case.id, 0, (r.outputs or [{}])[0], golden_expected[r.case.id])
    _fail_differing_cases(results, parity)
    return parity


def _fail_differing_cases(results: list[CaseResult], parity: ParityResult) -> None:
    comparisons = [parity.comparison] + ([parity.golden] if parity.golden is not None else [])
    worst: dict[str, tuple[Any, Any]] = {}
    for comparison in comparisons:
        for d in comparison.differences:
            if d.case_id not in worst or d.size > worst[d.case_id][0].size:
                worst[d.case_id] = (d, comparison)
    for r in results:
        if r.case.id not in worst:
            continue
        diff, comparison = worst[r.case.id]
        size = f"{diff.size:.3g}" if math.isfinite(diff.size) else "incomparable"
        source = "the golden file" if comparison.source == "golden" else f"the {parity.reference} reference"
        r.status = FAIL
        r.reason = (
            f"parity: output {diff.output!r} of row {diff.row} differs from {source} by {size} "
            f"(target {diff.target!r}, reference {diff.reference!r}; "
            f"tolerance atol={comparison.atol:g}, rtol={comparison.rtol:g})"
        )


__all__ = ["CaseResult", "ParityResult", "ValidationReport", "check_outputs", "judge", "run_cases", "validate"]
