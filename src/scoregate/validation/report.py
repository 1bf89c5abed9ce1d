"""The validation report: what ran, with what settings, and the outcome of each case and check.

``report.json`` (format 2) is the contract with the policy gate, which derives its
verdict from the recorded facts (digests, settings, statuses) rather than from
``passed``, which is informational:

``kind``, ``format``, ``ref``, ``artifact_digest``, ``schema_digest`` (the version's
whole contract, :meth:`ModelSchema.contract_digest`), ``settings`` (every setting the
run used, with ``reference_scorer_digest`` and ``golden_digest``), ``case_set``
(``digest`` of the generated cases, which :func:`case_set_digest` recomputes; their
count; count by kind; golden cases are extra and named by ``golden_digest``), ``cases``,
``checks`` (``id``, ``status``, ``expect``, ``reason``, ``details``), ``parity``,
``passed``, ``stopped`` (why the run ended early, or null), ``duration_s``,
``started_at`` and ``seed``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from scoregate.validation.cases import Case
from scoregate.validation.judge import FAIL, PASS, SKIP
from scoregate.validation.parity import ParityResult
from scoregate.validation.settings import ValidationSettings

FORMAT = 2


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
    #: every output row of a scored case (kept for parity and the checks, not written to the report)
    outputs: list[dict[str, Any]] | None = field(default=None, repr=False)
    #: the outputs are within the output contract (the case's own judgement, before parity)
    conforms: bool = False

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
class CheckResult:
    """One deeper check: what it expects, whether the model met it, and the evidence."""

    id: str
    status: str  # pass / fail / skip
    expect: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "expect": self.expect,
            "reason": self.reason,
            "details": self.details,
        }


@dataclass
class ValidationReport:
    model: str
    target: str
    settings: ValidationSettings
    started_at: str
    duration_s: float
    cases: list[CaseResult]
    parity: ParityResult
    checks: list[CheckResult] = field(default_factory=list)
    case_set: dict[str, Any] = field(default_factory=dict)
    artifact_digest: str | None = None
    schema_digest: str | None = None
    golden_digest: str | None = None
    reference_scorer_digest: str | None = None
    stopped: str | None = None
    folder: Path | None = None

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def timeout_s(self) -> float:
        return self.settings.timeout_s

    @property
    def passed(self) -> bool:
        return (
            self.stopped is None
            and all(c.status != FAIL for c in self.cases)
            and all(c.status != FAIL for c in self.checks)
            and self.parity.passed
        )

    @property
    def failures(self) -> list[CaseResult]:
        return [c for c in self.cases if c.status == FAIL]

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == FAIL]

    def check(self, check_id: str) -> CheckResult:
        return next(c for c in self.checks if c.id == check_id)

    def counts(self) -> dict[str, int]:
        out = {PASS: 0, FAIL: 0, SKIP: 0}
        for c in self.cases:
            out[c.status] += 1
        return out

    def settings_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self.settings, f.name) for f in dataclasses.fields(self.settings)}
        return {
            "target": values["target"].value,
            "reference": values["reference"].value,
            "reference_scorer_digest": self.reference_scorer_digest,
            "golden_digest": self.golden_digest,
            **{
                name: values[name]
                for name in (
                    "atol",
                    "rtol",
                    "independent_atol",
                    "independent_rtol",
                    "timeout_s",
                    "max_duration_s",
                    "latency_budget_ms",
                    "memory_calls",
                    "memory_limit_mb",
                    "seed",
                    "reference_rows",
                )
            },
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "scoregate.validation",
            "format": FORMAT,
            "ref": self.model,
            "model": self.model,
            "artifact_digest": self.artifact_digest,
            "schema_digest": self.schema_digest,
            "settings": self.settings_dict(),
            "case_set": self.case_set,
            "target": self.target,
            "seed": self.seed,
            "timeout_s": self.timeout_s,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "passed": self.passed,
            "stopped": self.stopped,
            "counts": self.counts(),
            "failures": [{"case": c.case.id, "reason": c.reason} for c in self.failures],
            "checks": [c.to_dict() for c in self.checks],
            "parity": self.parity.to_dict(),
            "cases": [c.to_dict() for c in self.cases],
        }

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(
            self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
        )

    def write(self, folder: Path) -> Path:
        """Write report.json and report.html into ``folder``, each by an atomic rename."""
        from scoregate.validation.html import render_html

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(folder / "report.json", self.to_json_bytes())
        _write_atomic(folder / "report.html", render_html(self).encode())
        self.folder = folder
        return folder


def _write_atomic(path: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def probe_folder(folder: Path) -> None:
    """Create ``folder`` and prove a file can be written there, before a run that ends by writing it."""
    from scoregate.errors import InvalidInputError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write the report to {folder}: {exc.strerror or type(exc).__name__}"
            + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(folder) else "")
        ) from None


__all__ = ["CaseResult", "CheckResult", "ValidationReport", "probe_folder"]
