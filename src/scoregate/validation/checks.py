"""Deeper checks: properties of the model as a whole, beyond one case's outcome.

Each check is a small function with one job and one signature, ``check(context) ->
Verdict``, listed in :data:`CHECKS` with its id and the outcome it expects; like
scikit-learn's ``check_estimator`` suite, every model meets the same checks. A check
reads the cases already run (``context.results``) or calls the target itself
(``context.score``), always within the per-call timeout and the run's bound. A check
that does not apply (no probabilities, no recorded metric, a target in another
process) is skipped with the reason.
"""

from __future__ import annotations

import gc
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scoregate.schema import NUMERIC_TYPES, Feature, FeatureType, ModelSchema, OutputContract, RecordValidator
from scoregate.validation.cases import SCORE, frame_to_rows
from scoregate.validation.judge import FAIL, PASS, SKIP
from scoregate.validation.reference import compare
from scoregate.validation.report import CaseResult, CheckResult
from scoregate.validation.settings import Clock, ValidationSettings
from scoregate.validation.targets import REFUSED, SCORED, TIMEOUT, Target

#: |sum of the class probabilities - 1| allowed: float32 runtimes (ONNX, XGBoost) round
#: each class to about 6e-8, so even a hundred classes stay well inside it.
PROBABILITY_SUM_TOLERANCE = 1e-5
#: Rows the batch, determinism, sensitivity and memory checks score.
PROBE_ROWS = 16
#: The batch a probe set is hidden in for the batch-invariance check.
LARGE_BATCH = 256
#: Calls of the determinism check.
REPEATS = 3
#: Values tried per numeric feature by the sensitivity check (quantiles of the observed range).
SENSITIVITY_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Levels tried per category feature.
SENSITIVITY_LEVELS = 20
#: A case over the latency budget is timed this many more times and judged by its fastest
#: run, so one descheduling of a shared machine is not taken for a slow model.
LATENCY_RETRIES = 2
#: Calls before the memory baseline (imports, caches and allocator pools settle).
MEMORY_WARMUP = 3
#: Allowed shortfall of a recorded metric on the reference rows, at least.
METRIC_MARGIN = 0.05
#: Metrics the reference-performance check knows, and which outputs they need.
HIGHER_IS_BETTER = ("auc", "roc_auc", "accuracy", "r2")
MB = 1024 * 1024


class ProbeFailed(Exception):
    """A call a check made did not score valid rows (refused, crashed or hung)."""


class OutOfTime(Exception):
    """The run's bound was reached before the check could finish."""


@dataclass(frozen=True)
class Verdict:
    status: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def passed(reason: str, **details: Any) -> Verdict:
    return Verdict(PASS, reason, details)


def failed(reason: str, **details: Any) -> Verdict:
    return Verdict(FAIL, reason, details)


def skipped(reason: str, **details: Any) -> Verdict:
    return Verdict(SKIP, reason, details)


