"""The actions: sign in and out, and the governance operations a page offers.

Every action checks the form's CSRF token, then calls the same service operation as the
CLI with the caller's own token: the service authenticates, checks the role, applies
four-eyes and the policy gates, and writes the audit event. A refusal is the service's
message, shown next to the form it came from, with the service's status, whether or not
the page offered the form to this caller.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from scoregate.errors import InvalidInputError, ScoregateError, UnauthorizedError
from scoregate.refs import ModelRef, validate_model_name
from scoregate.ui import views
from scoregate.ui.caller import caller_for
from scoregate.ui.security import CSRF_FIELD

#: Largest form a page posts (a reason, an alias, a token); uploads are not taken here.
MAX_FORM_BYTES = 64 * 1024
MAX_FIELD = 2000
ACTIONS = ("approve", "validate", "alias", "hold", "attach")


async def _form(request: Request) -> dict[str, str]:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise InvalidInputError(f"the form is larger than {MAX_FORM_BYTES // 1024} KB")
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise InvalidInputError("the form must be posted as application/x-www-form-urlencoded")
    form = await request.form(max_files=0, max_fields=20)
    values: dict[str, str] = {}
    for key, value in form.items():
        if not isinstance(value, str):
            raise InvalidInputError(f"field {key[:40]!r}: files are not taken here")
        if len(value) > MAX_FIELD:
            raise InvalidInputError(f"field {key[:40]!r} is longer than {MAX_FIELD} characters")
        values[key] = value
    return values


async def _upload(request: Request) -> tuple[dict[str, str], tuple[str, bytes] | None]:
    """A multipart form with at most one file, refused past the largest document kept."""
    from scoregate.governance.service import MAX_UPLOAD_BYTES

    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise InvalidInputError("an upload needs a Content-Length")
    if int(length) > MAX_UPLOAD_BYTES + MAX_FORM_BYTES:
        raise InvalidInputError(f"the document is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
    form = await request.form(max_files=1, max_fields=20)
    values: dict[str, str] = {}
    upload = None
    for key, value in form.items():
        if isinstance(value, str):
            if len(value) > MAX_FIELD:
                raise InvalidInputError(f"field {key[:40]!r} is longer than {MAX_FIELD} characters")
            values[key] = value
        elif key == "document":
            content = await value.read()
            if content:
                upload = ((value.filename or "document")[:200], content)
    await form.close()
    return values, upload


def _csrf(request: Request, values: dict[str, str]) -> None:
    if not request.app.state.ui.sessions.csrf_ok(request, values.get(CSRF_FIELD)):
        raise _CsrfRefused()


class _CsrfRefused(ScoregateError):
    status_code = 403

    def __init__(self) -> None:
        super().__init__("the form's CSRF token is missing or does not match this session: reload the page and retry")


# -- sign-in -----------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    values = await _form(request)
    _csrf(request, values)
    token = values.get("token", "").strip()
    target = views.safe_next(request, values.get("next"))
    ui = request.app.state.ui
    if not token:
        return views.render(
            request,
            "login.html",
            status=422,
            title="sign in",
            me=None,
            values={"next": target},
            errors={"token": "a token is required (scoregate tokens issue)"},
        )
    try:
        found = await run_in_threadpool(caller_for, ui.registry, token)
    except UnauthorizedError as exc:
        return views.render(
            request,
            "login.html",
            status=401,
            title="sign in",
            me=None,
            values={"next": target},
            errors={"token": exc.message},
        )
    if not found.signed_in:
        return views.render(
            request,
            "login.html",
            status=409,
            title="sign in",
            me=None,
            values={"next": target},
            errors={"token": "scoregate is not initialised yet: no sign-in is needed"},
        )
    response = RedirectResponse(target, status_code=303)
    ui.sessions.open(response, request, token)
    return response


async def logout(request: Request) -> Response:
    values = await _form(request)
    _csrf(request, values)
    response = RedirectResponse(str(request.url_for("login").path), status_code=303)
    request.app.state.ui.sessions.close(response, request)
    return response


# -- governance actions ------------------------------------------------------------------------


def _field_of(exc: ScoregateError, fields: tuple[str, ...]) -> str:
    """Which field of the form a refusal is about, by what it names; else the form itself."""
    text = exc.message.lower()
    if isinstance(exc, InvalidInputError) or exc.status_code in (400, 422):
        for name in fields:
            if name in text:
                return name
    return "form"


async def version_action(request: Request) -> Response:
    action = request.path_params["action"]
    name, number = request.path_params["name"], request.path_params["version"]
    upload = None
    if action == "attach" and request.headers.get("content-type", "").startswith("multipart/form-data"):
        values, upload = await _upload(request)
    else:
        values = await _form(request)
    _csrf(request, values)
    if action not in ACTIONS:
        raise InvalidInputError(f"unknown action {action[:40]!r}: choose one of {', '.join(ACTIONS)}")

    def act() -> tuple[str | None, dict[str, str], int]:
        me = views.current(request)
        ref = str(ModelRef.parse(f"{name}@{number}", require_selector=True))
        reason = values.get("reason", "").strip()
        try:
            if action == "approve":
                status = me.governance.approve(ref, reason=reason)
                return f"approved by {me.principal.name}; {ref} is {status}", {}, 200
            if action == "validate":
                status = me.governance.mark_validated(ref, reason=reason or None)
                return f"marked validated by {me.principal.name}; {ref} is {status}", {}, 200
            if action == "attach":
                if upload is None:
                    raise InvalidInputError("choose a document to attach")
                item = me.governance.attach_evidence(ref, values.get("kind", ""), upload[1], name=upload[0])
                return f"attached {item['name']} as {item['kind']} evidence #{item['id']}", {}, 200
            if action == "hold":
                if not reason:
                    raise InvalidInputError("a legal hold needs a reason")
                me.governance.legal_hold(ref, reason=reason)
                return f"legal hold placed on {ref}", {}, 200
            alias = values.get("alias", "").strip()
            if not alias:
                raise InvalidInputError("an alias is required (e.g. staging, production)")
            me.registry.set_alias(name, alias, number, reason=reason or None)
            return f"{name}@{alias} now points at version {number}", {}, 200
        except UnauthorizedError:
            raise
        except ScoregateError as exc:
            return (
                None,
                {f"{action}.{_field_of(exc, ('alias', 'reason', 'kind', 'document'))}": exc.message},
                exc.status_code,
            )

    done, errors, status = await run_in_threadpool(act)
    return await run_in_threadpool(
        views.version,
        request,
        done=done,
        errors=errors,
        values={f"{action}.{k}": v for k, v in values.items()},
        status=status,
    )


async def rollback(request: Request) -> Response:
    name = request.path_params["name"]
    values = await _form(request)
    _csrf(request, values)

    def act() -> Any:
        me = views.current(request)
        validate_model_name(name)
        alias = values.get("alias", "").strip()
        if not alias:
            raise InvalidInputError("an alias to roll back is required")
        return me.registry.rollback(name, alias, reason=values.get("reason", "").strip() or None)

    record = await run_in_threadpool(act)
    return RedirectResponse(
        str(request.url_for("model", name=record.name).path) + f"?done=rollback-{record.alias}", status_code=303
    )
