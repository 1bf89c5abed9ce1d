"""The model's contract: typed input features and the outputs it returns.

A feature carries two different things. Its *validity rules* (type, nullability, and
the limits and categories the user declared or inference is sure of, such as a count's
minimum 0) refuse a request at the door. Its *observed profile* (:class:`Observed`: the
range and levels of the training data) never refuses: a value outside it is scored and
flagged (:class:`Flag`), and the flags are counted, because a model extrapolating past
its training data is something to watch, not an invalid request. A category the model
can take without having seen it in training (``unseen: score``) is scored and flagged too.

A schema is inferred from the training data at registration, can be edited by the
user, and is stored with the version. Serving validates requests against it,
validation generates test cases from it and monitoring compares live data with it, so
the rules live here once. A schema stored before the observed profile existed has no
``observed`` section: its limits, inferred from training data back then, stay validity
rules and refuse as they always did (docs/architecture.md, "Contract").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import reprlib
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from scoregate.errors import SchemaViolationError

#: A column with at most this many distinct string levels is inferred as a category.
MAX_CATEGORY_LEVELS = 50
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT_EXACT = 2**53  # past this a float stands for several integers
#: How many violations an error reports before it stops listing them.
MAX_REPORTED_VIOLATIONS = 50


class FeatureType(StrEnum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    CATEGORY = "category"
    STRING = "string"
    DATETIME = "datetime"


class UnseenCategories(StrEnum):
    """What a category feature does with a value outside its categories.

    ``refuse``: the categories are a closed set (the default, and the only behaviour of
    versions stored before this setting). ``score``: the model takes unknown levels (a
    one-hot encoder that ignores them, LightGBM's native categoricals), so such a value
    is scored and flagged ``unseen_category``.
    """

    REFUSE = "refuse"
    SCORE = "score"


class Observed(BaseModel):
    """What the training data held for one feature: a profile to flag against, never a rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    minimum: float | None = None
    maximum: float | None = None
    categories: list[str] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Observed:
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"observed minimum {self.minimum} is above observed maximum {self.maximum}")
        return self


class Feature(BaseModel):
    """One input column: the rules a value must satisfy, and the profile it is flagged against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    type: FeatureType
    nullable: bool = False
    #: validity limits: a value past them is refused
    minimum: float | None = None
    maximum: float | None = None
    #: the known levels; a value outside them is refused unless ``unseen`` is ``score``
    categories: list[str] | None = None
    description: str | None = None
    unseen: UnseenCategories = UnseenCategories.REFUSE
    #: the training data's range and levels (None: not recorded, e.g. a version stored before)
    observed: Observed | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.unseen is not UnseenCategories.REFUSE and self.type is not FeatureType.CATEGORY:
            raise ValueError(f"feature {self.name!r}: unseen applies to category features only")
        if self.observed is not None:
            o = self.observed
            if (o.minimum is not None or o.maximum is not None) and self.type not in NUMERIC_TYPES:
                raise ValueError(f"feature {self.name!r}: an observed range applies to float and int features only")
            if o.categories is not None and self.type is not FeatureType.CATEGORY:
                raise ValueError(f"feature {self.name!r}: observed categories apply to category features only")
        if (self.minimum is not None or self.maximum is not None) and self.type not in NUMERIC_TYPES:
            raise ValueError(f"feature {self.name!r}: minimum/maximum apply to float and int features only")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"feature {self.name!r}: minimum {self.minimum} is above maximum {self.maximum}")
        if self.categories is not None and self.type is not FeatureType.CATEGORY:
            raise ValueError(f"feature {self.name!r}: categories apply to category features only")
        if self.type is FeatureType.CATEGORY and not self.categories:
            raise ValueError(f"feature {self.name!r}: a category feature needs its list of categories")
        return self

    def limits_text(self) -> str:
        """The validity limits in words, for tables and cards ("" when there are none)."""
        if self.type is FeatureType.CATEGORY:
            levels = self.categories or []
            shown = ", ".join(levels[:8]) + (" ..." if len(levels) > 8 else "")
            return f"{shown} (unseen scored)" if self.unseen is UnseenCategories.SCORE else shown
        return _range_text(self.minimum, self.maximum)

    def observed_text(self) -> str:
        """The observed profile in words ("" when none was recorded)."""
        o = self.observed
        if o is None:
            return ""
        if o.categories is not None:
            return f"{len(o.categories)} categories"
        return _range_text(o.minimum, o.maximum)


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"[{low:g}, {high:g}]"
    if low is not None:
        return f">= {low:g}"
    if high is not None:
        return f"<= {high:g}"
    return ""


class OutputField(BaseModel):
    """One output column; ``nullable`` (NaN or null allowed) only counts when the outputs were declared."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    type: FeatureType
    nullable: bool = False


