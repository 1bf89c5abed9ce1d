"""Webhooks for audit events, through a transactional outbox.

``append_event`` writes one outbox row per matching subscription in the transaction of
the change, so a rolled-back change notifies no one and a committed one is delivered
at least once, across crashes too. ``deliver_pending`` claims due rows in a short
transaction, posts outside any transaction (a slow receiver never holds a database
lock), then records the outcome with exponential backoff. Bodies are the event's
canonical JSON, hash included, signed with HMAC-SHA256 of the subscription secret;
receivers check them with ``verify_signature`` and deduplicate on the event id.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import httpx
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from scoregate.errors import InvalidInputError, NotFoundError
from scoregate.governance.audit import AuditEvent, append_event
from scoregate.registry.database import WRITE
from scoregate.registry.tables import WebhookOutboxRow, WebhookSubscriptionRow, utcnow

SIGNATURE_HEADER = "X-Scoregate-Signature"
EVENT_ID_HEADER = "X-Scoregate-Event-Id"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

_SUBS = WebhookSubscriptionRow.__table__
_OUTBOX = WebhookOutboxRow.__table__


@dataclass(frozen=True, slots=True)
class Subscription:
    id: int
    url: str
    actions: tuple[str, ...]
    active: bool
    created_by: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0  # gave up after max_attempts


@dataclass(frozen=True, slots=True)
class _Claim:
    id: int
    attempts: int
    event_seq: int
    payload: str
    url: str
    secret: str


# -- signing -------------------------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    """The ``X-Scoregate-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """For receivers: does ``header`` sign exactly ``body`` with ``secret``? (constant time)"""
    if not secret or not header:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode("utf-8", "replace"))


# -- subscriptions -------------------------------------------------------------------------------


