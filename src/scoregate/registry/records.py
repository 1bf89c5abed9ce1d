"""Read-only views of registry rows, handed to the CLI, the server and the Python API."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict

from scoregate import extra_fields
from scoregate.flavors.base import Scorer
from scoregate.inputs import normalise
from scoregate.schema import (
    ModelSchema,
    OutputField,
    RecordValidator,
    flag_frame,
    prepare_frame,
    prepare_records,
    raise_for,
)

RISK_TIERS = ("low", "medium", "high")
STATUSES = ("registered", "validated", "approved", "production", "retired", "deleted")


class ModelVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    flavor: str
    status: str
    description: str | None = None
    created_by: str | None = None
    created_at: dt.datetime
    retired_at: dt.datetime | None = None
    retire_reason: str | None = None
    artifact_digest: str
    artifact_size: int
    artifact_kind: str
    artifact_name: str
    input_schema: ModelSchema
    output_schema: list[OutputField]
    metrics: dict[str, float]
    params: dict[str, Any]
    tags: dict[str, str]
    aliases: list[str]
    latency_budget_ms: float
    training_data_uri: str | None = None
    training_data_digest: str | None = None
    training_rows: int | None = None
    training_schema_digest: str | None = None
    reference_digest: str | None = None
    reference_rows: int | None = None
    code_version: str | None = None
    code_dirty: bool | None = None
    parent_version: int | None = None
    environment: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class ModelSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    description: str | None
    owner: str | None
    risk_tier: str | None
    latest_version: int | None
    versions: int
    aliases: dict[str, int]
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class AliasRecord:
    name: str
    alias: str
    version: int
    updated_at: dt.datetime


@dataclass(frozen=True)
class LoadedModel:
    """A version's record and its scorer; :meth:`predict` validates before scoring."""

    version: ModelVersion
    scorer: Scorer

    @property
    def validator(self) -> RecordValidator:
        return RecordValidator(self.version.input_schema)

    def predict(self, data: Any) -> pd.DataFrame:
        """Score a frame or a table (extra columns such as ids are left out), JSON-like rows,
        columns or one row, whose undeclared fields are refused or dropped as the version's
        ``serving.extra_fields`` tag says, or a 2-D array in the schema's order (:mod:`scoregate.inputs`)."""
        schema = self.version.input_schema
        data = normalise(data, schema.feature_names)
        if isinstance(data, pd.DataFrame):
            return _with_flags(schema, prepare_frame(schema, data), self.scorer)
        setting = extra_fields.from_tags(self.version.tags, self.version.ref)
        data, problems = extra_fields.check_records(data, frozenset(schema.feature_names), setting)
        if problems:  # every broken rule in one refusal, the undeclared fields first
            validator = RecordValidator(schema)
            for row, record in enumerate(data):
                problems.extend(validator.check(record, row))
            raise_for(problems)
        return _with_flags(schema, prepare_records(schema, data), self.scorer)


def _with_flags(schema: ModelSchema, frame: pd.DataFrame, scorer: Scorer) -> pd.DataFrame:
    """Score ``frame``; ``result.attrs["flags"]`` lists the values outside the observed profile
    (``[{"row", "feature", "kind"}]``, empty when none), which were scored all the same."""
    result = scorer.predict(frame)
    result.attrs["flags"] = flag_frame(schema, frame).to_list()
    return result