class OutputContract(StrEnum):
    """How a version's outputs were set at registration.

    ``declared``: written by the user (``--outputs`` or the ``outputs`` of ``--schema``) and
    checked against what the model returned. ``inferred``: learned from the model's outputs
    on reference rows and accepted only because none of them was NaN or null, so every
    inferred output is non-nullable. Versions stored before this was recorded have none.
    """

    DECLARED = "declared"
    INFERRED = "inferred"


class ModelSchema(BaseModel):
    """Input features (in the order the model expects them) and output fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: list[Feature]
    outputs: list[OutputField] = Field(default_factory=list)
    target: str | None = None
    #: how ``outputs`` were set (None: a version stored before this was recorded)
    output_contract: OutputContract | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> ModelSchema:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate feature names: {', '.join(duplicates)}")
        if not names:
            raise ValueError("a schema needs at least one feature")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def digest(self) -> str:
        """A stable hash of the input contract (used by lineage and monitoring).

        ``output_contract`` is left out, so the digest of a schema is what it was before
        that field existed.
        """
        return _sha256_json(self._canonical(exclude={"output_contract"}))

    def contract_digest(self) -> str:
        """A hash of the whole contract: input features, target, outputs and how the outputs were set.

        What a validation report names as the contract it checked, so a gate can tell a
        report computed against another contract from one computed against this one.
        """
        return _sha256_json(self._canonical())

    def _canonical(self, exclude: set[str] | None = None) -> dict[str, Any]:
        """The schema as hashed: a feature's fields added after schemas were first stored
        (``unseen``, ``observed``) are left out at their defaults, so every schema stored
        before keeps its digest, and the evidence bound to that digest stays bound."""
        data = self.model_dump(mode="json", exclude=exclude)
        for feature in data["features"]:
            for key, default in _LATER_FEATURE_DEFAULTS.items():
                if key in feature and feature[key] == default:
                    del feature[key]
        return data

    @property
    def has_profile(self) -> bool:
        """True when some feature can be flagged (an observed profile, or unseen categories scored)."""
        return any(f.observed is not None or f.unseen is UnseenCategories.SCORE for f in self.features)

    def trusted_outputs(self) -> list[OutputField]:
        """The outputs, with ``nullable`` kept only where the user declared it.

        A version stored before the output contract was recorded may have learned
        ``nullable`` from NaN its own model returned; that is not a promise anyone made.
        """
        if self.output_contract is OutputContract.DECLARED:
            return list(self.outputs)
        return [o.model_copy(update={"nullable": False}) if o.nullable else o for o in self.outputs]


#: Feature fields added after schemas were first stored, with the value that means "as before".
_LATER_FEATURE_DEFAULTS: dict[str, Any] = {"unseen": UnseenCategories.REFUSE.value, "observed": None}


def _sha256_json(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


NUMERIC_TYPES = frozenset({FeatureType.FLOAT, FeatureType.INT})

#: The Open Inference Protocol (V2) tensor datatype of each feature type, shared by the
#: server and by clients that call it.
V2_DATATYPES: dict[FeatureType, str] = {
    FeatureType.FLOAT: "FP64",
    FeatureType.INT: "INT64",
    FeatureType.BOOL: "BOOL",
    FeatureType.CATEGORY: "BYTES",
    FeatureType.STRING: "BYTES",
    FeatureType.DATETIME: "BYTES",
}


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: which row, which field, which rule, in words."""

    field: str
    rule: str
    message: str
    row: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "rule": self.rule, "message": self.message}
        if self.row is not None:
            out["row"] = self.row
        return out


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------


