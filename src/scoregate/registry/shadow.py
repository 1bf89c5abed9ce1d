"""A shadow's outputs beside the decisions they shadowed, read from the prediction log.

The server logs a shadow's rows with the primary decision's server request id and row
number and ``shadow=true``, so the pair is a join on ``(request_id, row)``. This module is
that join and its summary, a pure function of the log's rows: the CLI
(``scoregate predictions REF --compare-shadow``) and the Python API print or return it.

What is compared: every output field both versions return. A field whose values are
numbers on both sides (a probability, a score) is compared by the absolute difference; any
other field (a class label) by equality. A primary row without a shadow row is counted, not
hidden: the shadow samples (``--shadow-sample``) and drops copies under back-pressure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

KEY = ["request_id", "row"]


@dataclass(frozen=True, slots=True)
class FieldDifference:
    """How one output field differs between the primary and the shadow, over every pair."""

    name: str
    numeric: bool
    pairs: int
    #: The share of pairs with equal values (for a numeric field: exactly equal).
    agreement: float
    mean_abs_difference: float | None = None
    max_abs_difference: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.name,
            "numeric": self.numeric,
            "pairs": self.pairs,
            "agreement": self.agreement,
            "mean_abs_difference": self.mean_abs_difference,
            "max_abs_difference": self.max_abs_difference,
        }


@dataclass(frozen=True, slots=True)
class ShadowComparison:
    """The paired rows (a DataFrame: request and row, both versions, both outputs) and a summary."""

    pairs: Any
    primary_rows: int
    unshadowed_rows: int
    fields: list[FieldDifference] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        lines = [
            f"{len(self.pairs)} of {self.primary_rows} primary rows have a shadow row"
            + (f" ({self.unshadowed_rows} not shadowed: sampled out or dropped)" if self.unshadowed_rows else "")
        ]
        for f in self.fields:
            text = f"{f.name}: {f.agreement:.2%} equal"
            if f.numeric and f.mean_abs_difference is not None:
                text += f", mean |difference| {f.mean_abs_difference:.6g}, max {f.max_abs_difference:.6g}"
            lines.append(text)
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "pairs": len(self.pairs),
            "primary_rows": self.primary_rows,
            "unshadowed_rows": self.unshadowed_rows,
            "fields": [f.to_json() for f in self.fields],
        }


def compare_shadow(log: Any, primary_version: int | None = None) -> ShadowComparison:
    """Pair each primary row of ``log`` (rows of one model, as :func:`read_predictions` returns
    them, outputs decoded) with its shadow row; ``primary_version`` keeps the decisions of one
    version only (the version an alias named)."""
    primary = log[~log["shadow"].astype(bool)]
    if primary_version is not None:
        primary = primary[primary["version"] == int(primary_version)]
    shadow = log[log["shadow"].astype(bool)]
    kept = [*KEY, "timestamp", "client_request_id", "version", "outputs"]
    pairs = primary[kept].merge(
        shadow[[*KEY, "version", "outputs"]], on=KEY, how="inner", suffixes=("", "_shadow"), validate="one_to_one"
    )
    pairs = pairs.rename(columns={"version": "primary_version", "outputs": "primary_outputs"})
    pairs = pairs.rename(columns={"version_shadow": "shadow_version", "outputs_shadow": "shadow_outputs"})
    pairs = pairs.sort_values(["timestamp", *KEY], kind="stable").reset_index(drop=True)
    fields = _field_differences(pairs["primary_outputs"].tolist(), pairs["shadow_outputs"].tolist())
    return ShadowComparison(pairs, len(primary), len(primary) - len(pairs), fields)


def _field_differences(primary: list[dict[str, Any]], shadow: list[dict[str, Any]]) -> list[FieldDifference]:
    names: list[str] = []
    for p, s in zip(primary, shadow, strict=True):
        names.extend(n for n in p if n in s and n not in names)
    out = []
    for name in names:
        values = [(p[name], s[name]) for p, s in zip(primary, shadow, strict=True) if name in p and name in s]
        numeric = all(_is_number(a) and _is_number(b) for a, b in values)
        equal = sum(1 for a, b in values if a == b)
        if numeric:
            diffs = [abs(float(a) - float(b)) for a, b in values]
            finite = [d for d in diffs if math.isfinite(d)]
            mean = sum(finite) / len(finite) if finite else None
            top = max(finite) if finite else None
            out.append(FieldDifference(name, True, len(values), equal / len(values), mean, top))
        else:
            out.append(FieldDifference(name, False, len(values), equal / len(values)))
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
