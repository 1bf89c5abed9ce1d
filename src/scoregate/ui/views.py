"""The read views: inventory, model, version, evidence, decisions, card, audit log, predictions.

Each view authenticates the caller (``caller.caller_for``: a session's token, or the local
admin before ``scoregate init``), reads through the services and renders a template.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from scoregate.errors import ConflictError, InvalidInputError, NotFoundError, ScoregateError
from scoregate.governance.access import Permission
from scoregate.refs import ModelRef, validate_model_name
from scoregate.registry.tables import utcnow
from scoregate.ui import queries
from scoregate.ui.caller import Caller, caller_for
from scoregate.ui.charts import alias_spans, alias_timeline
from scoregate.ui.monitoring import monitoring_view, open_alerts
from scoregate.ui.reports import report_view
from scoregate.ui.security import REPORT_POLICY

#: Longest free-text filter or search the pages take.
MAX_QUERY = 200
#: Largest audit seq or cursor a page takes (the column is a 64-bit integer).
MAX_SEQ = 2**63 - 1
INVENTORY_STATUSES = ("in use", "in development", "retired")


# -- rendering ---------------------------------------------------------------------------------


def format_time(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S") + " UTC"
    return str(value)


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> Response:
    ui = request.app.state.ui
    context.setdefault("me", getattr(request.state, "caller", None))
    context.setdefault("title", "")
    context.setdefault("errors", {})
    context.setdefault("values", {})
    context.update(request=request, csrf=ui.sessions.csrf_token(request), Permission=Permission)
    response = ui.templates.TemplateResponse(request, template, context, status_code=status)
    ui.sessions.remember(request, response)
    response.headers["cache-control"] = "no-store"
    return response


def current(request: Request) -> Caller:
    """The request's caller; ``UnauthorizedError`` (a redirect to sign in) without a valid session."""
    ui = request.app.state.ui
    found = caller_for(ui.registry, ui.sessions.token_of(request))
    request.state.caller = found
    return found


def _param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None or not value.strip():
        return None
    if len(value) > MAX_QUERY:
        raise InvalidInputError(f"{name} is longer than {MAX_QUERY} characters")
    return value.strip()


def parse_moment(value: str, field: str) -> dt.datetime:
    """A date (``2026-06-30``, the end of that day is not implied: its start) or an ISO time;
    a time without zone is UTC."""
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(
            f"invalid {field} {value[:40]!r}: expected a date (2026-06-30) or a time (2026-06-30T12:00)"
        ) from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _int_param(request: Request, name: str) -> int | None:
    value = _param(request, name)
    if value is None:
        return None
    if not value.isdigit() or len(value) > 18:
        raise InvalidInputError(f"invalid {name} {value[:20]!r}: expected a positive whole number")
    return int(value)


def _ref(name: str, version: int) -> ModelRef:
    """``name@version`` parsed as the CLI parses it (name rules, the version's bound)."""
    return ModelRef.parse(f"{name}@{version}", require_selector=True)


# -- inventory ---------------------------------------------------------------------------------


def inventory(request: Request) -> Response:
    me = current(request)
    errors: dict[str, str] = {}
    values = {k: request.query_params.get(k, "")[:MAX_QUERY] for k in ("q", "status", "tier", "at", "format")}
    at = None
    if values["at"].strip():
        try:
            at = parse_moment(values["at"].strip(), "date")
        except InvalidInputError as exc:
            errors["at"] = exc.message
    if values["status"] and values["status"] not in INVENTORY_STATUSES:
        errors["status"] = f"invalid status {values['status'][:40]!r}: choose one of {', '.join(INVENTORY_STATUSES)}"
    if values["format"] not in ("", "html", "csv", "json"):
        errors["format"] = f"invalid format {values['format'][:20]!r}: use html, csv or json"
    if errors:
        return render(
            request, "inventory.html", status=422, rows=[], errors=errors, values=values, at=None, title="inventory"
        )
    rows = me.governance.inventory(at=at)
    alerts = open_alerts(me.registry) if at is None else {}
    for row in rows:
        row["open_alerts"] = alerts.get(row["model"], 0) if at is None else None
    rows = _filter(rows, values["q"].strip().lower(), values["status"], values["tier"])
    if values["format"] == "json":
        return Response(
            orjson.dumps(rows, option=orjson.OPT_INDENT_2, default=str),
            media_type="application/json",
            headers={"content-disposition": 'attachment; filename="inventory.json"'},
        )
    if values["format"] == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["model"])
        writer.writeheader()
        writer.writerows(rows)
        return Response(
            buffer.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="inventory.csv"'},
        )
    tiers = sorted({r["risk_tier"] for r in rows if r["risk_tier"]})
    return render(
        request,
        "inventory.html",
        rows=rows,
        values=values,
        at=at,
        tiers=tiers,
        title="inventory",
        statuses=INVENTORY_STATUSES,
        root=str(request.url_for("inventory").path),
    )


