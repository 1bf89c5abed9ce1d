"""Test cases generated from a version's input schema and reference data.

Every case states what must happen: ``score`` (outputs within the output schema),
``refuse`` (a clear refusal naming ``field``) or ``empty`` (an empty batch: no
outputs, or a refusal naming ``rows``). Generation is deterministic for a seed, so
a report can be rerun exactly.

The cases follow the contract's split: just past a validity limit is refused; just
past the range observed in training (and an unknown level of an open category) must
be scored and flagged (``flag``), because a rule refuses and a profile only flags.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

import numpy as np
import pandas as pd

from scoregate.schema import (
    NUMERIC_TYPES,
    Feature,
    FeatureType,
    FlagKind,
    ModelSchema,
    RecordValidator,
    UnseenCategories,
)

SCORE = "score"
REFUSE = "refuse"
EMPTY = "empty"

#: Rows in the "large batch" case.
LARGE_BATCH_ROWS = 2000
#: Reference rows scored one batch each (so a parity difference names its row).
REFERENCE_SAMPLE_ROWS = 100


@dataclass
class Case:
    """One request and the outcome it must get."""

    id: str
    kind: str
    rows: list[dict[str, Any]]
    expect: str
    feature: str | None = None
    field: str | None = None  # for refusals: the field the refusal must name
    rule: str | None = None  # for refusals: the rule we expect (reported, not required)
    json_safe: bool = True  # False: the input cannot be sent as JSON (NaN, inf)
    description: str = ""
    parity: bool = True  # compare the scores with the reference scorer
    extra: dict[str, Any] = dataclass_field(default_factory=dict)
    flag: str | None = None  # for scores: the FlagKind every row must carry for ``feature``

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "feature": self.feature,
            "expect": self.expect,
            "expected_field": self.field,
            "expected_rule": self.rule,
            "rows": len(self.rows),
            "description": self.description,
        }
        if self.flag is not None:
            out["expected_flag"] = self.flag
        if len(self.rows) <= 5:
            out["input"] = [_json_safe_row(r) for r in self.rows]
        return out


def _json_safe_row(row: Any) -> Any:
    if not isinstance(row, dict):
        return row
    return {k: (repr(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def to_json_value(value: Any) -> Any:
    """A reference-data cell as the JSON value a client would send."""
    if value is None:
        return None
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def frame_to_rows(schema: ModelSchema, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The schema's features of ``frame`` as JSON-like rows (extra columns dropped)."""
    names = [n for n in schema.feature_names if n in frame.columns]
    rows = []
    for values in frame[names].itertuples(index=False, name=None):
        rows.append({name: to_json_value(v) for name, v in zip(names, values, strict=True)})
    for row in rows:
        for f in schema.features:
            if f.type is FeatureType.INT and isinstance(row.get(f.name), float) and row[f.name].is_integer():
                row[f.name] = int(row[f.name])
    return rows


def synthetic_row(schema: ModelSchema) -> dict[str, Any]:
    """A valid row built from the schema alone (middle of the range, first category)."""
    row: dict[str, Any] = {}
    for f in schema.features:
        row[f.name] = _typical(f)
    return row


def _typical(f: Feature) -> Any:
    if f.type in NUMERIC_TYPES:
        low, high = f.minimum, f.maximum
        o = f.observed
        if o is not None and o.minimum is not None and o.maximum is not None:
            value = (o.minimum + o.maximum) / 2
        elif low is not None and high is not None:
            value = (low + high) / 2
        elif low is not None:
            value = low
        elif high is not None:
            value = high
        else:
            value = 0.0
        if f.type is FeatureType.INT:
            value = round(value)
            if low is not None and value < low:
                value = math.ceil(low)
            if high is not None and value > high:
                value = math.floor(high)
            return int(value)
        return float(value)
    if f.type is FeatureType.BOOL:
        return False
    if f.type is FeatureType.CATEGORY:
        return (f.categories or [""])[0]
    if f.type is FeatureType.DATETIME:
        return dt.datetime(2024, 1, 1, 12, 0).isoformat()
    return "text"


def base_row(schema: ModelSchema, reference: list[dict[str, Any]], rng: np.random.Generator) -> dict[str, Any]:
    """A typical valid row: a complete reference row if there is one, else a synthetic one."""
    validator = RecordValidator(schema)
    complete = [
        r for r in reference if all(r.get(n) is not None for n in schema.feature_names) and not validator.check(r)
    ]
    if complete:
        return dict(complete[int(rng.integers(len(complete)))])
    return synthetic_row(schema)


