"""Undeclared fields: what a request has and the model's schema does not.

A field the contract does not name (a customer's ``ssn`` sent along with the
features) is refused by default, with 422 naming each one, on every route: plain rows
and columns, V2 tensors and :meth:`LoadedModel.predict`. A version may instead drop
them, with the tag ``serving.extra_fields=drop`` set at registration (``register --tag
serving.extra_fields=drop``). Either way an undeclared field is never scored and never
written to the prediction log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from scoregate.schema import Violation

log = logging.getLogger("scoregate")

#: The version tag that chooses what happens to undeclared fields.
TAG = "serving.extra_fields"
RULE = "undeclared"
_NAME_SHOWN = 100


class ExtraFields(StrEnum):
    REFUSE = "refuse"  # 422 naming each undeclared field (the default)
    DROP = "drop"  # removed before validation, scoring and logging


def from_tags(tags: Mapping[str, str], ref: str = "") -> ExtraFields:
    """The version's setting; an unknown tag value reads as ``refuse``, the safe choice."""
    value = tags.get(TAG, ExtraFields.REFUSE.value)
    try:
        return ExtraFields(value)
    except ValueError:
        log.warning("%s: tag %s=%r is not refuse or drop; undeclared fields are refused", ref, TAG, value)
        return ExtraFields.REFUSE


def undeclared(record: Mapping[str, Any], known: frozenset[str]) -> list[str]:
    return [name for name in record if name not in known]


def violations(names: Sequence[Any], row: int | None) -> list[Violation]:
    out = []
    for name in names:
        text = str(name)
        if len(text) > _NAME_SHOWN:
            text = text[:_NAME_SHOWN] + "..."
        message = f"{text!r} is not a feature of this model (tag {TAG}=drop would drop it)"
        out.append(Violation(text, RULE, message, row))
    return out


def dropped(record: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    return {name: value for name, value in record.items() if name in known}


def check_records(
    records: Sequence[Any], known: frozenset[str], setting: ExtraFields
) -> tuple[list[Any], list[Violation]]:
    """``(records, problems)``: with ``drop`` the records without their undeclared fields,
    with ``refuse`` the records as given and one violation per undeclared field."""
    problems: list[Violation] = []
    out: list[Any] | None = None
    for row, record in enumerate(records):
        if not isinstance(record, Mapping):
            continue
        extra = undeclared(record, known)
        if not extra:
            continue
        if setting is ExtraFields.DROP:
            if out is None:
                out = list(records)
            out[row] = dropped(record, known)
        else:
            problems.extend(violations(extra, row))
    return (out if out is not None else list(records)), problems


__all__ = ["RULE", "TAG", "ExtraFields", "check_records", "dropped", "from_tags", "undeclared", "violations"]
