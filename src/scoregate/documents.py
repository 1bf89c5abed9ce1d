"""Reviewable YAML documents (the governance and monitoring policies): parsed into a model, or
refused in one line naming the field and the rule it breaks."""

from __future__ import annotations

import functools
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from scoregate.errors import InvalidInputError

Model = TypeVar("Model", bound=BaseModel)


def where(exc: ValidationError) -> str:
    """``field.path: message`` of the first error."""
    first = exc.errors()[0]
    path = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return f"{path}: {first['msg'].removeprefix('Value error, ')}"


@functools.lru_cache(maxsize=64)
def _load_yaml(text: str) -> object:
    """A document's YAML, parsed once per distinct text: every gate and every UI page reads
    the policy in force, and parsing it cost more than the rest of a page's queries. The
    result is only read (``model_validate`` builds fresh objects from it)."""
    return yaml.safe_load(text)


def parse_yaml(model: type[Model], text: str, what: str) -> Model:
    """``text`` as a YAML mapping validated by ``model``; ``what`` names it in the error."""
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{what} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"invalid {what}: the document must be a YAML mapping")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"invalid {what} at {where(exc)}") from None