def _outside_step(f: Feature) -> float:
    if f.type is FeatureType.INT:
        return 1.0
    span = (f.maximum - f.minimum) if f.minimum is not None and f.maximum is not None else 0.0
    bound = max(abs(f.minimum or 0.0), abs(f.maximum or 0.0))
    return max(span * 1e-6, bound * 1e-9, 1e-9)


def _observed_step(f: Feature, low: float, high: float) -> float:
    """A step past the observed range: small, yet a value every model sees as outside."""
    if f.type is FeatureType.INT:
        return 1.0
    return max((high - low) * 1e-3, max(abs(low), abs(high)) * 1e-9, 1e-9)


def _observed_far(f: Feature, low: float, high: float) -> float:
    """How far past the observed range the "far" cases go: as far again as the range is wide,
    a sane number (a 1e300 income tells nothing about a model but how its arithmetic overflows)."""
    return float(max(high - low, 1.0))


def _number(f: Feature, value: float) -> Any:
    return int(value) if f.type is FeatureType.INT else float(value)


def feature_cases(schema: ModelSchema, base: dict[str, Any], reference: list[dict[str, Any]]) -> list[Case]:
    cases: list[Case] = []

    def with_value(f: Feature, value: Any) -> list[dict[str, Any]]:
        row = dict(base)
        row[f.name] = value
        return [row]

    def outside_observed(f: Feature) -> None:
        """Past the observed range but within the validity limits: scored, and flagged."""
        o = f.observed
        if o is None or o.minimum is None or o.maximum is None:
            return
        low, high = o.minimum, o.maximum
        step, far = _observed_step(f, low, high), _observed_far(f, low, high)
        for kind, value, flag, words in (
            ("below_observed", low - step, FlagKind.BELOW_OBSERVED, "just below the lowest value in training"),
            ("far_below_observed", low - far, FlagKind.BELOW_OBSERVED, "far below the lowest value in training"),
            ("above_observed", high + step, FlagKind.ABOVE_OBSERVED, "just above the highest value in training"),
            ("far_above_observed", high + far, FlagKind.ABOVE_OBSERVED, "far above the highest value in training"),
        ):
            number = _number(f, math.floor(value) if flag is FlagKind.BELOW_OBSERVED else math.ceil(value))
            if f.type is FeatureType.FLOAT:
                number = float(value)
            if (f.minimum is not None and number < f.minimum) or (f.maximum is not None and number > f.maximum):
                continue  # past a validity limit too: the limit's own cases cover it
            if (kind == "far_below_observed" and low >= 0 > number) or (
                kind == "far_above_observed" and high <= 0 < number
            ):
                continue  # far enough to change sign (a negative income): the step past the range covers it
            add(f, kind, number, SCORE, flag=flag.value, description=f"{number!r}, {words}: scored and flagged")

    def add(f: Feature, kind: str, value: Any, expect: str, rule: str | None = None, **kw: Any) -> None:
        cases.append(
            Case(
                id=f"{f.name}:{kind}",
                kind=kind,
                feature=f.name,
                rows=kw.pop("rows", None) or with_value(f, value),
                expect=expect,
                field=f.name if expect == REFUSE else None,
                rule=rule,
                **kw,
            )
        )

    for f in schema.features:
        observed = [r[f.name] for r in reference if r.get(f.name) is not None]
        # typical values
        if f.type in NUMERIC_TYPES:
            if observed:
                median = float(np.median(np.asarray(observed, dtype=float)))
                typical = _number(f, round(median) if f.type is FeatureType.INT else median)
            else:
                typical = _typical(f)
            add(f, "typical", typical, SCORE, description=f"median observed value {typical!r}")
            if f.minimum is not None:
                add(f, "minimum", _number(f, f.minimum), SCORE, description=f"exactly the minimum {f.minimum!r}")
                below = _number(f, f.minimum - _outside_step(f))
                add(f, "below_minimum", below, REFUSE, "minimum", description=f"{below!r}, just below the minimum")
                add(
                    f, "extreme_negative", _number(f, -1e18 if f.type is FeatureType.INT else -1e300), REFUSE, "minimum"
                )
            elif f.observed is None:
                add(
                    f,
                    "extreme_negative",
                    _number(f, -(10**18) if f.type is FeatureType.INT else -1e300),
                    SCORE,
                    description="no minimum: a huge negative value must still score",
                )
            if f.maximum is not None:
                add(f, "maximum", _number(f, f.maximum), SCORE, description=f"exactly the maximum {f.maximum!r}")
                above = _number(f, f.maximum + _outside_step(f))
                add(f, "above_maximum", above, REFUSE, "maximum", description=f"{above!r}, just above the maximum")
                add(
                    f, "extreme_positive", _number(f, 10**18 if f.type is FeatureType.INT else 1e300), REFUSE, "maximum"
                )
            elif f.observed is None:
                add(
                    f,
                    "extreme_positive",
                    _number(f, 10**18 if f.type is FeatureType.INT else 1e300),
                    SCORE,
                    description="no maximum: a huge value must still score",
                )
            outside_observed(f)
            add(f, "wrong_type_string", "abc", REFUSE, "type")
            add(f, "wrong_type_bool", True, REFUSE, "type")
            if f.type is FeatureType.INT:
                add(f, "wrong_type_fraction", float(typical) + 0.5, REFUSE, "type")
            add(f, "not_finite_nan", float("nan"), REFUSE, "finite", json_safe=False)
            add(f, "not_finite_inf", float("inf"), REFUSE, "finite", json_safe=False)
        elif f.type is FeatureType.CATEGORY:
            for level in f.categories or []:
                add(f, f"category={level}", level, SCORE, description=f"allowed category {level!r}")
            if f.unseen is UnseenCategories.SCORE:
                add(
                    f,
                    "unseen_category",
                    "__unseen_category__",
                    SCORE,
                    flag=FlagKind.UNSEEN_CATEGORY.value,
                    description="a level unknown in training: the model takes it, so it is scored and flagged",
                )
            else:
                add(f, "unseen_category", "__unseen_category__", REFUSE, "categories")
            add(f, "wrong_type_number", 3, REFUSE, "type")
        elif f.type is FeatureType.BOOL:
            add(f, "true", True, SCORE)
            add(f, "false", False, SCORE)
            add(f, "wrong_type_string", "yes", REFUSE, "type")
            add(f, "wrong_type_number", 1, REFUSE, "type")
        elif f.type is FeatureType.DATETIME:
            add(f, "typical", observed[0] if observed else _typical(f), SCORE)
            add(f, "wrong_type_text", "not-a-date", REFUSE, "type")
            add(f, "wrong_type_number", 12, REFUSE, "type")
        else:  # string
            add(f, "typical", observed[0] if observed else "text", SCORE)
            add(f, "empty_string", "", SCORE)
            add(f, "long_string", "x" * 10_000, SCORE)
            add(f, "wrong_type_number", 5, REFUSE, "type")
        # missing and null
        missing_row = {k: v for k, v in base.items() if k != f.name}
        if f.nullable:
            add(f, "null", None, SCORE, description="null for a nullable feature must be scored")
            add(f, "missing", None, SCORE, rows=[missing_row], description="absent key for a nullable feature")
        else:
            add(f, "null", None, REFUSE, "required")
            add(f, "missing", None, REFUSE, "required", rows=[missing_row])
    return cases