@dataclass
class CheckContext:
    """What every check may read: the run's settings, the version, its cases and the target."""

    settings: ValidationSettings
    version: Any
    target: Target
    results: list[CaseResult]
    reference: pd.DataFrame | None
    probe: list[dict[str, Any]]
    clock: Clock

    @property
    def schema(self) -> ModelSchema:
        return self.version.input_schema

    def score(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The target's outputs for valid ``rows``; :class:`ProbeFailed` when it does not score them."""
        reply = self.call(rows)
        if reply.status != SCORED:
            what = {TIMEOUT: "hung", REFUSED: "refused valid rows"}.get(reply.status, "crashed")
            raise ProbeFailed(f"a call of {len(rows)} row(s) {what}: {reply.message}")
        outputs = reply.outputs or []
        if len(outputs) != len(rows):
            raise ProbeFailed(f"a call of {len(rows)} row(s) returned {len(outputs)} output rows")
        return outputs

    def call(self, rows: list[Any]) -> Any:
        """One call of the target within the per-call timeout and the run's bound."""
        timeout = self.clock.bound(self.settings.timeout_s)
        if timeout <= 0:
            raise OutOfTime(self.clock.stop_reason())
        return self.target.score(rows, timeout)

    def scored(self) -> Iterator[tuple[str, int, dict[str, Any]]]:
        """(case id, row, outputs) of every row of valid input that was scored, within the contract or not."""
        for r in self.results:
            if r.outcome == SCORED and r.case.expect == SCORE and r.outputs:
                for i, out in enumerate(r.outputs):
                    yield r.case.id, i, out

    def output_names(self) -> list[str]:
        names = [o.name for o in self.version.output_schema]
        if names:
            return names
        first = next(self.scored(), None)
        return list(first[2]) if first else []

    def proba_columns(self) -> list[str]:
        return [n for n in self.output_names() if n.startswith("proba_")]

    def label_output(self) -> str | None:
        names = self.output_names()
        return next((n for n in ("prediction", "label") if n in names), None)

    def rows_for_probes(self) -> list[dict[str, Any]]:
        """Distinct valid rows: the probe rows, topped up with rows of single-row cases that scored."""
        rows = [dict(r) for r in self.probe]
        seen = {repr(sorted(r.items())) for r in rows}
        for r in self.results:
            if len(rows) >= PROBE_ROWS:
                break
            if r.case.expect == SCORE and r.conforms and len(r.case.rows) == 1 and r.case.kind != "golden":
                row = {k: v for k, v in r.case.rows[0].items() if k in self.schema.feature_names}
                key = repr(sorted(row.items()))
                if key not in seen:
                    seen.add(key)
                    rows.append(row)
        return rows[:PROBE_ROWS]


@dataclass(frozen=True)
class Check:
    id: str
    expect: Callable[[ValidationSettings], str]
    run: Callable[[CheckContext], Verdict]


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------


def output_contract(ctx: CheckContext) -> Verdict:
    """Every scored row within the output contract, and whether that contract was declared."""
    schema = ctx.schema
    if not schema.outputs:
        return skipped("the version records no outputs (registered without training data or --outputs)")
    source = schema.output_contract.value if schema.output_contract else "unrecorded"
    untrusted = [o.name for o in schema.outputs if o.nullable and schema.output_contract is not OutputContract.DECLARED]
    scored = [r for r in ctx.results if r.outcome == SCORED and r.case.expect == SCORE]
    bad = [r for r in scored if not r.conforms]
    details = {
        "contract": source,
        "outputs": [o.model_dump(mode="json") for o in schema.trusted_outputs()],
        "nullable_not_declared": untrusted,
        "cases_checked": len(scored),
        "rows_checked": sum(len(r.case.rows) for r in scored),
        "violations": [{"case": r.case.id, "reason": r.reason} for r in bad[:5]],
    }
    note = f" (recorded nullable but not declared, so NaN there fails: {', '.join(untrusted)})" if untrusted else ""
    if bad:
        return failed(
            f"{len(bad)} scored case(s) broke the {source} output contract, first {bad[0].case.id}{note}", **details
        )
    return passed(f"{details['rows_checked']} scored rows within the {source} output contract{note}", **details)


def probabilities(ctx: CheckContext) -> Verdict:
    """Each proba_* in [0, 1]; with two or more classes, they sum to 1 on every row."""
    columns = ctx.proba_columns()
    if not columns:
        return skipped("the model returns no proba_* outputs")
    rows = 0
    out_of_range: list[dict[str, Any]] = []
    bad_sums: list[dict[str, Any]] = []
    for case_id, i, out in ctx.scored():
        values = [out.get(c) for c in columns]
        if not all(_number(v) and math.isfinite(v) for v in values):
            continue  # null, NaN or not a number: the output contract's business
        rows += 1
        for name, value in zip(columns, values, strict=True):
            if not 0.0 <= value <= 1.0:
                out_of_range.append({"case": case_id, "row": i, "output": name, "value": value})
        total = math.fsum(values)
        if len(columns) > 1 and abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
            bad_sums.append({"case": case_id, "row": i, "sum": total})
    details = {
        "columns": columns,
        "rows_checked": rows,
        "sum_tolerance": PROBABILITY_SUM_TOLERANCE,
        "sum_checked": len(columns) > 1,
        "out_of_range": len(out_of_range),
        "bad_sums": len(bad_sums),
        "examples": (out_of_range + bad_sums)[:5],
    }
    if not rows:
        return skipped("no scored row has numeric probabilities", **details)
    if bad_sums or out_of_range:
        first = bad_sums[0] if bad_sums else out_of_range[0]
        what = (
            f"the probabilities of {first['case']} row {first['row']} sum to {first['sum']:.6g}"
            if bad_sums
            else f"{first['output']} = {first['value']!r} in {first['case']} row {first['row']}"
        )
        return failed(
            f"{len(bad_sums)} row(s) do not sum to 1, {len(out_of_range)} value(s) outside [0, 1]: {what}", **details
        )
    note = "" if len(columns) > 1 else " (one probability column: the sum is not checked)"
    return passed(
        f"{rows} rows: every probability in [0, 1]" + (", summing to 1" if len(columns) > 1 else "") + note, **details
    )


def label_consistency(ctx: CheckContext) -> Verdict:
    """The label output is a class whose probability is the largest."""
    columns = ctx.proba_columns()
    label = ctx.label_output()
    if label is None or len(columns) < 2:
        return skipped(
            "needs a label output (prediction or label) and two or more proba_* outputs"
            + (f"; the model returns {', '.join(ctx.output_names())}" if ctx.output_names() else "")
        )
    classes = [c[len("proba_") :] for c in columns]
    rows = 0
    wrong: list[dict[str, Any]] = []
    for case_id, i, out in ctx.scored():
        values = [out.get(c) for c in columns]
        if not all(_number(v) and math.isfinite(v) for v in values) or out.get(label) is None:
            continue
        rows += 1
        best = max(values)
        winners = [cls for cls, v in zip(classes, values, strict=True) if v >= best - 1e-12]
        if not any(same_class(out[label], w) for w in winners):
            wrong.append({"case": case_id, "row": i, "label": out[label], "largest": winners})
    details = {
        "label": label,
        "classes": classes,
        "rows_checked": rows,
        "contradictions": len(wrong),
        "examples": wrong[:5],
    }
    if not rows:
        return skipped("no scored row has a label and numeric probabilities", **details)
    if wrong:
        first = wrong[0]
        return failed(
            f"{len(wrong)} of {rows} rows give a label that is not the most probable class: {first['case']} row "
            f"{first['row']} says {first['label']!r}, its largest probability is class {first['largest'][0]!r}",
            **details,
        )
    return passed(f"{rows} rows: the {label!r} output is always the most probable class", **details)


def batch_invariance(ctx: CheckContext) -> Verdict:
    """The same rows score the same alone, in batches of any size and in any order."""
    rows = ctx.rows_for_probes()
    if len(rows) < 2:
        return skipped("needs at least two distinct valid rows")
    atol, rtol = ctx.settings.atol, ctx.settings.rtol
    alone = [ctx.score([row])[0] for row in rows]
    rng = np.random.default_rng(ctx.settings.seed)
    layouts: list[tuple[str, list[int]]] = []
    for size in (2, 5):
        layouts += [
            (f"batches of {size}", list(range(start, min(start + size, len(rows)))))
            for start in range(0, len(rows), size)
        ]
    layouts.append((f"one batch of {len(rows)}", list(range(len(rows)))))
    layouts.append(("reversed order", list(range(len(rows)))[::-1]))
    layouts.append(("shuffled order", [int(i) for i in rng.permutation(len(rows))]))
    differences: list[dict[str, Any]] = []
    calls = len(rows)
    for name, order in layouts:
        outputs = ctx.score([rows[i] for i in order])
        calls += 1
        for position, i in enumerate(order):
            differences += _differences(name, i, alone[i], outputs[position], atol, rtol)
    # the rows hidden at random places in a large batch of other valid rows
    filler = [rows[int(k)] for k in rng.integers(len(rows), size=LARGE_BATCH)]
    places = sorted(int(p) for p in rng.choice(LARGE_BATCH, size=len(rows), replace=False))
    for i, place in enumerate(places):
        filler[place] = rows[i]
    outputs = ctx.score(filler)
    calls += 1
    for i, place in enumerate(places):
        differences += _differences(f"inside a batch of {LARGE_BATCH}", i, alone[i], outputs[place], atol, rtol)
    details = {
        "rows": len(rows),
        "layouts": [*dict.fromkeys(name for name, _ in layouts), f"inside a batch of {LARGE_BATCH}"],
        "calls": calls,
        "tolerance": {"atol": atol, "rtol": rtol},
        "differences": len(differences),
        "examples": differences[:5],
    }
    if differences:
        first = differences[0]
        return failed(
            f"{len(differences)} output value(s) change with the batch: row {first['row']} {first['output']} is "
            f"{first['alone']!r} alone and {first['in_batch']!r} in {first['layout']}",
            **details,
        )
    return passed(f"{len(rows)} rows score the same alone and as: {', '.join(details['layouts'])}", **details)


def _differences(
    layout: str, row: int, alone: dict[str, Any], batched: dict[str, Any], atol: float, rtol: float
) -> list[dict[str, Any]]:
    found = []
    for name, value in alone.items():
        if compare(batched.get(name), value, atol, rtol) is not None:
            found.append({"layout": layout, "row": row, "output": name, "alone": value, "in_batch": batched.get(name)})
    return found


def determinism(ctx: CheckContext) -> Verdict:
    """Repeated calls with the same rows give identical outputs."""
    rows = ctx.rows_for_probes()
    first = ctx.score(rows)
    changes: list[dict[str, Any]] = []
    for call in range(1, REPEATS):
        again = ctx.score(rows)
        for i, (a, b) in enumerate(zip(first, again, strict=True)):
            for name in set(a) | set(b):
                if not _identical(a.get(name), b.get(name)):
                    changes.append(
                        {"call": call + 1, "row": i, "output": name, "first": a.get(name), "then": b.get(name)}
                    )
    details = {"rows": len(rows), "calls": REPEATS, "changes": len(changes), "examples": changes[:5]}
    if changes:
        c = changes[0]
        return failed(
            f"{len(changes)} output value(s) change between identical calls: row {c['row']} {c['output']} was "
            f"{c['first']!r}, then {c['then']!r} on call {c['call']}",
            **details,
        )
    return passed(f"{REPEATS} calls of {len(rows)} rows gave identical outputs", **details)


def sensitivity(ctx: CheckContext) -> Verdict:
    """Some input moves the output; a constant model, or one that ignores its inputs, fails."""
    rows = ctx.rows_for_probes()
    atol, rtol = ctx.settings.atol, ctx.settings.rtol
    observed = _observed(ctx)
    moved: list[str] = []
    never: list[str] = []
    tried: dict[str, int] = {}
    for f in ctx.schema.features:
        values = variants(f, observed.get(f.name, []))
        tried[f.name] = len(values)
        if len(values) < 2:
            never.append(f.name)
            continue
        # every variant puts the same base rows in the same positions, so a model whose
        # output depends on the position or the batch, not the input, does not "move"
        base = ctx.score([{**row, f.name: values[0]} for row in rows])
        if any(_moved(base, ctx.score([{**row, f.name: value} for row in rows]), atol, rtol) for value in values[1:]):
            moved.append(f.name)
        else:
            never.append(f.name)
    distinct = {_row_key(out) for _, _, out in ctx.scored()}
    constant = len(distinct) <= 1
    details = {
        "rows": len(rows),
        "values_tried": tried,
        "moved_by": moved,
        "never_moved_by": never,
        "distinct_outputs_over_cases": len(distinct),
        "constant": constant,
        "tolerance": {"atol": atol, "rtol": rtol},
    }
    if not moved:
        if constant:
            return failed("the model returns the same outputs for every row: a constant model", **details)
        return failed(
            f"no input moves the output (tried {', '.join(tried)} across their observed ranges): "
            "the model ignores its inputs",
            **details,
        )
    note = f"; never moved by {', '.join(never)} (a finding to review)" if never else ""
    return passed(f"the output moves with {', '.join(moved)}{note}", **details)


def variants(f: Feature, observed: list[Any]) -> list[Any]:
    """Values across the feature's observed range (or its schema's), all valid for the schema."""
    if f.type in NUMERIC_TYPES:
        numbers = np.asarray([v for v in observed if _number(v)], dtype=float)
        if len(numbers):
            values = np.quantile(numbers, SENSITIVITY_QUANTILES)
        elif f.observed is not None and f.observed.minimum is not None and f.observed.maximum is not None:
            values = np.linspace(f.observed.minimum, f.observed.maximum, len(SENSITIVITY_QUANTILES))
        elif f.minimum is not None and f.maximum is not None:
            values = np.linspace(f.minimum, f.maximum, len(SENSITIVITY_QUANTILES))
        else:
            anchor = f.minimum if f.minimum is not None else (f.maximum if f.maximum is not None else 0.0)
            values = np.asarray([anchor - 10, anchor - 1, anchor, anchor + 1, anchor + 10], dtype=float)
        low = -math.inf if f.minimum is None else f.minimum
        high = math.inf if f.maximum is None else f.maximum
        out: list[Any] = []
        for v in np.clip(values, low, high):
            value: Any = float(v)
            if f.type is FeatureType.INT:
                value = round(value)
                value = max(value, math.ceil(low)) if math.isfinite(low) else value
                value = min(value, math.floor(high)) if math.isfinite(high) else value
            if value not in out:
                out.append(value)
        return out
    if f.type is FeatureType.CATEGORY:
        return list(f.categories or [])[:SENSITIVITY_LEVELS]
    if f.type is FeatureType.BOOL:
        return [False, True]
    distinct = list(dict.fromkeys(v for v in observed if v is not None))
    if f.type is FeatureType.DATETIME:
        ordered = sorted(distinct)
        return [ordered[0], ordered[len(ordered) // 2], ordered[-1]] if len(ordered) >= 3 else ordered
    return distinct[:5] or ["", "a", "text"]


def _observed(ctx: CheckContext) -> dict[str, list[Any]]:
    if ctx.reference is None or not len(ctx.reference):
        return {}
    rows = frame_to_rows(ctx.schema, ctx.reference)
    return {f.name: [r[f.name] for r in rows if r.get(f.name) is not None] for f in ctx.schema.features}


def _moved(base: list[dict[str, Any]], other: list[dict[str, Any]], atol: float, rtol: float) -> bool:
    return any(
        compare(b.get(name), value, atol, rtol) is not None
        for a, b in zip(base, other, strict=True)
        for name, value in a.items()
    )


def latency(ctx: CheckContext) -> Verdict:
    """Each case answers within the version's latency budget."""
    budget = float(ctx.settings.latency_budget_ms or 0.0)
    timed = [r for r in ctx.results if r.outcome in (SCORED, REFUSED)]
    if not timed:
        return skipped("no case was answered")
    best = {r.case.id: r.elapsed_ms for r in timed}
    runs: dict[str, list[float]] = {}
    for r in timed:
        if r.elapsed_ms <= budget:
            continue
        runs[r.case.id] = [r.elapsed_ms]
        for _ in range(LATENCY_RETRIES):
            reply = ctx.call(r.case.rows)
            runs[r.case.id].append(reply.elapsed_ms)
            if reply.elapsed_ms <= budget:
                break
        best[r.case.id] = min(runs[r.case.id])
    rows = {r.case.id: len(r.case.rows) for r in timed}
    over = [
        {"case": case, "rows": rows[case], "best_ms": round(best[case], 1), "runs_ms": [round(t, 1) for t in times]}
        for case, times in runs.items()
        if best[case] > budget
    ]
    retimed = [case for case in runs if best[case] <= budget]
    slowest = sorted(best, key=lambda case: best[case], reverse=True)[:5]
    details = {
        "budget_ms": budget,
        "cases_timed": len(timed),
        "over_budget": over,
        "retimed_within_budget": [{"case": case, "runs_ms": [round(t, 1) for t in runs[case]]} for case in retimed],
        "slowest": [{"case": case, "rows": rows[case], "elapsed_ms": round(best[case], 1)} for case in slowest],
    }
    if over:
        first = over[0]
        return failed(
            f"{len(over)} case(s) over the {budget:g} ms budget: {first['case']} took {first['best_ms']:g} ms "
            f"at best of {len(first['runs_ms'])} runs",
            **details,
        )
    note = f"; {len(retimed)} slow run(s) re-timed within it ({', '.join(retimed[:3])})" if retimed else ""
    return passed(
        f"every one of {len(timed)} cases answered within {budget:g} ms (slowest {best[slowest[0]]:.1f} ms{note})",
        **details,
    )


def memory(ctx: CheckContext) -> Verdict:
    """Resident memory of the target's process does not grow call after call."""
    if not getattr(ctx.target, "in_process", False):
        kind = getattr(ctx.target, "kind", "remote")
        return skipped(
            f"the target ({kind}) runs in another process: memory growth needs in-process access "
            "(measure a served model with `scoregate image test` or a load test)"
        )
    import psutil

    process = psutil.Process()
    rows = ctx.rows_for_probes()

    def rss() -> int:
        gc.collect()
        return int(process.memory_info().rss)

    for _ in range(MEMORY_WARMUP):
        ctx.score(rows)
    samples = [rss()]
    for _ in range(ctx.settings.memory_calls):
        ctx.score(rows)
        samples.append(rss())
    growth = (samples[-1] - samples[0]) / MB
    steps = [b - a for a, b in itertools.pairwise(samples)]
    grew = sum(1 for s in steps if s > 0)
    steady = grew * 2 >= len(steps)
    limit = ctx.settings.memory_limit_mb
    details = {
        "calls": ctx.settings.memory_calls,
        "warmup_calls": MEMORY_WARMUP,
        "rows_per_call": len(rows),
        "rss_mb": [round(s / MB, 1) for s in samples],
        "growth_mb": round(growth, 2),
        "per_call_mb": round(growth / len(steps), 3),
        "calls_that_grew": grew,
        "limit_mb": limit,
    }
    if growth > limit and steady:
        return failed(
            f"resident memory grew {growth:.0f} MB over {len(steps)} calls ({growth / len(steps):.1f} MB a call, "
            f"growing on {grew} of them), over the {limit:g} MB limit",
            **details,
        )
    why = "" if growth <= limit else f" (a one-off rise: memory grew on only {grew} of {len(steps)} calls)"
    return passed(f"resident memory changed by {growth:+.1f} MB over {len(steps)} calls{why}", **details)


def reference_performance(ctx: CheckContext) -> Verdict:
    """The model's recorded metric holds on its reference rows (catches swapped columns)."""
    metrics = {k.lower(): float(v) for k, v in ctx.version.metrics.items()}
    name = next((m for m in HIGHER_IS_BETTER if m in metrics), None)
    if name is None:
        return skipped(f"the version records none of the metrics {', '.join(HIGHER_IS_BETTER)}")
    target = ctx.schema.target
    frame = ctx.reference
    if frame is None or target is None or target not in frame.columns:
        return skipped(f"the reference data holds no target column to compute {name} with")
    frame = frame[frame[target].notna()]
    rows = frame_to_rows(ctx.schema, frame)
    validator = RecordValidator(ctx.schema)
    keep = [i for i, r in enumerate(rows) if not validator.check(r)]
    if len(keep) < 20:
        return skipped(f"only {len(keep)} valid reference rows with a target: too few for {name}")
    truth = [frame[target].iloc[i] for i in keep]
    outputs = ctx.score([rows[i] for i in keep])
    recorded = metrics[name]
    try:
        measured, error = _metric(name, truth, outputs, ctx.proba_columns(), ctx.label_output())
    except _CannotMeasure as exc:
        return skipped(str(exc))
    margin = max(METRIC_MARGIN, 3 * error)
    floor = recorded - margin
    details = {
        "metric": name,
        "recorded": recorded,
        "measured": round(measured, 6),
        "rows": len(keep),
        "standard_error": round(error, 6),
        "margin": round(margin, 6),
        "rule": f"measured >= recorded - max({METRIC_MARGIN:g}, 3 standard errors)",
        "note": "the reference rows are a sample of the training data, so a sound model usually does better here",
    }
    if measured < floor:
        return failed(
            f"{name} on {len(keep)} reference rows is {measured:.4f}, far below the recorded {recorded:.4f} "
            f"(lowest accepted {floor:.4f}): inputs scrambled or swapped, or the wrong artifact?",
            **details,
        )
    return passed(
        f"{name} on {len(keep)} reference rows is {measured:.4f} "
        f"(recorded {recorded:.4f}, lowest accepted {floor:.4f})",
        **details,
    )


class _CannotMeasure(Exception):
    pass


def _metric(
    name: str, truth: list[Any], outputs: list[dict[str, Any]], proba: list[str], label: str | None
) -> tuple[float, float]:
    """(value, standard error) of ``name``; the error is 0 where no simple formula exists (r2)."""
    from sklearn.metrics import accuracy_score, r2_score, roc_auc_score

    n = len(truth)
    if name in ("auc", "roc_auc"):
        if not proba:
            raise _CannotMeasure(f"{name} needs proba_* outputs; the model returns none")
        classes = [class_key(c[len("proba_") :]) for c in proba]
        keys = [class_key(y) for y in truth]
        scores = np.asarray([[float(o[c]) for c in proba] for o in outputs])
        if len(proba) <= 2:
            positive = classes[-1]
            y = np.asarray([k == positive for k in keys])
            if y.all() or not y.any():
                raise _CannotMeasure(f"the reference rows hold one class only: {name} is undefined")
            value = float(roc_auc_score(y, scores[:, -1]))
            return value, _auc_error(value, int(y.sum()), int((~y).sum()))
        if not set(keys) <= set(classes):
            raise _CannotMeasure(f"the reference rows hold classes the model has no probability for: {name} skipped")
        value = float(roc_auc_score(keys, scores, multi_class="ovr", labels=classes))
        return value, _auc_error(value, n // len(classes), n - n // len(classes))
    if name == "accuracy":
        if label is None:
            raise _CannotMeasure("accuracy needs a label output (prediction or label)")
        value = float(accuracy_score([class_key(y) for y in truth], [class_key(o.get(label)) for o in outputs]))
        return value, math.sqrt(max(value * (1 - value), 1e-12) / n)
    column = "prediction"
    try:
        predicted = [float(o[column]) for o in outputs]
    except (KeyError, TypeError, ValueError):
        raise _CannotMeasure("r2 needs a numeric prediction output") from None
    return float(r2_score([float(y) for y in truth], predicted)), 0.0


def _auc_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil (1982): the standard error of an AUC from its value and the class counts."""
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / max(
        positives * negatives, 1
    )
    return math.sqrt(max(variance, 0.0))


# ---------------------------------------------------------------------------------------------
# Running them
# ---------------------------------------------------------------------------------------------


CHECKS: tuple[Check, ...] = (
    Check(
        "output_contract",
        lambda s: (
            "every scored row within the output contract: NaN or null only where the outputs were declared nullable"
        ),
        output_contract,
    ),
    Check(
        "probabilities",
        lambda s: (
            f"every proba_* in [0, 1] and, with two or more, summing to 1 within {PROBABILITY_SUM_TOLERANCE:g}, "
            "on every scored row"
        ),
        probabilities,
    ),
    Check(
        "label_consistency",
        lambda s: "the label output (prediction or label) is the class of the largest probability on every scored row",
        label_consistency,
    ),
    Check(
        "batch_invariance",
        lambda s: (
            f"up to {PROBE_ROWS} rows score the same alone, in batches of 2, 5 and all, reversed, shuffled and "
            f"inside a batch of {LARGE_BATCH} (atol={s.atol:g}, rtol={s.rtol:g})"
        ),
        batch_invariance,
    ),
    Check("determinism", lambda s: f"{REPEATS} identical calls give identical outputs", determinism),
    Check(
        "sensitivity",
        lambda s: "moving some input across its observed range moves the output; inputs that never do are listed",
        sensitivity,
    ),
    Check(
        "latency",
        lambda s: (
            f"every case answers within the latency budget of {s.latency_budget_ms:g} ms (a case over it is "
            f"timed {LATENCY_RETRIES} more times and judged by its fastest run)"
        ),
        latency,
    ),
    Check(
        "memory",
        lambda s: (
            f"resident memory grows by at most {s.memory_limit_mb:g} MB over {s.memory_calls} calls after "
            f"{MEMORY_WARMUP} warm-up calls (a failure also needs growth on at least half of them)"
        ),
        memory,
    ),
    Check(
        "reference_performance",
        lambda s: (
            f"the recorded metric ({', '.join(HIGHER_IS_BETTER)}) holds on the reference rows: measured >= "
            f"recorded - max({METRIC_MARGIN:g}, 3 standard errors)"
        ),
        reference_performance,
    ),
)


def run_checks(ctx: CheckContext, stopped: str | None = None) -> list[CheckResult]:
    """Every check in order; after the run's bound (or a stop) the rest are reported as not run."""
    results = []
    for check in CHECKS:
        expect = check.expect(ctx.settings)
        if stopped is None and ctx.clock.expired:
            stopped = ctx.clock.stop_reason()
        if stopped is not None:
            results.append(CheckResult(check.id, SKIP, expect, f"not run: {stopped}"))
            continue
        try:
            verdict = check.run(ctx)
        except ProbeFailed as exc:
            verdict = failed(f"valid rows did not score: {exc}")
        except OutOfTime as exc:
            verdict = skipped(f"not finished: {exc}")
        results.append(CheckResult(check.id, verdict.status, expect, verdict.reason, verdict.details))
    return results


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _identical(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b)


def _row_key(out: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, "nan" if isinstance(v, float) and math.isnan(v) else repr(v)) for k, v in out.items()))


def class_key(value: Any) -> str:
    """A class label as text, with 1, 1.0 and "1" the same class."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if math.isfinite(number) and number.is_integer() else text


def same_class(label: Any, name: str) -> bool:
    return class_key(label) == class_key(name)


__all__ = ["CHECKS", "Check", "CheckContext", "Verdict", "run_checks"]
