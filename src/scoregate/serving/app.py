"""The scoring server as a raw ASGI application (no framework on the hot path).

Routes:

* ``POST /models/{name}@{alias-or-version}/predict`` - plain JSON, ``{"rows": [...]}`` or
  ``{"columns": {...}}``
* Open Inference Protocol V2: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``,
  ``GET /v2/models/{name}[/versions/{v}]``, ``GET .../ready``, ``POST .../infer``
* MLflow's scoring protocol (:mod:`.mlflow_protocol`): ``POST /invocations``, ``GET /ping``,
  ``GET /health``, ``GET /version``
* ``GET /models`` (what this worker serves), ``GET /metrics``, ``GET /openapi.json``

Every request is bounded: its body (``max_body_bytes``, 413), its rows
(``max_request_rows``, 413), and the time it holds the event loop. A request of more
than ``max_batch_rows`` rows is validated in slices with a yield to the loop between
them, queued as slices that its model's scorer takes only when no other request is
waiting, and logged in slices: it delays the others by about one slice's work, not by
its whole size. Every decision gets a server id (:mod:`.ids`) and, unless the log's
durability is ``off``, is durable in the prediction log before its response goes out
(:mod:`.durable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from scoregate.errors import InvalidInputError, InvalidReferenceError, ScoregateError
from scoregate.extra_fields import check_records
from scoregate.extra_fields import violations as undeclared_violations
from scoregate.memory import MemoryTrim
from scoregate.registry.predictions import Durability, PredictionLog
from scoregate.schema import MAX_REPORTED_VIOLATIONS, ObservedFlags, Violation, raise_for
from scoregate.serving import mlflow_protocol, v2
from scoregate.serving.auth import TokenCheck
from scoregate.serving.batcher import BatcherClosed, Outputs
from scoregate.serving.durable import LoopCommit
from scoregate.serving.errors import HTTPError, error_body
from scoregate.serving.ids import client_request_id, server_ids
from scoregate.serving.metrics import Metrics
from scoregate.serving.openapi import openapi_document
from scoregate.serving.options import DEFAULT_MAX_BODY, DEFAULT_MAX_QUEUED, ServeOptions
from scoregate.serving.source import ModelSource
from scoregate.serving.state import Route, Served, ServingState

if TYPE_CHECKING:  # imported when monitoring is on: its statistics pull in scipy
    from scoregate.serving.monitoring import LiveMonitor

log = logging.getLogger("scoregate.serving")

__all__ = ["DEFAULT_MAX_BODY", "DEFAULT_MAX_QUEUED", "HTTPError", "ScoringApp", "allowed_methods", "create_app"]

JSON = b"application/json"
_perf = time.perf_counter
#: Seconds between refreshes of the gauges (in flight, queue depth, process).
GAUGE_INTERVAL = 1.0
#: Bodies from this size on are followed by handing freed heap memory back (:mod:`.memory`).
LARGE_BODY = 1 << 20
_OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", *mlflow_protocol.HEALTH_PATHS})
_GET_PATHS = frozenset(
    {
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/metrics",
        "/openapi.json",
        "/models",
        "/models/",
        "/version",
        *mlflow_protocol.HEALTH_PATHS,
    }
)
_JSON_TYPES = frozenset({b"application/json"})
_MLFLOW_TYPES = frozenset({b"application/json", b"text/csv"})
_BINARY_TYPES = frozenset({b"application/json", b"application/octet-stream"})


def allowed_methods(path: str) -> bytes | None:
    """The methods a route takes (the ``Allow`` header of a 405), or None for no such route."""
    if (
        (path.startswith("/models/") and path.endswith("/predict"))
        or (path.startswith("/v2/models/") and path.endswith("/infer"))
        or path == mlflow_protocol.INVOCATIONS
    ):
        return b"POST"
    if path in _GET_PATHS or path.startswith("/v2/models/"):
        return b"GET, HEAD"
    return None


class _Disconnected(Exception):
    pass


class _Exchange:
    """What a handler learned about its request, for the response and the metrics."""

    __slots__ = ("client_id", "model", "served")

    def __init__(self) -> None:
        self.client_id: str | None = None
        self.model = ""  # a served model's name once the path named one
        self.served: Served | None = None

    def labels(self) -> tuple[str, str]:
        served = self.served
        return (served.name, served.version_label) if served is not None else (self.model, "")


def _media_type(value: bytes | None) -> bytes | None:
    if value is None:
        return None
    return value.split(b";", 1)[0].strip().lower()


class ScoringApp:
    """ASGI callable. Build it with :func:`create_app`."""

    def __init__(
        self,
        state: ServingState,
        metrics: Metrics,
        prediction_log: PredictionLog | None,
        options: ServeOptions | None = None,
    ) -> None:
        options = options or ServeOptions()
        self.options = options
        self.state = state
        self.metrics = metrics
        self.log = prediction_log
        self.max_body_bytes = options.max_body_bytes
        self.max_request_rows = options.max_request_rows
        self.slice_rows = options.max_batch_rows
        self.shadow_max_pending = options.shadow_max_pending
        self.max_queued_requests = options.max_queued_requests
        self.tokens: TokenCheck | None = None
        if options.require_token:
            self.tokens = TokenCheck(options.token_role)
            state.on_credentials = self.tokens.update
        self._commit: LoopCommit | None = None
        if prediction_log is not None and prediction_log.durability is not Durability.OFF:
            self._commit = LoopCommit(
                prediction_log, observe=metrics.log_commit.observe, in_flight=lambda: self.in_flight
            )
        self._openapi: tuple[Any, bytes] | None = None
        self.worker_id, self._new_request_id = server_ids(prediction_log.owner if prediction_log else None)
        self.in_flight = 0
        self._gauges: asyncio.Task[None] | None = None
        self._trim = MemoryTrim()
        #: Live monitoring (:mod:`.monitoring`), set by :func:`create_app` unless it is off.
        self.monitor: LiveMonitor | None = None

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
                except ScoregateError as exc:  # one line, no traceback: the reason is the message
                    log.error("the scoring server cannot start: %s", exc.message)
                    await send({"type": "lifespan.startup.failed", "message": exc.message})
                    return
                except Exception as exc:
                    log.exception("the scoring server failed to start")
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
        if self.monitor is not None:
            self.monitor.start()
        if self.tokens is not None and getattr(self.state.source, "credentials", None) is None:
            log.warning("--require-token: the model source keeps no tokens; every scoring request will get 401")
        self._refresh_gauges()
        self._gauges = asyncio.create_task(self._gauge_loop(), name="scoregate-gauges")
        # The models and libraries loaded so far live as long as the worker: move them out
        # of the collector's reach, so a full collection under load walks only request
        # garbage (full collections over the loaded frameworks were the p99 outliers).
        gc.collect()
        gc.freeze()

    async def shutdown(self) -> None:
        if self._gauges is not None:
            self._gauges.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gauges
        await self.state.stop()  # drains every scoring thread, shadows included
        if self.monitor is not None:  # counts the last rows and writes the open windows
            await asyncio.get_running_loop().run_in_executor(None, self.monitor.stop)
        if self.log is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.log.close)
        if self._commit is not None:
            self._commit.close()

    async def _gauge_loop(self) -> None:
        """Once a second: the gauges, and the memory a large request left (:mod:`scoregate.memory`)."""
        while True:
            await asyncio.sleep(GAUGE_INTERVAL)
            try:
                self._refresh_gauges()
                self._trim.run_if_marked()
            except Exception:  # pragma: no cover - metrics must not take the server down
                log.exception("refreshing the gauges failed")

    def _refresh_gauges(self) -> None:
        queues = {(s.name, s.version_label): s.batcher.queue_depth() for s in self.state.table.served.values()}
        self.metrics.refresh(self.in_flight, queues, self.state.loaded())

    # --- HTTP -----------------------------------------------------------------------------------

    async def _http(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        started = _perf()
        request_id = self._new_request_id()
        exchange = _Exchange()
        header_id = content_type = authorization = model_header = None
        content_length = -1
        header_length = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = -1
            elif key == b"content-type":
                content_type = value
            elif key == b"x-request-id":
                header_id = value
            elif key == b"authorization":
                authorization = value
            elif key == mlflow_protocol.MODEL_HEADER:
                model_header = value
            elif key == b"inference-header-content-length":
                try:
                    header_length = int(value)
                except ValueError:
                    header_length = -1
        path: str = scope["path"]
        method: str = scope["method"]
        v2_style = path.startswith("/v2")
        protocol = "v2" if v2_style else "json"
        extra_headers: list[tuple[bytes, bytes]] = []
        binary_header = None
        content_type_out = JSON
        self.in_flight += 1
        try:
            if header_id is not None:
                exchange.client_id = client_request_id(header_id.decode("latin-1"), "x-request-id")
            if method == "POST":
                if self.tokens is not None:
                    self.tokens.check(authorization)
                if content_length > self.max_body_bytes:
                    raise HTTPError(413, "payload_too_large", self._too_large(content_length))
                if path == mlflow_protocol.INVOCATIONS:
                    protocol = "mlflow"
                self._check_content_type(content_type, header_length is not None, protocol == "mlflow")
                body = await self._read_body(receive)
                if len(body) >= LARGE_BODY:
                    self._trim.soon()  # its parse leaves C heap behind, whatever the answer
                if protocol == "mlflow":
                    selector = model_header.decode("latin-1") if model_header is not None else None
                    status, payload = await self._invocations(
                        selector, body, _media_type(content_type), request_id, exchange, started
                    )
                elif path.startswith("/models/") and path.endswith("/predict"):
                    status, payload = await self._plain(path[8:-8], body, request_id, exchange, started)
                elif v2_style and path.endswith("/infer"):
                    status, payload, binary_header = await self._v2_infer(
                        path, body, header_length, request_id, exchange, started
                    )
                    if binary_header is not None:
                        content_type_out = b"application/octet-stream"
                        extra_headers.append((b"inference-header-content-length", str(binary_header).encode()))
                else:
                    self._unknown_route(path, method)
            elif method in ("GET", "HEAD"):
                protocol = "meta"
                if self.tokens is not None and self._protected(path):
                    self.tokens.check(authorization)
                status, payload, content_type_out = self._get(path)
            else:
                self._unknown_route(path, method)
        except _Disconnected:
            self.in_flight -= 1
            return
        except ScoregateError as exc:
            status, content_type_out = exc.status_code, JSON
            if protocol == "mlflow":
                payload = mlflow_protocol.error_response(exc, request_id, exchange.client_id)
            else:
                payload = error_body(exc, request_id, exchange.client_id, v2_style=v2_style)
            extra_headers.extend(getattr(exc, "headers", ()))
            if status == 503:
                extra_headers.append((b"retry-after", b"1"))
            self.metrics.child(self.metrics.errors, *exchange.labels(), exc.code).inc()
        except Exception as exc:  # a model or server bug: report it, never hang the client
            log.exception("request %s failed", request_id)
            err = HTTPError(500, "internal_error", f"internal error: {type(exc).__name__}: {exc}")
            status, content_type_out = 500, JSON
            payload = error_body(err, request_id, exchange.client_id, v2_style=v2_style)
            self.metrics.child(self.metrics.errors, *exchange.labels(), "internal_error").inc()
        self.in_flight -= 1
        headers = [
            (b"content-type", content_type_out),
            (b"content-length", str(len(payload)).encode()),
            (b"x-request-id", request_id.encode()),
        ]
        if exchange.client_id is not None:
            headers.append((b"x-client-request-id", exchange.client_id.encode()))
        served = exchange.served
        if served is not None:
            headers.append((b"x-model-version", served.header))
        if extra_headers:
            headers.extend(extra_headers)
        if protocol != "meta":
            labels = exchange.labels()
            if served is not None:
                served.m_latency.observe(_perf() - started)
            else:
                self.metrics.child(self.metrics.latency, *labels).observe(_perf() - started)
            self.metrics.child(self.metrics.requests, *labels, protocol, str(status)).inc()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else payload})

    def _protected(self, path: str) -> bool:
        """GET routes behind --require-token: all but health, and /metrics only when asked."""
        if path in _OPEN_PATHS:
            return False
        return path != "/metrics" or self.options.require_token_for_metrics

    def _too_large(self, size: int) -> str:
        return f"request body of {size} bytes exceeds the limit of {self.max_body_bytes} bytes (--max-body-mb)"

    @staticmethod
    def _check_content_type(value: bytes | None, binary: bool, mlflow: bool = False) -> None:
        """JSON, or for V2 with binary tensors octet-stream, or for /invocations CSV; no
        Content-Type at all is taken as JSON (Triton's client sends none). Anything else is
        415: a form a browser would post across origins is not a scoring request."""
        media = _media_type(value)
        accepted = _BINARY_TYPES if binary else (_MLFLOW_TYPES if mlflow else _JSON_TYPES)
        if media is None or media in accepted:
            return
        shown = media.decode("latin-1")[:60]
        want = "application/json or application/octet-stream" if binary else "application/json"
        if mlflow:
            want = "application/json or text/csv"
        raise HTTPError(415, "unsupported_media_type", f"Content-Type {shown!r} is not accepted: send {want}")

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
        shown = path if len(path) <= 200 else path[:200] + "..."
        if allow is None or method.encode() in allow.split(b", "):
            raise HTTPError(404, "no_route", f"no route {method} {shown}")
        message = f"{method} is not allowed on {shown}: use {allow.decode()}"
        raise HTTPError(405, "method_not_allowed", message, headers=((b"allow", allow),))

    # --- scoring --------------------------------------------------------------------------------

    def _too_many_rows(self, n: int, field: str = "rows") -> HTTPError:
        limit = self.max_request_rows
        return HTTPError(
            413,
            "too_many_rows",
            f"the request has {n} rows; a request may carry at most {limit} (--max-request-rows)",
            details=[{"field": field, "rule": "max_rows", "message": f"{n} rows, at most {limit}"}],
        )

    def _check(self, served: Served, records: list[Any], first_row: int = 0) -> tuple[list[Any], list[Violation]]:
        """Validate rows against the version's schema and refuse (or drop) undeclared fields."""
        check = served.validator.check
        known = served.known
        width = len(known)
        strict = served.strict
        problems: list[Violation] = []
        out = records
        for i, record in enumerate(records):
            row = first_row + i
            found = check(record, row)
            if (
                record.__class__ is dict
                and not (strict and not found and len(record) == width)
                and not known.issuperset(record)
            ):
                if served.drop_extra:
                    if out is records:
                        out = list(records)
                    out[i] = record = {k: v for k, v in record.items() if k in known}
                    found = check(record, row)
                else:
                    found = undeclared_violations([k for k in record if k not in known], row) + found
            if found:
                problems.extend(found)
                if len(problems) >= MAX_REPORTED_VIOLATIONS:
                    break
        return out, problems

    def _room(self, served: Served) -> None:
        queued = served.batcher.pending()
        if queued >= self.max_queued_requests:
            raise HTTPError(
                503,
                "overloaded",
                f"{served.ref} has {queued} requests waiting (limit {self.max_queued_requests}); retry later",
            )

    async def _score(self, route: Route, records: list[Any], exchange: _Exchange) -> tuple[Served, Outputs, list]:
        """Route, validate and score; a small request has no await between routing and queueing."""
        n = len(records)
        if not n:
            raise InvalidInputError(
                "the request has no rows", details=[{"field": "rows", "rule": "min_length", "message": "no rows"}]
            )
        if n > self.max_request_rows:
            raise self._too_many_rows(n)
        served = route.pick(records[0])
        exchange.served = served
        size = self.slice_rows
        if n <= size:
            records, problems = self._check(served, records)
            if problems and self.monitor is not None:
                self.monitor.refused(served, problems)
            raise_for(problems)
            self._room(served)
            try:
                future = served.batcher.submit(records)
            except BatcherClosed:  # retired by a hot swap between lookup and submit: cannot happen
                raise HTTPError(503, "unavailable", f"{served.ref} was just retired; retry") from None
            return served, await future, records
        return await self._score_large(served, records, size)

    async def _score_large(self, served: Served, records: list[Any], size: int) -> tuple[Served, Outputs, list]:
        """Validate slice by slice, yielding between them, then queue every slice as bulk work."""
        served.hold()  # not retired by a hot swap while this request yields
        try:
            checked: list[Any] = []
            problems: list[Violation] = []
            for start in range(0, len(records), size):
                part, found = self._check(served, records[start : start + size], start)
                checked.extend(part)
                problems.extend(found)
                if len(problems) >= MAX_REPORTED_VIOLATIONS:
                    break
                await asyncio.sleep(0)
            if problems and self.monitor is not None:
                self.monitor.refused(served, problems)
            raise_for(problems)
            self._room(served)
            futures = [served.batcher.submit(checked[i : i + size], bulk=True) for i in range(0, len(checked), size)]
        finally:
            served.release()
        parts = await asyncio.gather(*futures)
        return served, Outputs.concat(parts), checked

    async def _after(
        self,
        route: Route,
        served: Served,
        request_id: str,
        client_id: str | None,
        records: list[Any],
        outputs: Outputs,
        started: float,
        kind: str,
    ) -> None:
        """Count, log (durably before returning, unless the log's durability is off) and shadow."""
        latency_ms = (_perf() - started) * 1000.0
        n = len(records)
        served.m_rows.inc(n)
        if self.monitor is not None:
            self.monitor.observe(served, records, outputs)
        plog = self.log
        if plog is not None:
            size = self.slice_rows
            if n <= size:
                plog.append(
                    served.name,
                    served.version,
                    request_id,
                    records,
                    outputs,
                    latency_ms,
                    route=kind,
                    client_request_id=client_id,
                )
            else:  # a large request: logged a slice per loop turn
                for start in range(0, n, size):
                    part = Outputs(outputs.names, outputs.kinds, [c[start : start + size] for c in outputs.columns])
                    plog.append(
                        served.name,
                        served.version,
                        request_id,
                        records[start : start + size],
                        part,
                        latency_ms,
                        route=kind,
                        client_request_id=client_id,
                        first_row=start,
                    )
                    await asyncio.sleep(0)
                self._trim.soon()
        shadow = route.want_shadow()
        if shadow is not None and shadow is not served:
            self._send_shadow(shadow, served.known, request_id, client_id, records, kind)
        if self._commit is not None:
            await self._commit.durable()

    def _send_shadow(
        self,
        shadow: Served,
        primary_known: frozenset[str],
        request_id: str,
        client_id: str | None,
        records: list[Any],
        kind: str,
    ) -> None:
        if shadow.batcher.pending() >= self.shadow_max_pending:
            self.metrics.child(self.metrics.shadow_dropped, shadow.name, shadow.version_label).inc()
            return
        started = _perf()
        plog = self.log
        monitor = self.monitor
        rows = self.metrics.child(self.metrics.rows, shadow.name, shadow.version_label, "true")
        if shadow.known != primary_known:  # the challenger declares other fields: its own rule applies
            records, problems = check_records(records, shadow.known, shadow.info.extra_fields)
            if problems:
                return  # it would refuse what the primary took: nothing to compare

        def done(outputs: Outputs | None, error: Any) -> None:
            if error is not None or outputs is None:
                return
            rows.inc(len(records))
            if monitor is not None:
                monitor.observe(shadow, records, outputs)
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
                    client_request_id=client_id,
                )

        shadow.batcher.submit_callback(records, done)

    @staticmethod
    def _json(body: bytes) -> Any:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, "bad_request", f"malformed JSON: {exc}") from None

    async def _plain(
        self, ref_text: str, body: bytes, request_id: str, exchange: _Exchange, started: float
    ) -> tuple[int, bytes]:
        name, at, selector = ref_text.partition("@")
        if at and not selector:
            raise InvalidReferenceError(f"{ref_text[:100]!r}: after '@' comes a version or an alias")
        data = self._json(body)
        if not isinstance(data, dict):
            raise HTTPError(400, "bad_request", 'the body must be a JSON object: {"rows": [...]} or {"columns": {...}}')
        if name in self.state.table.models:
            exchange.model = name
        route = self.state.route(name, selector or None)
        records = data.get("rows")
        if records is None:
            columns = data.get("columns")
            if columns is None:
                raise InvalidInputError(
                    'the body needs "rows" (a list of objects) or "columns" (an object of lists)',
                    details=[{"field": "rows", "rule": "required", "message": 'give "rows" or "columns"'}],
                )
            records = self._columns_to_rows(columns)
        elif not isinstance(records, list):
            raise InvalidInputError(
                '"rows" must be a list of objects',
                details=[
                    {"field": "rows", "rule": "type", "message": f"expected a list, got {type(records).__name__}"}
                ],
            )
        served, outputs, records = await self._score(route, records, exchange)
        kind = f"{name}@{selector}" if selector else name
        await self._after(route, served, request_id, exchange.client_id, records, outputs, started, kind)
        flags = await self._flag(served, records)
        response: dict[str, Any] = {
            "model": served.name,
            "version": served.version,
            "ref": served.ref,
            "alias": route.alias,
            "request_id": request_id,
        }
        if exchange.client_id is not None:
            response["client_request_id"] = exchange.client_id
        response["predictions"] = outputs.rows()
        if flags.flags:
            response["flags"] = flags.to_list()
        return 200, orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)

    async def _flag(self, served: Served, records: list[Any]) -> ObservedFlags:
        """Flag the scored rows outside the version's observed profile and count the flags.

        A flag never refuses: the rows were scored. A large request is flagged a slice per
        loop turn, like its validation, so other requests are not held up.
        """
        flagger = served.flagger
        if not flagger.active:
            return ObservedFlags((), len(records))
        size = self.slice_rows
        if len(records) <= size:
            flags = flagger.flag(records)
        else:
            found = []
            for start in range(0, len(records), size):
                found.extend(flagger.flag(records[start : start + size], start).flags)
                await asyncio.sleep(0)
            flags = ObservedFlags(tuple(found), len(records))
        metric = self.metrics.input_flags
        for (feature, kind), n in flags.counts().items():
            self.metrics.child(metric, served.name, served.version_label, feature, kind.value).inc(n)
        return flags

    async def _invocations(
        self,
        selector: str | None,
        body: bytes,
        media_type: bytes | None,
        request_id: str,
        exchange: _Exchange,
        started: float,
    ) -> tuple[int, bytes]:
        """MLflow's ``/invocations`` (:mod:`.mlflow_protocol`): the same validation, batching and log."""
        route = self._mlflow_route(selector, exchange)
        primary = route.primary
        records = mlflow_protocol.parse_request(body, media_type, primary.feature_names, self.max_request_rows)
        served, outputs, records = await self._score(route, records, exchange)
        await self._after(
            route, served, request_id, exchange.client_id, records, outputs, started, f"mlflow:{served.name}"
        )
        pyfunc = getattr(served.batcher.scorer, "pyfunc_outputs", None)
        answer = {"predictions": mlflow_protocol.predictions(outputs.names, outputs.columns, pyfunc)}
        return 200, orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)

    def _mlflow_route(self, selector: str | None, exchange: _Exchange) -> Route:
        """The model named in the X-Scoregate-Model header, else the one this server serves."""
        models = self.state.table.models
        if selector:
            name, at, alias = selector.partition("@")
            if at and not alias:
                raise InvalidReferenceError(f"{selector[:100]!r}: after '@' comes a version or an alias")
        elif len(models) == 1:
            name, alias = next(iter(models)), ""
        else:
            listed = ", ".join(sorted(models)[:20]) or "none"
            raise HTTPError(
                400 if models else 503,
                "bad_request" if models else "unavailable",
                f"this server serves {len(models)} models ({listed}): name one in the X-Scoregate-Model header "
                "(name, name@version or name@alias)",
            )
        if name in models:
            exchange.model = name
        return self.state.route(name, alias or None)

    def _columns_to_rows(self, columns: Any) -> list[dict[str, Any]]:
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
        if n > self.max_request_rows:
            raise self._too_many_rows(n, "columns")
        items = list(columns.items())
        return [{k: v[i] for k, v in items} for i in range(n)]

    def _v2_target(self, path: str) -> tuple[str, str | None, str]:
        """``/v2/models/{name}[/versions/{v}][/{action}]`` -> (name, version, action)."""
        parts = path[len("/v2/models/") :].split("/")
        name = parts[0]
        version = None
        rest = parts[1:]
        if len(rest) >= 2 and rest[0] == "versions":
            version = rest[1]
            rest = rest[2:]
        if len(rest) > 1 or not name or version == "":
            raise HTTPError(404, "no_route", f"no route {path[:200]}")
        return name, version, rest[0] if rest else ""

    async def _v2_infer(
        self, path: str, body: bytes, header_length: int | None, request_id: str, exchange: _Exchange, started: float
    ) -> tuple[int, bytes, int | None]:
        if not path.startswith("/v2/models/"):
            raise HTTPError(404, "no_route", f"no route POST {path[:200]}")
        name, version, action = self._v2_target(path)
        if action != "infer":
            raise HTTPError(404, "no_route", f"no route POST {path[:200]}")
        if header_length == -1:
            raise v2.BadRequest("Inference-Header-Content-Length is not an integer")
        request, binary = v2.split_body(body, header_length)
        if "id" in request:  # the V2 id is the client's id, as the header would be
            exchange.client_id = client_request_id(request["id"], "id")
        if name in self.state.table.models:
            exchange.model = name
        route = self.state.route(name, version)
        primary = route.primary
        records = v2.decode_inputs(
            request,
            binary,
            primary.info.input_schema,
            max_rows=self.max_request_rows,
            drop_undeclared=primary.drop_extra,
            names=primary.feature_names,
            known=primary.known,
        )
        served, outputs, records = await self._score(route, records, exchange)
        await self._after(route, served, request_id, exchange.client_id, records, outputs, started, f"v2:{name}")
        flags = await self._flag(served, records)
        payload, binary_header = v2.encode_response(
            served.name, served.version, request, outputs, len(records), exchange.client_id, flags.to_list()
        )
        return 200, payload, binary_header

    # --- metadata routes ---------------------------------------------------------------------------

    def _get(self, path: str) -> tuple[int, bytes, bytes]:
        state = self.state
        if path == "/v2/health/live":
            return 200, b'{"live":true}', JSON
        if path == "/v2/health/ready":
            ready = state.ready and bool(state.table.served)
            body: dict[str, Any] = {"ready": ready}
            if state.unavailable:
                body["not_loaded"] = [{"ref": ref, "reason": why} for ref, why in sorted(state.unavailable.items())]
            return (200 if ready else 503), orjson.dumps(body), JSON
        if path in mlflow_protocol.HEALTH_PATHS:  # MLflow's and SageMaker's health check
            ready = state.ready and bool(state.table.served)
            return (200 if ready else 503), (b"\n" if ready else b'{"ready":false}'), JSON
        if path == "/version":
            return 200, _version().encode(), b"text/plain; charset=utf-8"
        if path == "/v2":
            return (
                200,
                orjson.dumps({"name": "scoregate", "version": _version(), "extensions": ["binary_tensor_data"]}),
                JSON,
            )
        if path == "/metrics":
            self._refresh_gauges()
            payload, content_type = self.metrics.exposition()
            return 200, payload, content_type.encode()
        if path == "/openapi.json":
            table = state.table
            if self._openapi is None or self._openapi[0] is not table:
                self._openapi = (table, orjson.dumps(openapi_document(_version(), table, self.options)))
            return 200, self._openapi[1], JSON
        if path in ("/models", "/models/"):
            return 200, orjson.dumps(self._listing()), JSON
        if path.startswith("/v2/models/"):
            name, version, action = self._v2_target(path)
            if action == "ready":
                try:
                    state.route(name, version)
                except ScoregateError as exc:
                    if exc.status_code >= 500:
                        raise
                    return 404, orjson.dumps({"name": name[:200], "ready": False}), JSON
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
        listing: dict[str, Any] = {"models": out, "revision": self.state.table.revision}
        if self.state.unavailable:
            listing["not_loaded"] = [{"ref": r, "reason": w} for r, w in sorted(self.state.unavailable.items())]
        return listing


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
    monitoring_dir: Any = None,
    options: ServeOptions | None = None,
    **settings: Any,
) -> ScoringApp:
    """Build the ASGI app. ``source`` is a :class:`ModelSource` or a zero-argument factory
    (called on the loader thread at startup, e.g. ``lambda: RegistrySource.open(settings)``).
    ``predictions_dir=None`` turns the prediction log off; ``monitoring_dir`` is where live
    monitoring writes its windows (None, or ``monitoring=False``, turns it off). The server's settings are a
    :class:`ServeOptions` or its fields as keyword arguments (``max_request_rows=...``);
    ``scoring="inline"`` scores on the event loop (lower latency for fast models when one
    worker serves few models; a slow model then delays the others, so it is opt-in), and
    ``direct_below`` is the call time under which a lone request is scored on the loop
    while its model's thread is idle (0 turns the shortcut off; see :mod:`.batcher`)."""
    if options is None:
        options = ServeOptions.parse(**settings)
    elif settings:
        options = ServeOptions.parse(**{**options.model_dump(), **settings})
    factory = source if callable(source) and not hasattr(source, "revision") else (lambda: source)
    metrics = Metrics()
    state = ServingState(
        factory,
        metrics,
        models=options.models,
        max_batch_rows=options.max_batch_rows,
        poll_interval=options.poll_interval,
        scorer_threads=options.scorer_threads,
        scoring=options.scoring.value,
        direct_below=options.direct_below,
    )
    plog = None
    if predictions_dir is not None and options.log_predictions:
        from pathlib import Path

        plog = PredictionLog(
            Path(predictions_dir),
            flush_interval=options.log_flush_interval,
            flush_rows=options.log_flush_rows,
            durability=options.log_durability,
        )
    app = ScoringApp(state, metrics, plog, options)
    if monitoring_dir is not None and options.monitoring:
        from pathlib import Path

        from scoregate.serving.monitoring import LiveMonitor

        app.monitor = LiveMonitor(Path(monitoring_dir), metrics, options, app.worker_id, lambda: state.source)
    return app
