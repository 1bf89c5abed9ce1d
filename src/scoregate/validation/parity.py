"""Parity: every scored row compared, output by output, with a reference and a golden file.

The reference (subprocess, scorer or onnx) and the golden file are two separate
comparisons, each with its own tolerance and its own worst differences; a case whose
row differs beyond tolerance in either fails, naming the output, both values and the
tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from scoregate.validation.reference import ReferenceAnswer, compare
from scoregate.validation.settings import ReferenceKind

#: How many of the largest differences a comparison lists.
WORST_DIFFERENCES = 10
RULE = "|target - reference| <= atol + rtol*|reference|"


@dataclass
class Difference:
    case_id: str
    row: int
    output: str
    target: Any
    reference: Any
    size: float
    source: str = "reference"

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
class Comparison:
    """One source of expected outputs compared with the target's, within one tolerance."""

    source: str
    atol: float
    rtol: float
    rows_compared: int = 0
    values_compared: int = 0
    differences: list[Difference] = field(default_factory=list)
    #: the largest absolute difference between two numbers, within tolerance or not: how
    #: close the two really are, which is what a tolerance should be set from
    max_observed: float = 0.0

    def add(self, case_id: str, row: int, target: dict[str, Any], expected: dict[str, Any]) -> None:
        """Compare one row: every output the source gives (an output the target lacks differs)."""
        self.rows_compared += 1
        for name, value in expected.items():
            self.values_compared += 1
            got = target.get(name)
            size = compare(got, value, self.atol, self.rtol) if name in target else math.inf
            if size is not None:
                self.differences.append(Difference(case_id, row, name, got, value, size, self.source))
            if _finite_number(got) and _finite_number(value):
                self.max_observed = max(self.max_observed, abs(float(got) - float(value)))

    @property
    def mismatches(self) -> int:
        return len(self.differences)

    @property
    def worst(self) -> list[Difference]:
        return sorted(self.differences, key=lambda d: d.size, reverse=True)[:WORST_DIFFERENCES]

    @property
    def max_difference(self) -> float:
        return max((d.size for d in self.differences), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        largest = self.max_difference
        return {
            "tolerance": {"atol": self.atol, "rtol": self.rtol, "rule": RULE},
            "rows_compared": self.rows_compared,
            "values_compared": self.values_compared,
            "mismatches": self.mismatches,
            "max_difference": largest if math.isfinite(largest) else "incomparable",
            "max_observed_difference": self.max_observed,
            "worst_differences": [d.to_dict() for d in self.worst],
        }


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class ParityResult:
    """The reference comparison (``reference`` names its kind) and, if given, the golden one.

    ``available``: the reference produced scores. ``error``: one line when it did not or
    failed part-way. A reference that cannot be built for this model (``outcome``
    ``unavailable``) does not fail parity: whether that is acceptable is the policy's call.
    """

    reference: ReferenceKind
    comparison: Comparison
    golden: Comparison | None = None
    available: bool = False
    failed: bool = False
    error: str | None = None
    rows_not_compared: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, answer: ReferenceAnswer, tolerance: tuple[float, float], golden: tuple[float, float] | None) -> Any:
        result = cls(
            reference=answer.kind,
            comparison=Comparison("reference", *tolerance),
            golden=Comparison("golden", *golden) if golden is not None else None,
            available=answer.available,
            failed=answer.failed,
            error=answer.error,
            details=answer.details,
        )
        return result

    @property
    def outcome(self) -> str:
        if self.reference is ReferenceKind.NONE:
            return "none"
        if self.failed:
            return "failed"
        return "compared" if self.available else "unavailable"

    @property
    def passed(self) -> bool:
        golden_ok = self.golden is None or self.golden.mismatches == 0
        return not self.failed and self.comparison.mismatches == 0 and golden_ok

    # the reference comparison's numbers, as the report's top-level parity fields
    @property
    def atol(self) -> float:
        return self.comparison.atol

    @property
    def rtol(self) -> float:
        return self.comparison.rtol

    @property
    def rows_compared(self) -> int:
        return self.comparison.rows_compared

    @property
    def mismatches(self) -> int:
        return self.comparison.mismatches

    @property
    def max_difference(self) -> float:
        return self.comparison.max_difference

    @property
    def worst(self) -> list[Difference]:
        return self.comparison.worst

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference.value,
            "independent": self.reference.independent,
            "available": self.available,
            "outcome": self.outcome,
            "error": self.error,
            **self.comparison.to_dict(),
            "rows_not_compared": self.rows_not_compared,
            "details": self.details,
            "golden": self.golden.to_dict() if self.golden is not None else None,
            "passed": self.passed,
        }


__all__ = ["Comparison", "Difference", "ParityResult"]