def _filter(rows: list[dict[str, Any]], q: str, status: str, tier: str) -> list[dict[str, Any]]:
    searched = ("model", "purpose", "owner", "validator", "developers", "inputs")
    return [
        r
        for r in rows
        if (not q or any(q in str(r.get(k) or "").lower() for k in searched))
        and (not status or r["status"] == status)
        and (not tier or r["risk_tier"] == tier)
    ]


# -- model -------------------------------------------------------------------------------------


def model(request: Request) -> Response:
    me = current(request)
    name = request.path_params["name"]
    validate_model_name(name)
    registry = me.registry
    versions = registry.list_versions(name)
    summary = next(m for m in registry.list_models() if m.name == name)
    with registry.reading() as session:
        row = registry.model_row(session, name)
        names = queries.alias_names(session, row.id)
    now = utcnow()
    histories = {alias: registry.alias_history(name, alias) for alias in sorted(set(names) | set(summary.aliases))}
    spans = {alias: alias_spans(h, now) for alias, h in histories.items()}
    at_value = (request.query_params.get("at") or "")[:MAX_QUERY]
    held_at, at_error = None, None
    if at_value.strip():
        try:
            moment = parse_moment(at_value.strip(), "time")
            held_at = {alias: registry.alias_at(name, alias, moment) for alias in histories}
        except InvalidInputError as exc:
            at_error = exc.message
    children: dict[int, list[int]] = {}
    for v in versions:
        if v.parent_version is not None:
            children.setdefault(v.parent_version, []).append(v.version)
    return render(
        request,
        "model.html",
        status=422 if at_error else 200,
        title=name,
        summary=summary,
        versions=list(reversed(versions)),
        histories=histories,
        timeline=alias_timeline(spans),
        held_at=held_at,
        values={"at": at_value},
        errors={"at": at_error} if at_error else {},
        children=children,
        batch_jobs=batch_jobs(registry, name),
    )


def batch_jobs(registry: Any, name: str, limit: int = 50) -> list[dict[str, Any]]:
    """The model's newest batch jobs, as the registry recorded them (``scoregate batch list``)."""
    from scoregate.batch.service import BatchService

    return [
        {
            "job": j.job,
            "version": j.ref,
            "state": j.state,
            "engine": j.engine,
            "rows": j.rows,
            "scored": j.scored,
            "rejected": j.rejected,
            "by": j.created_by,
            "started (UTC)": f"{j.created_at:%Y-%m-%d %H:%M:%S}",
            "output sha256": (j.output_digest or "")[:12],
        }
        for j in BatchService(registry).list(limit, model=name)
    ]


# -- version -----------------------------------------------------------------------------------


def _version_facts(me: Caller, name: str, number: int, request: Request) -> Any:
    ref = _ref(name, number)
    version = me.registry.resolve(ref)
    wanted = _param(request, "artifact")
    if wanted is not None and wanted.removeprefix("sha256:") != version.artifact_digest:
        raise NotFoundError(
            f"this link names artifact sha256:{wanted.removeprefix('sha256:')[:12]}, but {version.ref} holds "
            f"sha256:{version.artifact_digest[:12]}: the version it was made for is not in this registry"
        )
    return version


def version(request: Request, **form_state: Any) -> Response:
    me = current(request)
    name, number = request.path_params["name"], request.path_params["version"]
    record = _version_facts(me, name, number, request)
    governance = me.governance
    evidence = governance.evidence(record.ref)
    decisions = governance.decisions(record.ref)
    missing = governance.check(record.ref)
    monitoring = monitoring_view(me.registry, record)
    siblings = [v.version for v in me.registry.list_versions(name)]
    return render(
        request,
        "version.html",
        status=form_state.pop("status", 200),
        title=record.ref,
        v=record,
        evidence=evidence,
        decisions=decisions,
        missing=missing,
        monitoring=monitoring,
        siblings=siblings,
        features=[f.model_dump(mode="json") for f in record.input_schema.features],
        outputs=[o.model_dump(mode="json") for o in record.output_schema],
        errors=form_state.pop("errors", {}),
        values=form_state.pop("values", {}),
        done=form_state.pop("done", None),
    )


