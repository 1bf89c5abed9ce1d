"""The web UI: a Starlette app over the registry and governance services.

``create_ui(settings)`` builds it; ``scoregate server`` mounts it under ``/ui`` in team
mode, ``scoregate ui`` serves it on an embedded registry. Pages are rendered on the
server (Jinja2, autoescaped), every read view works without JavaScript, and nothing is
decided here: reads call the services, actions call the same governance operations as
the CLI, and the services' refusals are shown as they are.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scoregate.config import Settings
from scoregate.errors import ScoregateError, UnauthorizedError
from scoregate.registry import Registry
from scoregate.ui import actions, views
from scoregate.ui.security import CONTENT_SECURITY_POLICY, Sessions, load_key

log = logging.getLogger("scoregate.ui")
HERE = Path(__file__).parent


class UIState:
    """What every request of one UI shares: the registry, the session keys, the templates."""

    def __init__(self, settings: Settings, registry: Registry | None) -> None:
        self.settings = settings
        self._registry = registry
        self.sessions = Sessions(load_key(settings.home))
        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        environment.filters["when"] = views.format_time
        environment.filters["short"] = lambda digest: (digest or "")[:12]
        self.templates = Jinja2Templates(env=environment)
        self.last_verification: Any = None
        self.verifying = threading.Lock()

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.settings)
        return self._registry


class SecurityHeaders:
    """Adds the Content-Security-Policy and friends to every response that does not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for name, value in (
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"SAMEORIGIN"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ):
                    if name not in names:
                        headers.append((name, value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


async def _scoregate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ScoregateError)
    if isinstance(exc, UnauthorizedError) and request.method == "GET":
        query = urlencode({"next": request.url.path + (f"?{request.url.query}" if request.url.query else "")})
        return RedirectResponse(f"{request.url_for('login').path}?{query}", status_code=303)
    return views.render(request, "error.html", status=exc.status_code, message=exc.message, title="refused")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if exc.status_code != 404 else "no such page"
    return views.render(request, "error.html", status=exc.status_code, message=message, title=str(exc.status_code))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return HTMLResponse(
        "<!doctype html><title>error</title><p>scoregate could not render this page; the error is in the server log.",
        status_code=500,
    )


def create_ui(settings: Settings | None = None, *, registry: Registry | None = None) -> Starlette:
    """The UI as an ASGI app, to mount under ``/ui`` (or serve alone). ``registry``: share the
    caller's (a team server's) instead of opening one."""
    settings = settings or (registry.settings if registry is not None else Settings.load())
    routes = [
        Route("/", views.inventory, name="inventory"),
        Route("/models/{name}", views.model, name="model"),
        Route("/models/{name}/rollback", actions.rollback, methods=["POST"], name="rollback"),
        Route("/models/{name}/{version:int}", views.version, name="version"),
        Route("/models/{name}/{version:int}/actions/{action}", actions.version_action, methods=["POST"], name="act"),
        Route("/models/{name}/{version:int}/evidence/{evidence:int}", views.evidence, name="evidence"),
        Route(
            "/models/{name}/{version:int}/evidence/{evidence:int}/document",
            views.evidence_document,
            name="evidence_document",
        ),
        Route("/models/{name}/{version:int}/decisions/{number:int}", views.decision, name="decision"),
        Route("/models/{name}/{version:int}/card", views.card, name="card"),
        Route("/models/{name}/{version:int}/card.html", views.card_html, name="card_html"),
        Route("/models/{name}/{version:int}/cyclonedx.json", views.cyclonedx, name="cyclonedx"),
        Route("/audit", views.audit, name="audit"),
        Route("/audit/export.jsonl", views.audit_export, name="audit_export"),
        Route("/audit/verify", views.audit_verify, name="audit_verify"),
        Route("/audit/{seq:int}", views.audit_event, name="audit_event"),
        Route("/predictions", views.predictions, name="predictions"),
        Route("/login", views.login_page, methods=["GET"], name="login"),
        Route("/login", actions.login, methods=["POST"], name="login_post"),
        Route("/logout", actions.logout, methods=["POST"], name="logout"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={ScoregateError: _scoregate_error, HTTPException: _http_error, Exception: _unexpected},
    )
    app.state.ui = UIState(settings, registry)
    app.add_middleware(SecurityHeaders)
    return app


def embedded_site(settings: Settings) -> Starlette:
    """What ``scoregate ui`` serves: the UI under ``/ui`` on an embedded registry, ``/`` sending there."""

    async def home(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    return Starlette(routes=[Route("/", home), Mount("/ui", app=create_ui(settings))])


__all__ = ["create_ui", "embedded_site"]
