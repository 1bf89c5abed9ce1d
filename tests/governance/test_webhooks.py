"""Webhooks through the outbox: signed deliveries to a real local receiver, retries, rollbacks."""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from scoregate.errors import InvalidInputError
from scoregate.governance.audit import append_event, iter_events, verify
from scoregate.governance.webhooks import (
    DeliveryReport,
    deactivate,
    deliver_pending,
    sign,
    subscribe,
    subscriptions,
    verify_signature,
)
from scoregate.registry.database import WRITE
from scoregate.registry.tables import WebhookOutboxRow
from tests.governance.conftest import SECRET, Receiver

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def writing(engine: Engine) -> Session:
    return Session(engine.execution_options(**WRITE))


def add_subscription(engine: Engine, url: str, actions: tuple[str, ...] = ("alias.*",)) -> int:
    with writing(engine) as session, session.begin():
        return subscribe(session, url=url, secret=SECRET, actor="admin", actions=actions).id


def outbox(engine: Engine) -> list:
    with Session(engine) as session:
        return list(session.scalars(select(WebhookOutboxRow).order_by(WebhookOutboxRow.id)))


def aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def test_signatures_verify_only_for_the_exact_body_and_secret() -> None:
    body = b'{"seq":1}'
    header = sign(SECRET, body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature(SECRET, body, header)
    assert not verify_signature(SECRET, body + b" ", header)
    assert not verify_signature("another-secret-value", body, header)
    assert not verify_signature(SECRET, body, None)
    assert not verify_signature(SECRET, body, header.removeprefix("sha256="))
    assert not verify_signature(SECRET, body, "sha256=é")


def test_a_matching_event_is_delivered_signed_once(engine: Engine, receiver: Receiver, client: httpx.Client) -> None:
    add_subscription(engine, receiver.url, ("alias.*",))
    with writing(engine) as session, session.begin():
        moved = append_event(
            session, actor="ann", action="alias.set", subject="model:credit@production", after={"v": 2}
        )
        append_event(session, actor="ann", action="version.register", subject="model:credit@2")
    assert [row.event_seq for row in outbox(engine)] == [moved.seq]  # only the matching action

    report = deliver_pending(engine, client=client)
    assert (report.delivered, report.retrying, report.failed) == (1, 0, 0)
    [request] = receiver.received
    assert request["signed"] and request["event_id"] == str(moved.seq)
    assert json.loads(request["body"]) == moved.to_dict()
    [row] = outbox(engine)
    assert row.status == "delivered" and row.attempts == 1 and row.delivered_at is not None
    assert deliver_pending(engine, client=client).delivered == 0  # never twice
    assert len(receiver.received) == 1


def test_a_failing_receiver_is_retried_with_exponential_backoff(
    engine: Engine, receiver: Receiver, client: httpx.Client
) -> None:
    add_subscription(engine, receiver.url)
    receiver.answers = [500, 502]
    with writing(engine) as session, session.begin():
        append_event(session, actor="ann", action="alias.delete", subject="model:credit@staging")

    assert deliver_pending(engine, client=client, base_delay=10, now=T0).retrying == 1
    [row] = outbox(engine)
    assert (row.status, row.attempts) == ("pending", 1) and row.last_error.startswith("HTTP 500")
    assert aware(row.next_attempt_at) == T0 + dt.timedelta(seconds=10)

    assert deliver_pending(engine, client=client, base_delay=10, now=T0 + dt.timedelta(seconds=5)).retrying == 0
    assert len(receiver.received) == 1  # not due yet

    assert deliver_pending(engine, client=client, base_delay=10, now=T0 + dt.timedelta(seconds=11)).retrying == 1
    [row] = outbox(engine)
    assert row.attempts == 2 and row.last_error.startswith("HTTP 502")
    assert aware(row.next_attempt_at) == T0 + dt.timedelta(seconds=31)  # 11 s + 10 * 2

    report = deliver_pending(engine, client=client, base_delay=10, now=T0 + dt.timedelta(seconds=40))
    assert report.delivered == 1
    [row] = outbox(engine)
    assert row.status == "delivered" and row.attempts == 3
    assert len(receiver.received) == 3
    assert all(r["signed"] for r in receiver.received)
    assert len({r["body"] for r in receiver.received}) == 1  # the same bytes each time


def test_delivery_gives_up_after_max_attempts(engine: Engine, receiver: Receiver, client: httpx.Client) -> None:
    add_subscription(engine, receiver.url)
    receiver.answers = [503] * 10
    with writing(engine) as session, session.begin():
        append_event(session, actor="ann", action="alias.set", subject="model:m@production")
    assert deliver_pending(engine, client=client, max_attempts=2, base_delay=0, now=T0).retrying == 1
    assert deliver_pending(engine, client=client, max_attempts=2, base_delay=0, now=T0).failed == 1
    assert deliver_pending(engine, client=client, max_attempts=2, base_delay=0, now=T0) == DeliveryReport()
    [row] = outbox(engine)
    assert (row.status, row.attempts) == ("failed", 2)
    assert len(receiver.received) == 2


def test_an_unreachable_receiver_is_recorded(engine: Engine, client: httpx.Client) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    add_subscription(engine, f"http://127.0.0.1:{port}/hooks")
    with writing(engine) as session, session.begin():
        append_event(session, actor="ann", action="alias.set", subject="model:m@production")
    assert deliver_pending(engine, client=client, now=T0).retrying == 1
    [row] = outbox(engine)
    assert row.status == "pending" and "ConnectError" in row.last_error


def test_a_rolled_back_change_is_never_sent(engine: Engine, receiver: Receiver, client: httpx.Client) -> None:
    add_subscription(engine, receiver.url, ("*",))
    created = len(outbox(engine))  # the subscription's own audit event matches "*"
    with pytest.raises(RuntimeError), writing(engine) as session, session.begin():
        append_event(session, actor="ann", action="alias.set", subject="model:m@production")
        assert len(session.scalars(select(WebhookOutboxRow)).all()) == created + 1  # queued in the transaction
        raise RuntimeError("the change failed")
    assert len(outbox(engine)) == created
    deliver_pending(engine, client=client)
    assert [json.loads(r["body"])["action"] for r in receiver.received] == ["webhook.subscribe"]


def test_subscriptions_are_audited_without_their_secret_and_can_be_stopped(
    engine: Engine, receiver: Receiver, client: httpx.Client
) -> None:
    sub_id = add_subscription(engine, receiver.url, ("alias.*",))
    with writing(engine) as session, session.begin():
        deactivate(session, sub_id, actor="admin", reason="receiver retired")
    with writing(engine) as session, session.begin():
        append_event(session, actor="ann", action="alias.set", subject="model:m@production")
    assert outbox(engine) == []
    assert deliver_pending(engine, client=client).delivered == 0
    with Session(engine) as session:
        [sub] = subscriptions(session)
        assert (sub.id, sub.active, sub.actions) == (sub_id, False, ("alias.*",))
        log = list(iter_events(session, subject=f"webhook:{sub_id}"))
    assert [e.action for e in log] == ["webhook.subscribe", "webhook.deactivate"]
    assert SECRET not in json.dumps([e.to_dict() for e in log])
    assert log[1].reason == "receiver retired" and log[1].after["active"] is False
    assert verify(engine).ok


@pytest.mark.parametrize(
    ("url", "secret", "actions"),
    [("ftp://host/x", SECRET, ("*",)), ("not a url", SECRET, ("*",)), ("http://h/x", "short", ("*",))],
)
def test_bad_subscriptions_are_refused(engine: Engine, url: str, secret: str, actions: tuple[str, ...]) -> None:
    with pytest.raises(InvalidInputError), writing(engine) as session, session.begin():
        subscribe(session, url=url, secret=secret, actor="admin", actions=actions)