def infer_schema(
    frame: pd.DataFrame, *, target: str | None = None, max_category_levels: int = MAX_CATEGORY_LEVELS
) -> ModelSchema:
    """Infer the input contract from training data; ``target`` is left out of the features.

    What the data shows goes into each feature's observed profile, not into its rules:
    the highest income in training is not the highest income an applicant may have. The
    rules inferred are the ones the data is sure of: the type, nullability, a count's
    minimum 0 (an integer column never negative in training), and the categories as a
    closed set (``unseen: refuse``) until the model says it takes unknown levels.
    """
    if target is not None and target not in frame.columns:
        raise SchemaViolationError(
            f"target column {target!r} is not in the training data (columns: {', '.join(map(str, frame.columns))})"
        )
    features = [_infer_feature(str(name), frame[name], max_category_levels) for name in frame.columns if name != target]
    return ModelSchema(features=features, target=target)


def _infer_feature(name: str, column: pd.Series, max_levels: int) -> Feature:
    nullable = bool(column.isna().any())
    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return Feature(name=name, type=FeatureType.BOOL, nullable=nullable)
    if pd.api.types.is_integer_dtype(dtype):
        observed = _observed_range(column)
        count = observed.minimum is not None and observed.minimum >= 0
        return Feature(
            name=name, type=FeatureType.INT, nullable=nullable, minimum=0.0 if count else None, observed=observed
        )
    if pd.api.types.is_float_dtype(dtype):
        return Feature(name=name, type=FeatureType.FLOAT, nullable=nullable, observed=_observed_range(column))
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return Feature(name=name, type=FeatureType.DATETIME, nullable=nullable)
    values = column.dropna()
    if isinstance(dtype, pd.CategoricalDtype):
        levels = sorted(str(v) for v in dtype.categories)
        seen = sorted({str(v) for v in values}) or levels
        return Feature(
            name=name,
            type=FeatureType.CATEGORY,
            nullable=nullable,
            categories=levels,
            observed=Observed(categories=seen),
        )
    if len(values) and values.map(lambda v: isinstance(v, bool)).all():
        return Feature(name=name, type=FeatureType.BOOL, nullable=nullable)
    levels = sorted({str(v) for v in values})
    if 0 < len(levels) <= max_levels:
        return Feature(
            name=name,
            type=FeatureType.CATEGORY,
            nullable=nullable,
            categories=levels,
            observed=Observed(categories=levels),
        )
    return Feature(name=name, type=FeatureType.STRING, nullable=nullable)


def _observed_range(column: pd.Series) -> Observed:
    values = pd.to_numeric(column, errors="coerce").dropna()
    values = values[np.isfinite(values.to_numpy(dtype=float))]
    if values.empty:
        return Observed()
    return Observed(minimum=float(values.min()), maximum=float(values.max()))


def open_categories(schema: ModelSchema, names: Iterable[str]) -> ModelSchema:
    """``schema`` with ``unseen: score`` on the category features in ``names`` (the ones the
    model takes unknown levels of, as its flavor found)."""
    wanted = set(names)
    features = [
        f.model_copy(update={"unseen": UnseenCategories.SCORE})
        if f.name in wanted and f.type is FeatureType.CATEGORY
        else f
        for f in schema.features
    ]
    return schema.model_copy(update={"features": features})


def infer_outputs(predictions: pd.DataFrame) -> list[OutputField]:
    """Describe what a scorer returned, for the output half of the schema."""
    fields = []
    for name in predictions.columns:
        column = predictions[name]
        dtype = column.dtype
        if pd.api.types.is_bool_dtype(dtype):
            kind = FeatureType.BOOL
        elif pd.api.types.is_integer_dtype(dtype):
            kind = FeatureType.INT
        elif pd.api.types.is_float_dtype(dtype):
            kind = FeatureType.FLOAT
        else:
            kind = FeatureType.STRING
        fields.append(OutputField(name=str(name), type=kind, nullable=bool(column.isna().any())))
    return fields


def output_row_problem(fields: Sequence[OutputField], row: Mapping[str, Any]) -> str | None:
    """Why one output row (JSON-like values) breaks ``fields``, or ``None``.

    The one rule for outputs, used at registration (the model's outputs on reference rows
    against the declared contract) and by validation (every scored case).
    """
    for f in fields:
        if f.name not in row:
            return f"output {f.name!r} is missing"
        value = row[f.name]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if not f.nullable:
                shown = "NaN" if value is not None else "null"
                return f"{shown} in output {f.name!r} where the output schema forbids it"
            continue
        problem = _output_type_problem(f, value)
        if problem:
            return f"output {f.name!r}: {problem}"
    return None


