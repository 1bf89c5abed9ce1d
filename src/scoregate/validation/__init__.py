"""Pre-deployment validation: generated cases, deeper checks, parity with a reference, reports.

``validate(registry, "credit-risk@3")`` runs every case against the in-process
scorer (or a :class:`Target` such as :class:`HttpTarget`), compares the scores with a
reference (:class:`ReferenceKind`), runs the checks (:data:`CHECKS`) and returns a
:class:`ValidationReport` with ``.passed``, ``.write(folder)`` and ``.to_json_bytes()``.
Its settings are one :class:`ValidationSettings`; :func:`case_set_digest` recomputes
the digest of the generated cases a report names.
"""

from scoregate.validation.cases import Case, case_set_digest, generate_cases
from scoregate.validation.checks import CHECKS, CheckContext
from scoregate.validation.golden import read_golden, write_golden
from scoregate.validation.parity import ParityResult
from scoregate.validation.reference import subprocess_reference
from scoregate.validation.report import CaseResult, CheckResult, ValidationReport
from scoregate.validation.settings import ReferenceKind, TargetKind, ValidationSettings
from scoregate.validation.suite import validate
from scoregate.validation.targets import HttpTarget, PythonTarget, Reply, Target

__all__ = [
    "CHECKS",
    "Case",
    "CaseResult",
    "CheckContext",
    "CheckResult",
    "HttpTarget",
    "ParityResult",
    "PythonTarget",
    "ReferenceKind",
    "Reply",
    "Target",
    "TargetKind",
    "ValidationReport",
    "ValidationSettings",
    "case_set_digest",
    "generate_cases",
    "read_golden",
    "subprocess_reference",
    "validate",
    "write_golden",
]
