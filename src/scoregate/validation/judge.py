"""The outcome of one case: did the target do what the case expects?"""

from __future__ import annotations

import math
from typing import Any

from scoregate.schema import OutputField, output_row_problem
from scoregate.validation.cases import EMPTY, REFUSE, Case
from scoregate.validation.targets import ERROR, REFUSED, SCORED, TIMEOUT, Reply

PASS = "pass"
FAIL = "fail"
SKIP = "skip"


def check_outputs(outputs: list[dict[str, Any]], n_rows: int, schema: list[OutputField]) -> str | None:
    """Why these outputs break the output contract (``schema``: its trusted fields), or ``None``."""
    if len(outputs) != n_rows:
        return f"returned {len(outputs)} output rows for {n_rows} input rows"
    for i, row in enumerate(outputs):
        if not isinstance(row, dict):
            return f"row {i}: output is not an object"
        problem = output_row_problem(schema, row)
        if problem:
            return f"row {i}: {problem}"
        for f in schema:
            value = row[f.name]
            number = isinstance(value, (int, float)) and not math.isnan(value)  # declared NaN passed above
            if f.name.startswith("proba_") and number and not -1e-9 <= value <= 1 + 1e-9:
                return f"row {i}: probability {f.name!r} = {value!r} is outside [0, 1]"
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
    if case.flag is not None:
        return _judge_flag(case, reply)
    return PASS, "scored within the output schema"


def _judge_flag(case: Case, reply: Reply) -> tuple[str, str]:
    """A value outside the observed profile must be scored *and* flagged, on every row."""
    flagged = {f.get("row") for f in reply.flags if f.get("feature") == case.feature and f.get("kind") == case.flag}
    missing = [i for i in range(len(case.rows)) if i not in flagged]
    if missing:
        return FAIL, f"scored, but row {missing[0]} was not flagged {case.flag} on {case.feature!r}"
    return PASS, f"scored within the output schema and flagged {case.flag}"


__all__ = ["FAIL", "PASS", "SKIP", "check_outputs", "judge"]
