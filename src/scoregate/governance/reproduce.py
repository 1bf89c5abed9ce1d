"""Reproduce a logged prediction: re-score its inputs with the exact registered version.

The prediction log holds, per scored row, the request id, the version that answered,
the inputs as received and the outputs as returned. Reproducing a request loads that
version through the registry (which verifies the artifact's sha256 before loading),
scores the logged inputs again and compares every output: numbers within an absolute
tolerance, labels (integers, booleans, strings) exactly. On a difference, the result
also lists the packages whose installed version differs from the lock recorded at
registration, the usual reason a model scores differently today.
"""

from __future__ import annotations

import datetime as dt
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from scoregate.errors import InvalidInputError, NotFoundError, ScoregateError
from scoregate.schema import FeatureType

#: Default largest absolute difference accepted between a logged and a re-scored number.
DEFAULT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class OutputDifference:
    """One output value that did not reproduce; ``size`` is inf when not comparable as numbers."""

    row: int
    output: str
    logged: Any
    rescored: Any
    size: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "output": self.output,
            "logged": self.logged,
            "rescored": self.rescored,
            "difference": self.size if math.isfinite(self.size) else "incomparable",
        }


@dataclass(frozen=True)
class PackageDifference:
    """A package whose version differs between the recorded lock and this environment."""

    name: str
    recorded: str | None
    current: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "recorded": self.recorded, "current": self.current}


@dataclass
class ReproducedRequest:
    """One logged request (its primary, non-shadow rows) scored again."""

    request_id: str
    ref: str
    artifact_digest: str
    logged_at: dt.datetime
    route: str
    rows: int
    tolerance: float
    #: largest absolute difference per output (0 for an equal label, inf for a differing one)
    max_difference: dict[str, float] = field(default_factory=dict)
    differences: list[OutputDifference] = field(default_factory=list)
    #: why the version could not score the logged inputs again (a mismatch too)
    error: str | None = None

    @property
    def matched(self) -> bool:
        return self.error is None and not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "ref": self.ref,
            "artifact_digest": self.artifact_digest,
            "logged_at": self.logged_at.isoformat(),
            "route": self.route,
            "rows": self.rows,
            "tolerance": self.tolerance,
            "matched": self.matched,
            "max_difference": {k: v if math.isfinite(v) else "incomparable" for k, v in self.max_difference.items()},
            "differences": [d.to_dict() for d in self.differences],
            "error": self.error,
        }


@dataclass
class ReproduceResult:
    """Every logged request with the id (normally one) and the environment differences."""

    request_id: str
    requests: list[ReproducedRequest]
    #: packages that differ from the lock recorded with the version(s) (python included)
    packages: list[PackageDifference] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return all(r.matched for r in self.requests)

    @property
    def differences(self) -> list[OutputDifference]:
        return [d for r in self.requests for d in r.differences]

    @property
    def max_difference(self) -> float:
        sizes = [v for r in self.requests for v in r.max_difference.values()]
        return max(sizes, default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "matched": self.matched,
            "requests": [r.to_dict() for r in self.requests],
            "packages": [p.to_dict() for p in self.packages],
        }

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)


def read_logged_request(predictions_dir: Path | str, request_id: str) -> Any:
    """The primary (non-shadow) rows logged for ``request_id`` (a server id, or a client's id,
    which may name several requests), in timestamp and row order.

    The filter is pushed down to the Parquet scan, so only matching row groups are decoded.
    """
    import pandas as pd
    import pyarrow.dataset as ds

    from scoregate.registry.predictions import PARTITION_SCHEMA, ROW_SCHEMA, predictions_dataset, request_filter

    root = Path(predictions_dir)
    if not root.is_dir():
        return pd.DataFrame(columns=[*ROW_SCHEMA.names, *PARTITION_SCHEMA.names])
    condition = request_filter(request_id) & ~ds.field("shadow")
    frame = predictions_dataset(root).to_table(filter=condition).to_pandas()
    return frame.sort_values(["timestamp", "request_id", "model", "version", "row"], kind="stable").reset_index(
        drop=True
    )


