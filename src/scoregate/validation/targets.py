"""What validation sends its cases to: a small protocol and its implementations.

A target scores a list of JSON-like rows and answers with a :class:`Reply`: the
outputs per row, a refusal with the details naming field and rule, an error (a
crash, a 5xx, a malformed answer) or a timeout. In-process Python and a running
endpoint (plain JSON or Open Inference Protocol V2) are here; a container image
target only needs to start the image and delegate to :class:`HttpTarget`.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx
import orjson

from scoregate.errors import InvalidInputError, ScoregateError
from scoregate.registry.records import LoadedModel
from scoregate.schema import V2_DATATYPES, ModelSchema

SCORED = "scored"
REFUSED = "refused"
ERROR = "error"
TIMEOUT = "timeout"


@dataclass
class Reply:
    status: str  # scored | refused | error | timeout
    outputs: list[dict[str, Any]] | None = None
    http_status: int | None = None
    message: str = ""
    details: list[dict[str, Any]] = field(default_factory=list)
    elapsed_ms: float = 0.0
    #: for scores: the values flagged outside the observed profile (``[{"row", "feature", "kind"}]``)
    flags: list[dict[str, Any]] = field(default_factory=list)


@runtime_checkable
class Target(Protocol):
    """Somewhere to send rows.

    ``kind``: python, http or v2 (recorded in the report). ``json_only``: inputs must
    survive JSON (no NaN/inf). ``in_process``: the model runs in this process, so checks
    that measure the process (memory) can run.
    """

    description: str
    kind: str
    json_only: bool
    in_process: bool

    def score(self, rows: list[Any], timeout: float) -> Reply: ...

    def close(self) -> None: ...


def _refusal_details(exc: ScoregateError) -> list[dict[str, Any]]:
    return list(exc.details or [])


class PythonTarget:
    """The in-process scoring path: the version's scorer behind :meth:`LoadedModel.predict`.

    Requests are handled as the server handles them: an empty request is refused
    before the model (``rows``, ``min_length``), schema violations are refusals, any
    other exception is a crash. Each call runs on its own daemon thread so a hanging
    scorer costs one timeout, not the run.
    """

    kind = "python"
    json_only = False
    in_process = True

    def __init__(self, loaded: LoadedModel, description: str | None = None) -> None:
        self.loaded = loaded
        self.description = description or f"python (in-process {loaded.version.flavor} scorer of {loaded.version.ref})"

    def _call(self, rows: list[Any]) -> Reply:
        if not rows:
            exc = InvalidInputError(
                "the request has no rows", details=[{"field": "rows", "rule": "min_length", "message": "no rows"}]
            )
            return Reply(REFUSED, http_status=422, message=exc.message, details=_refusal_details(exc))
        bad = [i for i, r in enumerate(rows) if not isinstance(r, dict)]
        if bad:
            return Reply(
                REFUSED,
                http_status=422,
                message="each row must be a JSON object",
                details=[
                    {"field": "<row>", "rule": "type", "message": "each row must be a JSON object", "row": bad[0]}
                ],
            )
        try:
            frame = self.loaded.predict(rows)
        except InvalidInputError as exc:
            return Reply(REFUSED, http_status=exc.status_code, message=exc.message, details=_refusal_details(exc))
        except Exception as exc:
            return Reply(ERROR, message=f"{type(exc).__name__}: {exc}", details=[{"traceback": _short_tb()}])
        return Reply(SCORED, outputs=output_records(frame), flags=list(frame.attrs.get("flags", [])))

    def score(self, rows: list[Any], timeout: float) -> Reply:
        box: list[Reply] = []
        started = time.perf_counter()

        def run() -> None:
            try:
                box.append(self._call(rows))
            except BaseException as exc:  # pragma: no cover - _call catches Exception
                box.append(Reply(ERROR, message=f"{type(exc).__name__}: {exc}"))

        thread = threading.Thread(target=run, name="validation-case", daemon=True)
        thread.start()
        thread.join(timeout)
        elapsed = (time.perf_counter() - started) * 1000.0
        if not box:
            return Reply(TIMEOUT, message=f"no answer within {timeout:g} s", elapsed_ms=elapsed)
        reply = box[0]
        reply.elapsed_ms = elapsed
        return reply

    def close(self) -> None:
        pass


def _short_tb() -> str:
    return "".join(traceback.format_exc(limit=6))[-2000:]


def output_records(frame: Any) -> list[dict[str, Any]]:
    """An output frame as JSON-like rows (numpy scalars made plain), as every target answers."""
    out = []
    columns = [str(c) for c in frame.columns]
    for values in frame.itertuples(index=False, name=None):
        out.append({c: _plain(v) for c, v in zip(columns, values, strict=True)})
    return out


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    return value


class HttpTarget:
    """A running scoring endpoint: plain JSON (``/models/{ref}/predict``) or V2 (``/v2/models/...``)."""

    json_only = True
    in_process = False

    def __init__(
        self,
        base_url: str,
        name: str,
        version: int | str,
        schema: ModelSchema,
        *,
        protocol: str = "json",
        headers: dict[str, str] | None = None,
    ) -> None:
        if protocol not in ("json", "v2"):
            raise InvalidInputError(f"unknown protocol {protocol!r}: use json or v2")
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.version = str(version)
        self.schema = schema
        self.protocol = protocol
        self.kind = "http" if protocol == "json" else "v2"
        self.client = httpx.Client(headers=headers or {})
        if protocol == "json":
            self.url = f"{self.base_url}/models/{name}@{version}/predict"
        else:
            self.url = f"{self.base_url}/v2/models/{name}/versions/{version}/infer"
        self.description = f"{protocol} endpoint {self.url}"

    def close(self) -> None:
        self.client.close()

    def score(self, rows: list[Any], timeout: float) -> Reply:
        started = time.perf_counter()
        try:
            body = self._body(rows)
        except _CannotEncode as exc:
            return Reply(REFUSED, http_status=None, message=str(exc), details=exc.details)
        try:
            response = self.client.post(
                self.url, content=body, headers={"content-type": "application/json"}, timeout=timeout
            )
        except httpx.TimeoutException:
            return Reply(TIMEOUT, message=f"no answer within {timeout:g} s", elapsed_ms=timeout * 1000.0)
        except httpx.HTTPError as exc:
            return Reply(ERROR, message=f"request failed: {type(exc).__name__}: {exc}")
        elapsed = (time.perf_counter() - started) * 1000.0
        try:
            payload = response.json()
        except ValueError:
            return Reply(
                ERROR,
                http_status=response.status_code,
                message=f"non-JSON answer: {response.text[:200]!r}",
                elapsed_ms=elapsed,
            )
        if response.status_code == 200:
            try:
                outputs = self._outputs(payload, len(rows))
            except (KeyError, TypeError, ValueError) as exc:
                return Reply(ERROR, http_status=200, message=f"malformed answer: {exc}", elapsed_ms=elapsed)
            return Reply(SCORED, outputs=outputs, http_status=200, elapsed_ms=elapsed, flags=self._flags(payload))
        message = (payload.get("message") or payload.get("error") or "") if isinstance(payload, dict) else ""
        details = (payload.get("details") or []) if isinstance(payload, dict) else []
        status = REFUSED if response.status_code == 422 else ERROR
        if status == ERROR:
            message = f"HTTP {response.status_code}: {message}"
        return Reply(
            status, http_status=response.status_code, message=str(message), details=list(details), elapsed_ms=elapsed
        )

    # -- encoding --------------------------------------------------------------------------------

    def _body(self, rows: list[Any]) -> bytes:
        if self.protocol == "json":
            return orjson.dumps({"rows": rows})
        return orjson.dumps(v2_request(self.schema, rows))

    def _flags(self, payload: Any) -> list[dict[str, Any]]:
        """The flags a scoregate server returns: ``flags`` (plain JSON), ``parameters.flags`` (V2)."""
        if self.protocol == "v2":
            parameters = payload.get("parameters")
            payload = parameters if isinstance(parameters, dict) else {}
        flags = payload.get("flags")
        return [f for f in flags if isinstance(f, dict)] if isinstance(flags, list) else []

    def _outputs(self, payload: Any, n: int) -> list[dict[str, Any]]:
        if self.protocol == "json":
            predictions = payload["predictions"]
            if not isinstance(predictions, list):
                raise TypeError("predictions is not a list")
            return predictions
        tensors = payload["outputs"]
        columns = {t["name"]: t.get("data") or [] for t in tensors}
        return [{name: values[i] for name, values in columns.items()} for i in range(n)]


class _CannotEncode(Exception):
    def __init__(self, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.details = details


def v2_request(schema: ModelSchema, rows: list[Any]) -> dict[str, Any]:
    """One tensor per feature present in the rows; a feature absent from every row is left out."""
    if any(not isinstance(r, dict) for r in rows):
        raise _CannotEncode(
            "a V2 request cannot carry a row that is not an object",
            [{"field": "<row>", "rule": "type", "message": "not encodable as V2 tensors (client-side)"}],
        )
    inputs = []
    for f in schema.features:
        if rows and all(f.name not in r for r in rows):
            continue
        values = [r.get(f.name) for r in rows]
        inputs.append({"name": f.name, "datatype": V2_DATATYPES[f.type], "shape": [len(rows)], "data": values})
    known = set(schema.feature_names)
    for name in dict.fromkeys(k for r in rows for k in r if k not in known):  # sent, so the server can refuse it
        values = [r.get(name) for r in rows]
        datatype = "FP64" if all(is_number(v) for v in values) else "BYTES"
        inputs.append({"name": str(name), "datatype": datatype, "shape": [len(rows)], "data": values})
    return {"inputs": inputs}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