def batch_cases(
    schema: ModelSchema, base: dict[str, Any], reference: list[dict[str, Any]], rng: np.random.Generator
) -> list[Case]:
    pool = reference or [base]
    valid = RecordValidator(schema)
    pool = [r for r in pool if not valid.check(r)] or [base]
    picks = rng.integers(len(pool), size=LARGE_BATCH_ROWS)
    large = [dict(pool[int(i)]) for i in picks]
    cases = [
        Case(
            id="batch:empty",
            kind="empty",
            rows=[],
            expect=EMPTY,
            field="rows",
            description="no rows: an empty result or a refusal naming 'rows'",
        ),
        Case(
            id="batch:large",
            kind="large",
            rows=large,
            expect=SCORE,
            description=f"{LARGE_BATCH_ROWS} rows drawn from the reference data",
        ),
        Case(
            id="extra_field",
            kind="extra_field",
            rows=[{**base, "__not_a_feature__": 1}],
            expect=REFUSE,
            field="__not_a_feature__",
            rule="undeclared",
            description="an undeclared field is refused, naming it (it is never scored nor logged)",
        ),
    ]
    # one bad row among good ones: the whole request is refused, naming the field
    first = schema.features[0]
    bad = dict(base)
    bad[first.name] = {"nested": "object"}
    cases.append(
        Case(
            id="batch:one_bad_row",
            kind="mixed",
            rows=[dict(base), bad, dict(base)],
            expect=REFUSE,
            feature=first.name,
            field=first.name,
            rule="type",
            description="a batch with one malformed row is refused as a whole",
        )
    )
    cases.append(
        Case(
            id="row:not_an_object",
            kind="not_object",
            rows=["not a row"],
            expect=REFUSE,  # type: ignore[list-item]
            field="<row>",
            rule="type",
        )
    )
    return cases