def _output_type_problem(f: OutputField, value: Any) -> str | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if f.type is FeatureType.FLOAT:
        if not number:
            return f"expected a number, got {value!r}"
        if math.isinf(value):
            return f"value {value!r} is not finite"
    elif f.type is FeatureType.INT:
        if not number or (isinstance(value, float) and not value.is_integer()):
            return f"expected an integer, got {value!r}"
    elif f.type is FeatureType.BOOL:
        if not isinstance(value, bool):
            return f"expected true or false, got {value!r}"
    elif not isinstance(value, str):
        return f"expected a string, got {value!r}"
    return None


def settle_outputs(
    predictions: pd.DataFrame, declared: Sequence[OutputField] | None
) -> tuple[list[OutputField], OutputContract]:
    """The output contract of a new version, from what its model returned on reference rows.

    Declared outputs are checked against those predictions. Undeclared ones are inferred,
    but never as nullable: a NaN the model returned is a defect until someone declares it
    intended, so it is refused here rather than written into the contract the model is
    later validated against.
    """
    records = predictions.to_dict(orient="records")
    if declared:
        fields = list(declared)
        for i, row in enumerate(records):
            problem = output_row_problem(fields, row)
            if problem:
                raise SchemaViolationError(
                    f"the model's outputs do not match the declared outputs: row {i} of the reference rows: {problem}"
                )
        return fields, OutputContract.DECLARED
    fields = infer_outputs(predictions)
    for f in fields:
        if f.nullable:
            count = int(predictions[f.name].isna().sum())
            raise SchemaViolationError(
                f"the model returned NaN or null in output {f.name!r} for {count} of {len(predictions)} reference "
                "rows: declare the outputs (--outputs FILE or the outputs of --schema) with nullable: true "
                "where NaN is intended"
            )
    return fields, OutputContract.INFERRED


# ---------------------------------------------------------------------------------------------
# Validation and conversion
# ---------------------------------------------------------------------------------------------


def prepare_frame(schema: ModelSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """Check ``frame`` against the schema and return the model's input columns, typed.

    Extra columns (an id, the target) are dropped. Raises :class:`SchemaViolationError`
    naming every broken field and rule (up to ``MAX_REPORTED_VIOLATIONS``).
    """
    violations: list[Violation] = []
    columns: dict[str, Any] = {}
    for feature in schema.features:
        if feature.name not in frame.columns:
            violations.append(Violation(feature.name, "required", f"missing column {feature.name!r}"))
            continue
        converted, problems = _convert_series(feature, frame[feature.name])
        violations.extend(problems)
        columns[feature.name] = converted
    raise_for(violations)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(frame)))