def evidence(request: Request) -> Response:
    me = current(request)
    record = _version_facts(me, request.path_params["name"], request.path_params["version"], request)
    item = _evidence_item(me, record.ref, request.path_params["evidence"])
    document = me.governance.read_evidence(item["digest"])
    return render(
        request,
        "evidence.html",
        title=f"{record.ref} evidence #{item['id']}",
        v=record,
        e=item,
        report=report_view(document),
        size=len(document),
    )


def _evidence_item(me: Caller, ref: str, evidence_id: int) -> dict[str, Any]:
    for item in me.governance.evidence(ref):
        if item["id"] == evidence_id:
            return item
    raise NotFoundError(f"{ref} has no evidence #{evidence_id}")


def evidence_document(request: Request) -> Response:
    me = current(request)
    record = _version_facts(me, request.path_params["name"], request.path_params["version"], request)
    item = _evidence_item(me, record.ref, request.path_params["evidence"])
    document = me.governance.read_evidence(item["digest"])  # re-hashed on read
    is_json = document[:1] in (b"{", b"[")
    filename = f"{record.name}-{record.version}-evidence-{item['id']}" + (".json" if is_json else "")
    return Response(
        document,
        media_type="application/json" if is_json else "application/octet-stream",
        headers={
            "content-disposition": f'attachment; filename="{filename}"',
            "x-content-sha256": item["digest"],
            "content-security-policy": REPORT_POLICY,
        },
    )


def decision(request: Request) -> Response:
    me = current(request)
    record = _version_facts(me, request.path_params["name"], request.path_params["version"], request)
    number = request.path_params["number"]
    decisions = me.governance.decisions(record.ref)
    if not 1 <= number <= len(decisions):
        raise NotFoundError(f"{record.ref} has no decision #{number}")
    item = decisions[number - 1]
    with me.registry.reading() as session:
        where = queries.AuditFilter(subject=record.ref, action=item["action"], actor=item["actor"])
        events = [e for e in queries.audit_page(session, where, size=200).events if e.reason == item["reason"]]
    return render(
        request,
        "decision.html",
        title=f"{record.ref} decision #{number}",
        v=record,
        d=item,
        number=number,
        events=events,
    )


def _card_facts(me: Caller, request: Request) -> tuple[Any, dict[str, Any]]:
    from scoregate.governance.card import card_facts

    record = _version_facts(me, request.path_params["name"], request.path_params["version"], request)
    return record, card_facts(me.governance, record.ref)


def card(request: Request) -> Response:
    me = current(request)
    record, _ = _card_facts(me, request)
    return render(request, "card.html", title=f"model card {record.ref}", v=record)


def card_html(request: Request) -> Response:
    from scoregate.governance.card import render_html, render_markdown

    me = current(request)
    _, facts = _card_facts(me, request)
    return Response(
        render_html(render_markdown(facts)),
        media_type="text/html; charset=utf-8",
        headers={"content-security-policy": REPORT_POLICY},
    )


def cyclonedx(request: Request) -> Response:
    from scoregate.governance.card import cyclonedx_bom

    me = current(request)
    record, facts = _card_facts(me, request)
    return Response(
        orjson.dumps(cyclonedx_bom(facts), option=orjson.OPT_INDENT_2, default=str),
        media_type="application/vnd.cyclonedx+json",
        headers={"content-disposition": f'attachment; filename="{record.name}-{record.version}.cdx.json"'},
    )


# -- audit -------------------------------------------------------------------------------------

AUDIT_FIELDS = ("subject", "actor", "action", "request_id", "since", "until")


def _audit_filter(request: Request) -> tuple[queries.AuditFilter, dict[str, str], dict[str, str]]:
    values = {k: (request.query_params.get(k) or "")[:MAX_QUERY] for k in AUDIT_FIELDS}
    errors: dict[str, str] = {}
    moments: dict[str, dt.datetime | None] = {"since": None, "until": None}
    for key in moments:
        if values[key].strip():
            try:
                moments[key] = parse_moment(values[key].strip(), key)
            except InvalidInputError as exc:
                errors[key] = exc.message
    where = queries.AuditFilter(
        subject=values["subject"].strip() or None,
        actor=values["actor"].strip() or None,
        action=values["action"].strip() or None,
        request_id=values["request_id"].strip() or None,
        since=moments["since"],
        until=moments["until"],
    )
    return where, values, errors


