"""The registry service's ASGI app: FastAPI over the registry and governance services.

FastAPI (not the raw ASGI of the scoring server) because this API is about many resources,
not a hot path: it generates the OpenAPI document from the same pydantic models the services
return, and validates every request body, query and path parameter against them.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from starlette.exceptions import HTTPException as StarletteHTTPException

from scoregate.config import Settings
from scoregate.errors import ConfigurationError, InvalidInputError, ScoregateError
from scoregate.server import routes_governance, routes_registry
from scoregate.server.context import REQUEST_ID_HEADER, request_id_of
from scoregate.server.settings import ServerSettings
from scoregate.server.uploads import Uploads

API_PREFIX = "/api/v1"
log = logging.getLogger("scoregate.server")


def create_server_app(settings: Settings | None = None, server: ServerSettings | None = None) -> FastAPI:
    """The app over one registry. Refused while the registry has no user (``scoregate init``
    first): before that, the embedded registry lets the local user act as admin, which a
    network service must never do."""
    from scoregate.governance.tables import UserRow
    from scoregate.registry import Registry

    settings = settings or Settings.load()
    server = server or ServerSettings()
    if settings.url is not None:
        raise ConfigurationError(
            "the registry service holds the database itself: unset SCOREGATE_URL (or `url` in the config file)"
        )
    registry = Registry(settings)
    with registry.reading() as session:
        if not session.scalar(select(func.count()).select_from(UserRow)):
            registry.close()
            raise ConfigurationError("the registry has no users: run `scoregate init` on it before serving it")

    app = FastAPI(
        title="scoregate registry",
        version="1",
        description="Models, versions, aliases, governance and audit of a scoregate registry.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.registry = registry
    app.state.uploads = Uploads(settings.home / "uploads", server.max_upload_bytes)
    app.include_router(routes_registry.router, prefix=API_PREFIX)
    app.include_router(routes_governance.router, prefix=API_PREFIX)

    @app.get(f"{API_PREFIX}/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness and readiness: the metadata database answers (no token needed)."""
        with registry.reading() as session:
            session.execute(select(1))
        return {"status": "ok"}

    @app.middleware("http")
    async def request_ids(request: Request, call_next: Any) -> Any:
        try:
            request.state.request_id = request_id_of(request)
        except ScoregateError as exc:
            return _problem(exc.status_code, exc.to_dict(), None)
        response = await call_next(request)
        response.headers[REQUEST_ID_HEADER] = request.state.request_id
        return response

    @app.exception_handler(ScoregateError)
    async def scoregate_error(request: Request, exc: ScoregateError) -> JSONResponse:
        return _problem(exc.status_code, exc.to_dict(), request)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        error = InvalidInputError(f"invalid {where}: {first.get('msg')}" if where else str(first.get("msg")))
        return _problem(422, error.to_dict(), request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return _problem(exc.status_code, {"error": code, "message": str(exc.detail)}, request)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", None)
        log.exception("request %s failed", request_id)
        body = {"error": "internal", "message": f"internal error (request {request_id}); see the service's log"}
        return _problem(500, body, request)

    if server.ui:
        _mount_ui(app, settings)
    return app


def _mount_ui(app: FastAPI, settings: Settings) -> None:
    """The web UI under /ui, when ``scoregate.ui`` is installed (it is built beside this)."""
    try:
        from scoregate.ui import create_ui  # type: ignore[attr-defined]
    except ImportError:
        return
    app.mount("/ui", create_ui(settings))


def _problem(status: int, body: dict[str, Any], request: Request | None) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) if request is not None else None
    headers = {REQUEST_ID_HEADER: request_id} if request_id else None
    return JSONResponse({**body, "request_id": request_id}, status_code=status, headers=headers)


def app_factory() -> FastAPI:
    """For ``uvicorn --factory`` (several workers): settings from the environment."""
    import os

    server = ServerSettings(max_upload_bytes=int(os.environ.get("SCOREGATE_SERVER_MAX_UPLOAD_BYTES", 8 * 2**30)))
    return create_server_app(Settings.load(), server)