def prepare_records(schema: ModelSchema, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Check JSON-like rows (``[{feature: value}, ...]``) and return the typed input frame.

    JSON values are checked for their type before conversion, so ``"abc"`` for a
    float feature is a ``type`` violation rather than a silent NaN.
    """
    validator = RecordValidator(schema)
    violations: list[Violation] = []
    for row_number, record in enumerate(records):
        violations.extend(validator.check(record, row_number))
    raise_for(violations)
    return validator.frame(records)


class RecordValidator:
    """Pure-Python checks of one JSON row at a time, and one frame per batch.

    Written by hand rather than through pandas because the server validates every
    request on its own before batching: per-value Python checks cost about a
    microsecond a feature, where a pandas round trip per request costs a millisecond.
    The rules are the same as :func:`prepare_frame`'s (tested against each other).
    """

    __slots__ = ("_checks", "_features", "_floats", "schema")

    def __init__(self, schema: ModelSchema) -> None:
        self.schema = schema
        self._features = schema.features
        self._checks = [(f.name, f, _value_check(f)) for f in schema.features]
        # The common case, a float feature given a finite float within range, is tested
        # inline below without a call per feature; anything else takes the full check.
        big = sys.float_info.max  # not inf: an infinite value must fail the inline test
        self._floats = [
            (f.name, -big if f.minimum is None else f.minimum, big if f.maximum is None else f.maximum)
            for f in schema.features
            if f.type is FeatureType.FLOAT
        ]
        if len(self._floats) != len(self._checks):
            self._floats = None

    def check(self, record: Any, row: int | None = None) -> list[Violation]:
        floats = self._floats
        if floats is not None and record.__class__ is dict:
            get = record.get
            for name, low, high in floats:
                value = get(name)
                if value.__class__ is not float or not (low <= value <= high):
                    break  # NaN fails the comparison too
            else:
                return []
        return self._check(record, row)

    def _check(self, record: Any, row: int | None) -> list[Violation]:
        if not isinstance(record, Mapping):
            return [Violation("<row>", "type", "each row must be a JSON object", row)]
        problems: list[Violation] = []
        for name, feature, check in self._checks:
            value = record.get(name, _MISSING)
            if value is _MISSING or value is None:
                if not feature.nullable:
                    message = (
                        "value is missing" if value is _MISSING else "value is null but the feature is not nullable"
                    )
                    problems.append(Violation(name, "required", message, row))
                continue
            failure = check(value)
            if failure is not None:
                problems.append(Violation(name, failure[0], failure[1], row))
        return problems

    def frame(self, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """Build the typed input frame from rows that passed :meth:`check`."""
        columns: dict[str, Any] = {}
        for feature in self._features:
            name = feature.name
            values = [record.get(name) for record in records]
            columns[name] = _column_array(feature, values)
        return pd.DataFrame(columns, index=pd.RangeIndex(len(records)), copy=False)


def _column_array(feature: Feature, values: list[Any]) -> Any:
    kind = feature.type
    if kind is FeatureType.FLOAT:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if kind is FeatureType.INT:
        if any(v is None for v in values):
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        return np.array(values, dtype=np.int64)
    if kind is FeatureType.BOOL:
        if any(v is None for v in values):
            return pd.Series(values, dtype=object)
        return np.array(values, dtype=bool)
    if kind is FeatureType.DATETIME:
        # Row by row, so a row's value never depends on what it was batched with: an offset
        # becomes UTC wall time (rows with different offsets could not share a column).
        return pd.to_datetime(pd.Series([_naive(v) for v in values], dtype=object), errors="coerce").to_numpy()
    # A Series keeps Python strings as ``object``; a bare array would be re-inferred as
    # pandas' string dtype, unlike the frame path.
    return pd.Series(values, dtype=object)


def _naive(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _value_check(feature: Feature) -> Any:
    """Return ``check(value) -> (rule, message) | None`` for one non-null JSON value."""
    kind = feature.type
    low, high = feature.minimum, feature.maximum
    isfinite = math.isfinite

    if kind in NUMERIC_TYPES:
        integer = kind is FeatureType.INT

        def check_number(value: Any) -> tuple[str, str] | None:
            if value.__class__ is bool or not isinstance(value, (int, float, np.integer, np.floating)):
                ok, message = _json_type_ok(feature, value)
                return None if ok else ("type", message)
            if not isfinite(value):
                return "finite", f"value {value!r} is not finite"
            if integer and value != int(value):
                return "type", f"expected an integer, got {_describe(value)}"
            if integer and not _INT64_MIN <= value <= _INT64_MAX:  # the model's int64 column would overflow
                return "type", f"value {_describe(value)} is outside the 64-bit integer range"
            if integer and isinstance(value, float) and abs(value) > _FLOAT_EXACT:
                return "type", f"{_describe(value)} is not an exact integer; send integers this large as integers"
            if low is not None and value < low:
                return "minimum", f"value {value!r} is below the minimum {low!r}"
            if high is not None and value > high:
                return "maximum", f"value {value!r} is above the maximum {high!r}"
            return None

        return check_number

    if kind is FeatureType.CATEGORY and feature.unseen is UnseenCategories.SCORE:

        def check_open_category(value: Any) -> tuple[str, str] | None:
            return None if isinstance(value, str) else ("type", f"expected a string, got {_describe(value)}")

        return check_open_category

    if kind is FeatureType.CATEGORY:
        allowed = frozenset(feature.categories or ())
        shown = ", ".join((feature.categories or [])[:10]) + (", ..." if len(feature.categories or []) > 10 else "")

        def check_category(value: Any) -> tuple[str, str] | None:
            if not isinstance(value, str):
                return "type", f"expected a string, got {_describe(value)}"
            if value not in allowed:
                return "categories", f"{value!r} is not one of the allowed categories ({shown})"
            return None

        return check_category

    if kind is FeatureType.DATETIME:

        def check_datetime(value: Any) -> tuple[str, str] | None:
            ok, message = _json_type_ok(feature, value)
            if not ok:
                return "type", message
            if isinstance(value, str):
                try:
                    dt.datetime.fromisoformat(value)
                except ValueError:
                    return "type", f"expected an ISO 8601 date-time, got {_describe(value)}"
            return None

        return check_datetime

    def check_plain(value: Any) -> tuple[str, str] | None:
        ok, message = _json_type_ok(feature, value)
        return None if ok else ("type", message)

    return check_plain


def prepare_columns(
    schema: ModelSchema, columns: Mapping[str, Sequence[Any]], *, n_rows: int | None = None
) -> pd.DataFrame:
    """Check columnar JSON-like input (``{feature: [values...]}``) and return the typed frame."""
    violations: list[Violation] = []
    lengths = {name: len(values) for name, values in columns.items() if name in schema.feature_names}
    expected = n_rows if n_rows is not None else (max(lengths.values()) if lengths else 0)
    out: dict[str, Any] = {}
    for feature in schema.features:
        values = columns.get(feature.name)
        if values is None:
            violations.append(Violation(feature.name, "required", f"missing column {feature.name!r}"))
            continue
        if len(values) != expected:
            violations.append(Violation(feature.name, "length", f"has {len(values)} values, expected {expected}"))
            continue
        for row_number, value in enumerate(values):
            if value is None:
                continue
            ok, message = _json_type_ok(feature, value)
            if not ok:
                violations.append(Violation(feature.name, "type", message, row_number))
        converted, problems = _convert_series(feature, pd.Series(list(values), dtype=object))
        violations.extend(problems)
        out[feature.name] = converted
    raise_for(violations)
    return pd.DataFrame(out, index=pd.RangeIndex(expected))


def raise_for(violations: Iterable[Violation]) -> None:
    violations = list(violations)
    if not violations:
        return
    shown = violations[:MAX_REPORTED_VIOLATIONS]
    first = shown[0]
    where = f" (row {first.row})" if first.row is not None else ""
    more = f" and {len(violations) - 1} more" if len(violations) > 1 else ""
    raise SchemaViolationError(
        f"input does not match the model's schema: {first.field}{where}: {first.message} [rule: {first.rule}]{more}",
        details=[v.to_dict() for v in shown],
    )


class _NotANumber:
    def __repr__(self) -> str:
        return "a boolean"


_NOT_A_NUMBER = _NotANumber()


class _Missing:
    pass


_MISSING = _Missing()


def _json_type_ok(feature: Feature, value: Any) -> tuple[bool, str]:
    kind = feature.type
    if value is None:
        return True, ""
    if kind is FeatureType.FLOAT:
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
        return ok, f"expected a number, got {_describe(value)}"
    if kind is FeatureType.INT:
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        if not ok and isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
            ok = True
        return ok, f"expected an integer, got {_describe(value)}"
    if kind is FeatureType.BOOL:
        return isinstance(value, (bool, np.bool_)), f"expected true or false, got {_describe(value)}"
    if kind in (FeatureType.CATEGORY, FeatureType.STRING):
        return isinstance(value, str), f"expected a string, got {_describe(value)}"
    if kind is FeatureType.DATETIME:
        return isinstance(value, (str, dt.datetime, dt.date, pd.Timestamp)), (
            f"expected an ISO 8601 date-time string, got {_describe(value)}"
        )
    return False, f"unsupported feature type {kind}"  # pragma: no cover - enum is closed


def _describe(value: Any) -> str:
    text = reprlib.repr(value)  # bounded in depth and length: a body nested 990 deep must not recurse
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _convert_series(feature: Feature, series: pd.Series) -> tuple[pd.Series, list[Violation]]:
    """Convert one column to the model's dtype and check nulls, ranges and categories."""
    name = feature.name
    problems: list[Violation] = []
    kind = feature.type
    series = series.reset_index(drop=True)
    if kind in NUMERIC_TYPES:
        if pd.api.types.is_bool_dtype(series.dtype):
            bad = series.index
            converted = pd.Series(np.nan, index=series.index)
        else:
            if series.dtype == object:  # booleans hiding in a mixed column are not numbers
                series = series.map(lambda v: _NOT_A_NUMBER if isinstance(v, (bool, np.bool_)) else v)
            converted = pd.to_numeric(series, errors="coerce").astype("float64")
            bad = series.index[converted.isna() & series.notna()]
        problems += [
            Violation(name, "type", f"expected a number, got {_describe(series[i])}", int(i)) for i in bad[:10]
        ]
        values = converted.to_numpy()
        if kind is FeatureType.INT:
            fractional = np.isfinite(values) & (np.floor(values) != values)
            problems += [
                Violation(name, "type", f"expected an integer, got {values[i]!r}", int(i))
                for i in np.flatnonzero(fractional)[:10]
            ]
        problems += _null_violations(feature, series.isna())
        finite = np.isfinite(values)
        infinite = ~finite & ~np.isnan(values)
        problems += [
            Violation(name, "finite", f"value {values[i]!r} is not finite", int(i))
            for i in np.flatnonzero(infinite)[:10]
        ]
        if feature.minimum is not None:
            low = finite & (values < feature.minimum)
            problems += [
                Violation(name, "minimum", f"value {values[i]!r} is below the minimum {feature.minimum!r}", int(i))
                for i in np.flatnonzero(low)[:10]
            ]
        if feature.maximum is not None:
            high = finite & (values > feature.maximum)
            problems += [
                Violation(name, "maximum", f"value {values[i]!r} is above the maximum {feature.maximum!r}", int(i))
                for i in np.flatnonzero(high)[:10]
            ]
        if kind is FeatureType.INT and not converted.isna().any():
            return converted.astype("int64"), problems
        return converted, problems
    if kind is FeatureType.BOOL:
        nulls = series.isna()
        problems += _null_violations(feature, nulls)
        not_bool = ~nulls & ~series.map(lambda v: isinstance(v, (bool, np.bool_)))
        problems += [
            Violation(name, "type", f"expected true or false, got {_describe(series[i])}", int(i))
            for i in series.index[not_bool][:10]
        ]
        return (series.astype(bool) if not nulls.any() else series.astype(object)), problems
    if kind is FeatureType.DATETIME:
        converted = pd.to_datetime(series, errors="coerce", utc=False)
        bad = series.index[converted.isna() & series.notna()]
        problems += [
            Violation(name, "type", f"expected an ISO 8601 date-time, got {_describe(series[i])}", int(i))
            for i in bad[:10]
        ]
        problems += _null_violations(feature, series.isna())
        return converted, problems
    # category and string: keep Python strings, as the model saw them in training
    nulls = series.isna()
    problems += _null_violations(feature, nulls)
    as_text = series.astype(object).where(nulls, series.astype(str))
    if kind is FeatureType.CATEGORY and feature.categories is not None and feature.unseen is UnseenCategories.REFUSE:
        allowed = set(feature.categories)
        unknown = ~nulls & ~as_text.isin(allowed)
        shown = ", ".join(feature.categories[:10]) + (", ..." if len(feature.categories) > 10 else "")
        problems += [
            Violation(name, "categories", f"{as_text[i]!r} is not one of the allowed categories ({shown})", int(i))
            for i in series.index[unknown][:10]
        ]
    return as_text.where(~nulls, None), problems


def _null_violations(feature: Feature, nulls: pd.Series) -> list[Violation]:
    if feature.nullable:
        return []
    return [
        Violation(feature.name, "required", "value is null but the feature is not nullable", int(i))
        for i in nulls.index[nulls.to_numpy()][:10]
    ]


# ---------------------------------------------------------------------------------------------
# The observed profile: flags, never refusals
# ---------------------------------------------------------------------------------------------


class FlagKind(StrEnum):
    """How a scored value lies outside the training data's profile."""

    BELOW_OBSERVED = "below_observed"
    ABOVE_OBSERVED = "above_observed"
    UNSEEN_CATEGORY = "unseen_category"


@dataclass(frozen=True, slots=True)
class Flag:
    """One value of one row outside the observed profile; it was scored."""

    row: int
    feature: str
    kind: FlagKind

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "feature": self.feature, "kind": self.kind.value}


