"""Reviewable YAML documents (the governance and monitoring policies): parsed into a model, or
refused in one line naming the field and the rule it breaks."""

from __future__ import annotations

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


def parse_yaml(model: type[Model], text: str, what: str) -> Model:
    """``text`` as a YAML mapping validated by ``model``; ``what`` names it in the error."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{what} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"invalid {what}: the document must be a YAML mapping")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"invalid {what} at {where(exc)}") from None