def reference_cases(reference: list[dict[str, Any]], rng: np.random.Generator, n: int) -> list[Case]:
    if not reference:
        return []
    size = min(n, len(reference))
    picks = sorted(rng.choice(len(reference), size=size, replace=False).tolist())
    rows = [dict(reference[i]) for i in picks]
    return [
        Case(
            id="reference:sample",
            kind="reference",
            rows=rows,
            expect=SCORE,
            description=f"{size} rows sampled from the version's reference data",
            extra={"reference_index": picks},
        )
    ]


def generate_cases(
    schema: ModelSchema,
    reference: pd.DataFrame | None,
    *,
    seed: int = 0,
    reference_rows: int = REFERENCE_SAMPLE_ROWS,
) -> list[Case]:
    """Every case for ``schema``: per-feature, batch-level and sampled reference rows."""
    rng = np.random.default_rng(seed)
    ref_rows = frame_to_rows(schema, reference) if reference is not None and len(reference) else []
    base = base_row(schema, ref_rows, rng)
    cases = [
        Case(id="typical_row", kind="typical", rows=[dict(base)], expect=SCORE, description="one complete valid row")
    ]
    cases += feature_cases(schema, base, ref_rows)
    cases += batch_cases(schema, base, ref_rows, rng)
    cases += reference_cases(ref_rows, rng, reference_rows)
    seen: set[str] = set()
    for case in cases:  # ids must be unique for the report
        if case.id in seen:
            raise AssertionError(f"duplicate case id {case.id}")
        seen.add(case.id)
    return cases


def case_set_digest(
    schema: ModelSchema,
    reference: pd.DataFrame | None,
    seed: int = 0,
    reference_rows: int = REFERENCE_SAMPLE_ROWS,
) -> str:
    """SHA-256 of the canonical list of the cases generated for these inputs.

    Pure: a gate holding the version's schema and reference data recomputes it from the
    report's seed and ``reference_rows`` and so knows the report ran the cases scoregate
    generates, not a hand-picked subset.
    """
    return digest_cases(generate_cases(schema, reference, seed=seed, reference_rows=reference_rows))


def digest_cases(cases: list[Case]) -> str:
    """SHA-256 of the cases' ids, inputs and expected outcomes in a canonical JSON form."""
    canonical = [
        {
            "id": c.id,
            "kind": c.kind,
            "feature": c.feature,
            "expect": c.expect,
            "field": c.field,
            "rule": c.rule,
            "parity": c.parity,
            "rows": [_canonical(r) for r in c.rows],
            # only when expected, so the cases of a schema without a profile hash as before
            **({"flag": c.flag} if c.flag is not None else {}),
        }
        for c in cases
    ]
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def describe_cases(cases: list[Case]) -> dict[str, Any]:
    """The report's ``case_set``: digest, count and count by kind."""
    return {
        "digest": digest_cases(cases),
        "cases": len(cases),
        "by_kind": dict(sorted(Counter(c.kind for c in cases).items())),
    }


def _canonical(value: Any) -> Any:
    """JSON-encodable and unambiguous: NaN and infinities are tagged, not turned into null."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def probe_rows(schema: ModelSchema, reference: pd.DataFrame | None, seed: int, n: int) -> list[dict[str, Any]]:
    """Up to ``n`` complete, valid reference rows (a synthetic row without reference data), for the checks."""
    rows = frame_to_rows(schema, reference) if reference is not None and len(reference) else []
    validator = RecordValidator(schema)
    complete = [
        r for r in rows if all(r.get(name) is not None for name in schema.feature_names) and not validator.check(r)
    ]
    if not complete:
        return [synthetic_row(schema)]
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(complete), size=min(n, len(complete)), replace=False).tolist())
    return [dict(complete[i]) for i in picks]