@dataclass(frozen=True, slots=True)
class ObservedFlags:
    """The flags of a batch, in row order, and how many rows were checked."""

    flags: tuple[Flag, ...]
    rows: int

    def counts(self) -> dict[tuple[str, FlagKind], int]:
        """Flags per (feature, kind): what the ``scoregate_input_flags_total`` counter adds."""
        out: dict[tuple[str, FlagKind], int] = {}
        for flag in self.flags:
            key = (flag.feature, flag.kind)
            out[key] = out.get(key, 0) + 1
        return out

    def flagged_rows(self) -> int:
        return len({flag.row for flag in self.flags})

    def summary(self) -> str:
        """One line for a terminal: which features, how many rows (empty when nothing was flagged)."""
        if not self.flags:
            return ""
        parts = [f"{feature} {kind.value} x{n}" for (feature, kind), n in sorted(self.counts().items())]
        return (
            f"{self.flagged_rows()} of {self.rows} rows outside the training data's profile "
            f"(scored, flagged): {', '.join(parts)}"
        )

    def to_list(self) -> list[dict[str, Any]]:
        return [flag.to_dict() for flag in self.flags]


NO_FLAGS = ObservedFlags((), 0)


def _observed_levels(f: Feature) -> frozenset[str] | None:
    if f.type is not FeatureType.CATEGORY:
        return None
    if f.observed is not None and f.observed.categories is not None:
        return frozenset(f.observed.categories)
    if f.unseen is UnseenCategories.SCORE:
        return frozenset(f.categories or ())
    return None


