"""Pre-deployment validation: generated cases, outcome checks, parity, reports.

``validate(registry, "credit-risk@3")`` runs every case against the in-process
scorer (or a :class:`Target` such as :class:`HttpTarget`) and returns a
:class:`ValidationReport` with ``.passed``, ``.write(folder)`` and ``.to_json_bytes()``.
"""

from scoregate.validation.cases import Case, generate_cases
from scoregate.validation.reference import read_golden, subprocess_reference, write_golden
from scoregate.validation.suite import CaseResult, ParityResult, ValidationReport, validate
from scoregate.validation.targets import HttpTarget, PythonTarget, Reply, Target

__all__ = [
    "Case",
    "CaseResult",
    "HttpTarget",
    "ParityResult",
    "PythonTarget",
    "Reply",
    "Target",
    "ValidationReport",
    "generate_cases",
    "read_golden",
    "subprocess_reference",
    "validate",
    "write_golden",
]