def audit(request: Request) -> Response:
    me = current(request)
    where, values, errors = _audit_filter(request)
    try:
        before, after = _int_param(request, "before"), _int_param(request, "after")
    except InvalidInputError as exc:
        errors["page"] = exc.message
        before = after = None
    if errors:
        return render(
            request,
            "audit.html",
            status=422,
            title="audit log",
            page=None,
            values=values,
            errors=errors,
            verification=request.app.state.ui.last_verification,
            query="",
        )
    with me.registry.reading() as session:
        page = queries.audit_page(session, where, before=before, after=after)
    query = "&".join(f"{k}={v}" for k, v in request.query_params.items() if k in AUDIT_FIELDS and v)
    return render(
        request,
        "audit.html",
        title="audit log",
        page=page,
        values=values,
        verification=request.app.state.ui.last_verification,
        query=query,
    )


def audit_event(request: Request) -> Response:
    me = current(request)
    seq = request.path_params["seq"]
    if seq > MAX_SEQ:
        raise NotFoundError(f"no audit event {seq}")
    with me.registry.reading() as session:
        found = queries.event(session, seq)
    if found is None:
        raise NotFoundError(f"no audit event {seq}")
    pretty = {
        k: orjson.dumps(getattr(found, k), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
        for k in ("before", "after", "state")
        if getattr(found, k) is not None
    }
    return render(request, "audit_event.html", title=f"audit event {seq}", e=found, pretty=pretty)


def audit_export(request: Request) -> Response:
    """The matching events as JSON Lines, canonical (each line re-hashes to its ``hash``), streamed."""
    me = current(request)
    where, _, errors = _audit_filter(request)
    if errors:
        raise InvalidInputError(next(iter(errors.values())))

    def lines() -> Iterator[bytes]:
        cursor = None
        while True:
            with me.registry.reading() as session:
                page = queries.audit_page_ascending(session, where, after=cursor, size=2000)
            if not page:
                return
            yield "".join(e.to_json() + "\n" for e in page).encode()
            cursor = page[-1].seq

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"content-disposition": 'attachment; filename="audit.jsonl"'},
    )


def audit_verify(request: Request) -> Response:
    from scoregate.governance.audit import verify

    me = current(request)
    ui = request.app.state.ui
    # one verification at a time: it reads the whole log, and any signed-in viewer may ask for it
    if not ui.verifying.acquire(blocking=False):
        raise ConflictError("a verification of the audit chain is running; its result will show on the audit log page")
    try:
        started = utcnow()
        result = verify(me.registry.engine)
        ui.last_verification = {"at": started, "result": result}
    finally:
        ui.verifying.release()
    status = 200 if result.ok else 409
    return render(request, "audit_verify.html", title="audit verification", result=result, at=started, status=status)


# -- predictions -------------------------------------------------------------------------------


def predictions(request: Request) -> Response:
    from scoregate.governance.reproduce import read_logged_request, reproduce

    me = current(request)
    values = {"request_id": (request.query_params.get("request_id") or "")[:MAX_QUERY].strip()}
    errors: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    result = None
    if values["request_id"]:
        frame = read_logged_request(me.registry.settings.predictions_dir, values["request_id"])
        if frame.empty:
            errors["request_id"] = f"request id {values['request_id']!r} is not in the prediction log"
        else:
            for record in frame.head(100).to_dict(orient="records"):
                rows.append({k: (v.decode() if isinstance(v, bytes) else v) for k, v in record.items()})
            if request.query_params.get("reproduce"):
                try:
                    result = reproduce(me.registry, values["request_id"])
                except ScoregateError as exc:
                    errors["reproduce"] = exc.message
    return render(
        request,
        "predictions.html",
        status=404 if errors.get("request_id") else 200,
        title="predictions",
        values=values,
        errors=errors,
        rows=rows,
        result=result,
    )


# -- sign-in -----------------------------------------------------------------------------------


def login_page(request: Request) -> Response:
    return render(request, "login.html", title="sign in", me=None, values={"next": safe_next(request, None)})


def safe_next(request: Request, value: str | None) -> str:
    """Where to go after signing in: a path of this UI only (never another site)."""
    home = str(request.url_for("inventory").path)
    target = value if value is not None else request.query_params.get("next", "")
    root = home.rstrip("/")
    if target and target.startswith(root + "/") and not target.startswith("//") and "\\" not in target:
        return target[: MAX_QUERY * 4]
    return home