class RecordFlagger:
    """Flags JSON rows that passed :class:`RecordValidator` against the observed profile.

    Pure Python for the server's rows, like the validator; :func:`flag_frame` is the same
    rule over a typed frame (tested against each other). Only features that have a profile
    are looked at, so a version stored before the profile existed costs nothing.
    """

    __slots__ = ("_checks",)

    def __init__(self, schema: ModelSchema) -> None:
        #: (name, low, high, levels) in feature order: a range when levels is None, else the levels
        self._checks: list[tuple[str, float, float, frozenset[str] | None]] = []
        for f in schema.features:
            o = f.observed
            if f.type in NUMERIC_TYPES and o is not None and (o.minimum is not None or o.maximum is not None):
                low = -math.inf if o.minimum is None else o.minimum
                high = math.inf if o.maximum is None else o.maximum
                self._checks.append((f.name, low, high, None))
            elif (levels := _observed_levels(f)) is not None:
                self._checks.append((f.name, 0.0, 0.0, levels))

    @property
    def active(self) -> bool:
        return bool(self._checks)

    def flag(self, records: Sequence[Mapping[str, Any]], first_row: int = 0) -> ObservedFlags:
        checks = self._checks
        if not checks:
            return ObservedFlags((), len(records))
        flags: list[Flag] = []
        below, above, unseen = FlagKind.BELOW_OBSERVED, FlagKind.ABOVE_OBSERVED, FlagKind.UNSEEN_CATEGORY
        for i, record in enumerate(records):
            get = record.get
            for name, low, high, levels in checks:
                value = get(name)
                if value is None:
                    continue
                if levels is not None:
                    if value not in levels:
                        flags.append(Flag(first_row + i, name, unseen))
                elif value < low:
                    flags.append(Flag(first_row + i, name, below))
                elif value > high:
                    flags.append(Flag(first_row + i, name, above))
        return ObservedFlags(tuple(flags), len(records))