def reproduce(
    registry: Any,
    request_id: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    predictions_dir: Path | str | None = None,
) -> ReproduceResult:
    """Re-score the inputs logged for ``request_id`` (the server's id, or the client's) with the
    version that answered it.

    Raises :class:`NotFoundError` when the log has no primary rows for the id; an
    artifact whose bytes no longer match their digest raises ``IntegrityError`` (from
    the registry) rather than reproducing anything.
    """
    if not request_id or not request_id.strip():
        raise InvalidInputError("a request id is required")
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise InvalidInputError(f"invalid tolerance {tolerance!r}: must be a finite number >= 0")
    folder = Path(predictions_dir) if predictions_dir is not None else registry.settings.predictions_dir
    frame = read_logged_request(folder, request_id)
    if frame.empty:
        raise NotFoundError(f"request id {request_id!r} is not in the prediction log at {folder}")
    results: list[ReproducedRequest] = []
    locks: dict[str, dict[str, Any]] = {}
    groups = frame.groupby(["timestamp", "request_id", "model", "version"], sort=True)
    for (timestamp, served_id, model, version), rows in groups:
        rows = rows.sort_values("row", kind="stable")
        loaded = registry.load(f"{model}@{int(version)}")  # verifies the artifact digest
        record = loaded.version
        locks[record.ref] = record.environment or {}
        inputs = [orjson.loads(v) for v in rows["inputs"]]
        logged = [orjson.loads(v) for v in rows["outputs"]]
        result = ReproducedRequest(
            request_id=str(served_id),
            ref=record.ref,
            artifact_digest=record.artifact_digest,
            logged_at=timestamp.to_pydatetime(),
            route=str(rows["route"].iloc[0] or ""),
            rows=len(rows),
            tolerance=tolerance,
        )
        try:
            rescored = loaded.predict(inputs).to_dict(orient="records")
        except ScoregateError as exc:
            result.error = f"{record.ref} refused the logged inputs: {exc.message}"
        except Exception as exc:  # a flavor failing on inputs it once scored is a finding, not a crash
            result.error = f"{record.ref} failed on the logged inputs: {type(exc).__name__}: {exc}"
        else:
            kinds = {o.name: o.type for o in record.output_schema}
            _compare(result, logged, rescored, kinds)
        results.append(result)
    return ReproduceResult(request_id, results, package_differences(locks.values()))


def _compare(
    result: ReproducedRequest,
    logged: list[dict[str, Any]],
    rescored: list[dict[str, Any]],
    kinds: dict[str, FeatureType],
) -> None:
    if len(rescored) != len(logged):
        result.error = f"re-scoring gave {len(rescored)} output rows for {len(logged)} logged rows"
        return
    for row, (was, now) in enumerate(zip(logged, rescored, strict=True)):
        for name in dict.fromkeys([*was, *now]):
            if name not in was or name not in now:
                size = math.inf
                exact = True
            else:
                size = _difference(was[name], now[name])
                kind = kinds.get(name)
                exact = kind is not FeatureType.FLOAT if kind is not None else not _is_float(was[name])
            result.max_difference[name] = max(result.max_difference.get(name, 0.0), size)
            if (size != 0.0) if exact else not (size <= result.tolerance):
                result.differences.append(OutputDifference(row, name, was.get(name), _plain(now.get(name)), size))


def _is_float(value: Any) -> bool:
    return isinstance(value, float)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _difference(logged: Any, rescored: Any) -> float:
    """|logged - rescored| for numbers (0 for two NaNs), else 0 when equal and inf when not."""
    a, b = _number(logged), _number(rescored)
    if a is not None and b is not None:
        if math.isnan(a) or math.isnan(b):
            return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
        if math.isinf(a) or math.isinf(b):
            return 0.0 if a == b else math.inf
        return abs(a - b)
    rescored = _plain(rescored)
    if logged is None and rescored is None:
        return 0.0
    return 0.0 if logged == rescored else math.inf


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value the log's JSON holds."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (str, bytes)):
        try:
            return item()
        except (TypeError, ValueError):
            return value
    if isinstance(value, float) and math.isnan(value):
        return None  # JSON has no NaN: the log holds null
    return value


def current_lock() -> dict[str, str]:
    """Installed distributions as the registry records them at registration."""
    from scoregate.registry.lineage import environment

    return dict(environment(())["lock"])


def package_differences(environments: Any) -> list[PackageDifference]:
    """Packages (and python) whose version differs from the recorded environment(s)."""
    current = current_lock()
    found: dict[str, PackageDifference] = {}
    for recorded_env in environments:
        recorded_python = recorded_env.get("python")
        if recorded_python and recorded_python != platform.python_version():
            found["python"] = PackageDifference("python", recorded_python, platform.python_version())
        lock = recorded_env.get("lock") or {}
        for name in sorted(set(lock) | set(current)):
            if lock.get(name) != current.get(name):
                found.setdefault(name, PackageDifference(name, lock.get(name), current.get(name)))
    return sorted(found.values(), key=lambda p: (p.name != "python", p.name))


__all__ = [
    "DEFAULT_TOLERANCE",
    "OutputDifference",
    "PackageDifference",
    "ReproduceResult",
    "ReproducedRequest",
    "package_differences",
    "read_logged_request",
    "reproduce",
]
