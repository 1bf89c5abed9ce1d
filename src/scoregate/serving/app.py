"""The scoring server as a raw ASGI application (no framework on the hot path).

Routes:

* ``POST /models/{name}@{alias-or-version}/predict`` - plain JSON, ``{"rows": [...]}`` or
  ``{"columns": {...}}``
* Open Inference Protocol V2: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``,
  ``GET /v2/models/{name}[/versions/{v}]``, ``GET .../ready``, ``POST .../infer``
* ``GET /models`` (what this worker serves), ``GET /metrics``, ``GET /openapi.json``
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, NoReturn

import orjson

from scoregate.errors import InvalidInputError, InvalidReferenceError, NotFoundError, ScoregateError
from scoregate.registry.predictions import PredictionLog
from scoregate.schema import MAX_REPORTED_VIOLATIONS, Violation, raise_for
from scoregate.serving import v2
from scoregate.serving.batcher import BatcherClosed, Outputs
from scoregate.serving.metrics import Metrics
from scoregate.serving.openapi import openapi_document
from scoregate.serving.source import ModelSource
from scoregate.serving.state import DEFAULT_DIRECT_BELOW, Route, Served, ServingState

log = logging.getLogger("scoregate.serving")

DEFAULT_MAX_BODY = 10 * 1024 * 1024
#: Requests waiting for one model version before new ones get 503 (load shedding): past
#: this a client is better served by a quick "retry later" than by a queue it cannot see.
DEFAULT_MAX_QUEUED = 1000
JSON = b"application/json"
_perf = time.perf_counter


class HTTPError(ScoregateError):
    def __init__(self, status: int, code: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status_code = status
        self.code = code
        self.headers = headers


_GET_PATHS = frozenset(
    {"/v2/health/live", "/v2/health/ready", "/v2", "/metrics", "/openapi.json", "/models", "/models/"}
)


def allowed_methods(path: str) -> bytes | None:
    """The methods a route takes (the ``Allow`` header of a 405), or None for no such route."""
    if (path.startswith("/models/") and path.endswith("/predict")) or (
        path.startswith("/v2/models/") and path.endswith("/infer")
    ):
        return b"POST"
    if path in _GET_PATHS or path.startswith("/v2/models/"):
        return b"GET, HEAD"
    return None


class _Disconnected(Exception):
    pass


def _error_body(exc: ScoregateError, request_id: str, *, v2_style: bool) -> bytes:
    body = exc.to_dict()
    if v2_style:  # the V2 protocol's error field is the message
        body = {"error": exc.message, "code": exc.code, **({"details": exc.details} if exc.details else {})}
    body["request_id"] = request_id
    return orjson.dumps(body)


class ScoringApp:
    """ASGI callable. Build it with :func:`create_app`."""

    def __init__(
        self,
        state: ServingState,
        metrics: Metrics,
        prediction_log: PredictionLog | None,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        shadow_max_pending: int = 1000,
        max_queued_requests: int = DEFAULT_MAX_QUEUED,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.log = prediction_log
        self.max_body_bytes = int(max_body_bytes)
        self.shadow_max_pending = shadow_max_pending
        self.max_queued_requests = int(max_queued_requests)
        self._openapi: bytes | None = None
        # Request ids: a random per-process prefix and a counter. uuid4() per request reads
        # the OS random source each time, which cost 15% of the event loop's time under load.
        prefix = uuid.uuid4().hex[:16]
        counter = itertools.count(1)
        self._new_request_id = lambda: f"{prefix}{next(counter):016x}"

    # --- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("scoring server failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        if self.log is not None:
            self.log.start()
        await self.state.start()
        # The models and libraries loaded so far live as long as the worker: move them out
        # of the collector's reach, so a full collection under load walks only request
        # garbage (full collections over the loaded frameworks were the p99 outliers).
        gc.collect()
        gc.freeze()

    async def shutdown(self) -> None:
        await self.state.stop()  # drains every scoring thread, shadows included
        if self.log is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.log.close)

    # --- HTTP -----------------------------------------------------------------------------------

    async def _http(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        started = _perf()
        request_id = None
        content_length = -1
        header_length = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                if 0 < len(value) <= 200:
                    request_id = value.decode("latin-1")
            elif key == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = -1
            elif key == b"inference-header-content-length":
                try:
                    header_length = int(value)
                except ValueError:
                    header_length = -1
        if request_id is None:
            request_id = self._new_request_id()
        path: str = scope["path"]
        method: str = scope["method"]
        v2_style = path.startswith("/v2")
        served: Served | None = None
        protocol = "v2" if v2_style else "json"
        extra_headers: list[tuple[bytes, bytes]] = []
        binary_header = None
        try:
            if method == "POST":
                if content_length > self.max_body_bytes:
                    raise HTTPError(413, "payload_too_large", self._too_large(content_length))
                body = await self._read_body(receive)
                if path.startswith("/models/") and path.endswith("/predict"):
                    status, payload, served = await self._plain(path[8:-8], body, request_id, started)
                elif v2_style and path.endswith("/infer"):
                    status, payload, served, binary_header = await self._v2_infer(
                        path, body, header_length, request_id, started
                    )
                    if binary_header is not None:
                        content_type = b"application/octet-stream"
                        extra_headers.append((b"inference-header-content-length", str(binary_header).encode()))
                else:
                    self._unknown_route(path, method)
                if binary_header is None:
                    content_type = JSON
            elif method in ("GET", "HEAD"):
                protocol = "meta"
                status, payload, content_type = self._get(path)
            else:
                self._unknown_route(path, method)
        except _Disconnected:
            return
        except ScoregateError as exc:
            status, payload, content_type = exc.status_code, _error_body(exc, request_id, v2_style=v2_style), JSON
            extra_headers.extend(getattr(exc, "headers", ()))
            if status == 503:
                extra_headers.append((b"retry-after", b"1"))
            labels = (served.name, served.version_label) if served is not None else ("", "")
            self.metrics.child(self.metrics.errors, *labels, exc.code).inc()
        except Exception as exc:  # a model or server bug: report it, never hang the client
            log.exception("request %s failed", request_id)
            err = HTTPError(500, "internal_error", f"internal error: {type(exc).__name__}: {exc}")
            status, payload, content_type = 500, _error_body(err, request_id, v2_style=v2_style), JSON
            labels = (served.name, served.version_label) if served is not None else ("", "")
            self.metrics.child(self.metrics.errors, *labels, "internal_error").inc()
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(payload)).encode()),
            (b"x-request-id", request_id.encode("latin-1")),
        ]
        if served is not None:
            headers.append((b"x-model-version", served.header))
            served.m_latency.observe(_perf() - started)
        if extra_headers:
            headers.extend(extra_headers)
        if protocol != "meta":
            labels = (served.name, served.version_label) if served is not None else ("", "")
            self.metrics.child(self.metrics.requests, *labels, protocol, str(status)).inc()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else payload})

    def _too_large(self, size: int) -> str:
        return f"request body of {size} bytes exceeds the limit of {self.max_body_bytes} bytes"

    async def _read_body(self, receive: Callable[..., Any]) -> bytes:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        body = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > self.max_body_bytes:
                raise HTTPError(413, "payload_too_large", self._too_large(len(body)))
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise HTTPError(413, "payload_too_large", self._too_large(size))
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _unknown_route(path: str, method: str) -> NoReturn:
        allow = allowed_methods(path)
        if allow is None or method.encode() in allow.split(b", "):
            raise HTTPError(404, "no_route", f"no route {method} {path}")
        message = f"{method} is not allowed on {path}: use {allow.decode()}"
        raise HTTPError(405, "method_not_allowed", message, headers=((b"allow", allow),))

    # --- scoring --------------------------------------------------------------------------------

    def _check(self, served: Served, records: list[Any]) -> None:
        check = served.validator.check
        if len(records) == 1:
            problems = check(records[0], 0)
        else:
            problems: list[Violation] = []
            for i, record in enumerate(records):
                problems.extend(check(record, i))
                if len(problems) >= MAX_REPORTED_VIOLATIONS:
                    break
        if problems:
            raise_for(problems)

    async def _score(self, route: Route, records: list[Any]) -> tuple[Served, Outputs]:
        """Route, validate and score; no await between the route lookup and the queueing."""
        if not records:
            raise InvalidInputError(
                "the request has no rows", details=[{"field": "rows", "rule": "min_length", "message": "no rows"}]
            )
        served = route.pick(records[0])
        self._check(served, records)
        queued = served.batcher.pending()
        if queued >= self.max_queued_requests:
            raise HTTPError(
                503,
                "overloaded",
                f"{served.ref} has {queued} requests waiting (limit {self.max_queued_requests}); retry later",
            )
        try:
            future = served.batcher.submit(records)
        except BatcherClosed:  # retired by a hot swap between lookup and submit: cannot happen
            raise HTTPError(503, "unavailable", f"{served.ref} was just retired; retry") from None
        return served, await future

    def _after(
        self,
        route: Route,
        served: Served,
        request_id: str,
        records: list[Any],
        outputs: Outputs,
        started: float,
        kind: str,
    ) -> None:
        latency_ms = (_perf() - started) * 1000.0
        served.m_rows.inc(len(records))
        if self.log is not None:
            self.log.append(served.name, served.version, request_id, records, outputs, latency_ms, route=kind)
        shadow = route.want_shadow()
        if shadow is not None and shadow is not served:
            self._send_shadow(shadow, request_id, records, kind)

    def _send_shadow(self, shadow: Served, request_id: str, records: list[Any], kind: str) -> None:
        if shadow.batcher.pending() >= self.shadow_max_pending:
            self.metrics.child(self.metrics.shadow_dropped, shadow.name, shadow.version_label).inc()
            return
        started = _perf()
        plog = self.log
        rows = self.metrics.child(self.metrics.rows, shadow.name, shadow.version_label, "true")

        def done(outputs: Outputs | None, error: Any) -> None:
            if error is not None or outputs is None:
                return
            rows.inc(len(records))
            if plog is not None:
                plog.append(
                    shadow.name,
                    shadow.version,
                    request_id,
                    records,
                    outputs,
                    (_perf() - started) * 1000.0,
                    shadow=True,
                    route=kind,
                )

        shadow.batcher.submit_callback(records, done)

    async def _plain(self, ref_text: str, body: bytes, request_id: str, started: float) -> tuple[int, bytes, Any]:
        name, at, selector = ref_text.partition("@")
        if at and not selector:
            raise InvalidReferenceError(f"{ref_text!r}: after '@' comes a version or an alias")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, "bad_request", f"malformed JSON: {exc}") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "bad_request", 'the body must be a JSON object: {"rows": [...]} or {"columns": {...}}')
        route = self.state.route(name, selector or None)
        records = data.get("rows")
        if records is None:
            columns = data.get("columns")
            if columns is None:
                raise InvalidInputError(
                    'the body needs "rows" (a list of objects) or "columns" (an object of lists)',
                    details=[{"field": "rows", "rule": "required", "message": 'give "rows" or "columns"'}],
                )
            records = _columns_to_rows(columns)
        elif not isinstance(records, list):
            raise InvalidInputError(
                '"rows" must be a list of objects',
                details=[
                    {"field": "rows", "rule": "type", "message": f"expected a list, got {type(records).__name__}"}
                ],
            )
        served, outputs = await self._score(route, records)
        kind = f"{name}@{selector}" if selector else name
        self._after(route, served, request_id, records, outputs, started, kind)
        payload = orjson.dumps(
            {
                "model": served.name,
                "version": served.version,
                "ref": served.ref,
                "alias": route.alias,
                "request_id": request_id,
                "predictions": outputs.rows(),
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        return 200, payload, served

    def _v2_target(self, path: str) -> tuple[str, str | None, str]:
        """``/v2/models/{name}[/versions/{v}][/{action}]`` -> (name, version, action)."""
        parts = path[len("/v2/models/") :].split("/")
        name = parts[0]
        version = None
        rest = parts[1:]
        if len(rest) >= 2 and rest[0] == "versions":
            version = rest[1]
            rest = rest[2:]
        if len(rest) > 1 or not name:
            raise HTTPError(404, "no_route", f"no route {path}")
        return name, version, rest[0] if rest else ""

    async def _v2_infer(
        self, path: str, body: bytes, header_length: int | None, request_id: str, started: float
    ) -> tuple[int, bytes, Any, int | None]:
        if not path.startswith("/v2/models/"):
            raise HTTPError(404, "no_route", f"no route POST {path}")
        name, version, action = self._v2_target(path)
        if action != "infer":
            raise HTTPError(404, "no_route", f"no route POST {path}")
        if header_length == -1:
            raise v2.BadRequest("Inference-Header-Content-Length is not an integer")
        request, binary = v2.split_body(body, header_length)
        route = self.state.route(name, version)
        records = v2.decode_inputs(request, binary, route.primary.info.input_schema)
        if isinstance(request.get("id"), str):
            request_id = request["id"] if request["id"] else request_id
        served, outputs = await self._score(route, records)
        self._after(route, served, request_id, records, outputs, started, f"v2:{name}")
        payload, binary_header = v2.encode_response(served.name, served.version, request, outputs, len(records))
        return 200, payload, served, binary_header

    # --- metadata routes ---------------------------------------------------------------------------

    def _get(self, path: str) -> tuple[int, bytes, bytes]:
        state = self.state
        if path == "/v2/health/live":
            return 200, b'{"live":true}', JSON
        if path == "/v2/health/ready":
            ready = state.ready
            return (200 if ready else 503), orjson.dumps({"ready": ready}), JSON
        if path == "/v2":
            return (
                200,
                orjson.dumps({"name": "scoregate", "version": _version(), "extensions": ["binary_tensor_data"]}),
                JSON,
            )
        if path == "/metrics":
            payload, content_type = self.metrics.exposition()
            return 200, payload, content_type.encode()
        if path == "/openapi.json":
            if self._openapi is None:
                self._openapi = orjson.dumps(openapi_document(_version()))
            return 200, self._openapi, JSON
        if path in ("/models", "/models/"):
            return 200, orjson.dumps(self._listing()), JSON
        if path.startswith("/v2/models/"):
            name, version, action = self._v2_target(path)
            if action == "ready":
                try:
                    state.route(name, version)
                except NotFoundError:
                    return 404, orjson.dumps({"name": name, "ready": False}), JSON
                return 200, orjson.dumps({"name": name, "ready": True}), JSON
            if action:
                self._unknown_route(path, "GET")
            route = state.route(name, version)
            entry = state.table.models[name]
            s = route.primary
            meta = v2.model_metadata(name, sorted(entry.versions), s.info.input_schema, s.info.flavor, s.outputs)
            if version is not None:
                meta["versions"] = [str(s.version)]
            return 200, orjson.dumps(meta), JSON
        self._unknown_route(path, "GET")

    def _listing(self) -> dict[str, Any]:
        out = []
        for name, entry in sorted(self.state.table.models.items()):
            aliases = {}
            for alias, route in sorted(entry.aliases.items()):
                aliases[alias] = {
                    "version": route.primary.version,
                    "policy": route.policy.model_dump(exclude_none=True) if route.policy else None,
                }
            out.append(
                {
                    "name": name,
                    "versions": sorted(entry.versions),
                    "aliases": aliases,
                    "default_version": entry.default.primary.version if entry.default else None,
                }
            )
        return {"models": out, "revision": self.state.table.revision}


def _columns_to_rows(columns: Any) -> list[dict[str, Any]]:
    if not isinstance(columns, dict) or not all(isinstance(v, list) for v in columns.values()):
        raise InvalidInputError(
            '"columns" must be an object mapping each feature to a list of values',
            details=[{"field": "columns", "rule": "type", "message": "expected an object of lists"}],
        )
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        expected = max(lengths)
        details = [
            {"field": k, "rule": "length", "message": f"has {len(v)} values, expected {expected}"}
            for k, v in columns.items()
            if len(v) != expected
        ]
        raise InvalidInputError(
            f"columns have different lengths: {details[0]['field']} {details[0]['message']}", details=details
        )
    n = lengths.pop() if lengths else 0
    items = list(columns.items())
    return [{k: v[i] for k, v in items} for i in range(n)]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("scoregate")
    except Exception:  # pragma: no cover
        return "0"


def create_app(
    source: ModelSource | Callable[[], ModelSource],
    *,
    predictions_dir: Any = None,
    models: list[str] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    max_batch_rows: int = 256,
    poll_interval: float = 0.5,
    log_flush_interval: float = 1.0,
    log_flush_rows: int = 50_000,
    scorer_threads: int | None = None,
    shadow_max_pending: int = 1000,
    max_queued_requests: int = DEFAULT_MAX_QUEUED,
    scoring: str = "thread",
    direct_below: float = DEFAULT_DIRECT_BELOW,
) -> ScoringApp:
    """Build the ASGI app. ``source`` is a :class:`ModelSource` or a zero-argument factory
    (called on the loader thread at startup, e.g. ``lambda: RegistrySource.open(settings)``).
    ``predictions_dir=None`` turns the prediction log off. ``scoring``: ``thread`` (each model
    version on its own scoring thread, the default) or ``inline`` (on the event loop: lower
    latency for fast models when one worker serves few models; a slow model then delays
    the others, so it is opt-in). ``direct_below``: in thread mode, a lone request to a
    model whose calls take less than this many seconds is scored on the event loop while
    the model's thread is idle (0 turns the shortcut off; see :mod:`.batcher`)."""
    factory = source if callable(source) and not hasattr(source, "revision") else (lambda: source)
    metrics = Metrics()
    state = ServingState(
        factory,
        metrics,
        models=models,
        max_batch_rows=max_batch_rows,
        poll_interval=poll_interval,
        scorer_threads=scorer_threads,
        scoring=scoring,
        direct_below=direct_below,
    )
    plog = None
    if predictions_dir is not None:
        from pathlib import Path

        plog = PredictionLog(Path(predictions_dir), flush_interval=log_flush_interval, flush_rows=log_flush_rows)
    return ScoringApp(
        state,
        metrics,
        plog,
        max_body_bytes=max_body_bytes,
        shadow_max_pending=shadow_max_pending,
        max_queued_requests=max_queued_requests,
    )