def subscribe(
    session: Session,
    *,
    url: str,
    secret: str,
    actor: str,
    actions: Sequence[str] = ("*",),
    request_id: str | None = None,
) -> Subscription:
    """Add a subscription (audited) in ``session``'s transaction; ``actions`` are globs like ``alias.*``."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInputError(f"invalid webhook URL {url!r}: expected http(s)://host/path")
    if len(secret) < 16:
        raise InvalidInputError("a webhook secret needs at least 16 characters")
    patterns = tuple(str(a) for a in actions)
    if not patterns or not all(patterns):
        raise InvalidInputError("a webhook needs at least one non-empty action pattern (e.g. '*')")
    now = utcnow()
    row = WebhookSubscriptionRow(
        url=url, secret=secret, actions=list(patterns), active=True, created_by=actor, created_at=now
    )
    session.add(row)  # through the ORM, so the audit event records the row (by digest of its secret)
    session.flush()
    append_event(
        session,
        actor=actor,
        action="webhook.subscribe",
        subject=f"webhook:{row.id}",
        after=_public(row),
        request_id=request_id,
    )
    return Subscription(row.id, url, patterns, True, actor, now)


def deactivate(
    session: Session, subscription_id: int, *, actor: str, reason: str | None = None, request_id: str | None = None
) -> None:
    """Stop deliveries to a subscription (audited); its history stays."""
    row = session.get(WebhookSubscriptionRow, subscription_id, with_for_update=True)
    if row is None:
        raise NotFoundError(f"webhook subscription {subscription_id} not found")
    before = _public(row)
    row.active = False
    append_event(
        session,
        actor=actor,
        action="webhook.deactivate",
        subject=f"webhook:{subscription_id}",
        before=before,
        after={**before, "active": False},
        reason=reason,
        request_id=request_id,
    )


def subscriptions(session: Session) -> list[Subscription]:
    rows = session.execute(select(_SUBS).order_by(_SUBS.c.id)).all()
    return [
        Subscription(r.id, r.url, tuple(r.actions), bool(r.active), r.created_by, _aware(r.created_at)) for r in rows
    ]


def _public(row: WebhookSubscriptionRow) -> dict[str, Any]:
    """A subscription as audited: never the secret."""
    return {"url": row.url, "actions": list(row.actions), "active": bool(row.active)}


# -- outbox --------------------------------------------------------------------------------------


def enqueue(session: Session, events: Sequence[AuditEvent]) -> int:
    """Owe each matching active subscription a delivery of each event (called by ``append_events``)."""
    subs = session.execute(select(_SUBS.c.id, _SUBS.c.actions).where(_SUBS.c.active.is_(True))).all()
    if not subs or not events:
        return 0
    now = utcnow()
    rows = [
        {
            "subscription_id": sub_id,
            "event_seq": event.seq,
            "payload": event.to_json(),
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for event in events
        for sub_id, patterns in subs
        if any(fnmatchcase(event.action, p) for p in patterns)
    ]
    if rows:
        session.execute(insert(_OUTBOX), rows)
    return len(rows)


def deliver_pending(
    engine: Engine,
    *,
    client: httpx.Client,
    max_attempts: int = 5,
    base_delay: float = 30.0,
    max_delay: float = 3600.0,
    lease: float = 300.0,
    limit: int = 100,
    now: dt.datetime | None = None,
) -> DeliveryReport:
    """POST every due outbox item once; failures wait ``base_delay * 2**(attempts-1)`` s (capped).

    An item is claimed for ``lease`` seconds first, so a worker that dies mid-post
    leaves it to be retried, and two workers never post the same item at once.
    """
    if max_attempts < 1:
        raise InvalidInputError("max_attempts must be at least 1")
    if now is not None and now.tzinfo is None:
        raise InvalidInputError("now must be timezone-aware")
    now = (now or utcnow()).astimezone(dt.UTC)
    delivered = retrying = failed = 0
    for item in _claim(engine, now, lease, limit):
        error = _post(client, item)
        outcome = _record(engine, item, error, now, max_attempts, base_delay, max_delay)
        delivered += outcome == DELIVERED
        failed += outcome == FAILED
        retrying += outcome == PENDING
    return DeliveryReport(delivered, retrying, failed)


def _claim(engine: Engine, now: dt.datetime, lease: float, limit: int) -> list[_Claim]:
    query = (
        select(_OUTBOX.c.id, _OUTBOX.c.attempts, _OUTBOX.c.event_seq, _OUTBOX.c.payload, _SUBS.c.url, _SUBS.c.secret)
        .join(_SUBS, _SUBS.c.id == _OUTBOX.c.subscription_id)
        .where(_OUTBOX.c.status == PENDING, _OUTBOX.c.next_attempt_at <= now, _SUBS.c.active.is_(True))
        .order_by(_OUTBOX.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=_OUTBOX)
    )
    with Session(engine.execution_options(**WRITE)) as session, session.begin():
        claims = [_Claim(r.id, r.attempts + 1, r.event_seq, r.payload, r.url, r.secret) for r in session.execute(query)]
        if claims:
            session.execute(
                update(_OUTBOX)
                .where(_OUTBOX.c.id.in_([c.id for c in claims]))
                .values(attempts=_OUTBOX.c.attempts + 1, next_attempt_at=now + dt.timedelta(seconds=lease))
            )
    return claims


def _post(client: httpx.Client, item: _Claim) -> str | None:
    """None on a 2xx answer, else why not."""
    body = item.payload.encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(item.secret, body),
        EVENT_ID_HEADER: str(item.event_seq),
        "User-Agent": "scoregate-webhooks",
    }
    try:
        response = client.post(item.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:1000]
    if response.is_success:
        return None
    return f"HTTP {response.status_code}: {response.text[:200]}"[:1000]


def _record(
    engine: Engine,
    item: _Claim,
    error: str | None,
    now: dt.datetime,
    max_attempts: int,
    base_delay: float,
    max_delay: float,
) -> str:
    if error is None:
        values: dict[str, Any] = {"status": DELIVERED, "delivered_at": utcnow(), "last_error": None}
    elif item.attempts >= max_attempts:
        values = {"status": FAILED, "last_error": error}
    else:
        delay = min(base_delay * 2 ** (item.attempts - 1), max_delay)
        values = {"status": PENDING, "last_error": error, "next_attempt_at": now + dt.timedelta(seconds=delay)}
    with Session(engine.execution_options(**WRITE)) as session, session.begin():
        # Only if no other worker re-claimed the item after our lease ran out.
        session.execute(
            update(_OUTBOX).where(_OUTBOX.c.id == item.id, _OUTBOX.c.attempts == item.attempts).values(**values)
        )
    return str(values["status"])


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