def flag_frame(schema: ModelSchema, frame: pd.DataFrame) -> ObservedFlags:
    """Flag a typed input frame (what :func:`prepare_frame` returns) against the observed profile."""
    n = len(frame)
    found: list[tuple[int, int, Flag]] = []  # (row, feature position, flag): sorted like RecordFlagger's
    for position, f in enumerate(schema.features):
        if f.name not in frame.columns:
            continue
        column = frame[f.name]
        if f.type in NUMERIC_TYPES and f.observed is not None:
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            for bound, kind, outside in (
                (f.observed.minimum, FlagKind.BELOW_OBSERVED, np.less),
                (f.observed.maximum, FlagKind.ABOVE_OBSERVED, np.greater),
            ):
                if bound is None:
                    continue
                for row in np.flatnonzero(outside(values, bound)):
                    found.append((int(row), position, Flag(int(row), f.name, kind)))
            continue
        levels = _observed_levels(f)
        if levels is not None:
            unknown = column.notna().to_numpy() & ~column.isin(levels).to_numpy()
            for row in np.flatnonzero(unknown):
                found.append((int(row), position, Flag(int(row), f.name, FlagKind.UNSEEN_CATEGORY)))
    found.sort(key=lambda item: (item[0], item[1]))
    return ObservedFlags(tuple(flag for _, _, flag in found), n)
