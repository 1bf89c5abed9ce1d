"""Segregation of duties in team mode: a developer holds a valid token and no database or
store credential, and cannot move a protected alias by any route the service offers."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from sqlalchemy import select

from scoregate.errors import ScoregateError
from scoregate.governance.service import Governance
from scoregate.registry import Registry
from scoregate.registry.tables import AuditEventRow
from scoregate.remote import RemoteGovernance, RemoteRegistry
from tests.governance.runs import loadtest_document, validation_document
from tests.server.conftest import Mode


def promote(mode: Mode, files) -> None:  # type: ignore[no-untyped-def]
    """Versions 1 and 2 through the gates (embedded, as the other team members), 2 in production."""
    base = mode.service.settings
    for number in (1, 2):
        dave = Governance(Registry(base, token=mode.tokens["dave"]))
        version = dave.registry.register(
            "credit-risk", files["model"], flavor="sklearn", train_data=files["train"], target="default",
            tags={"n": str(number)},
        )  # fmt: skip
        dave.record_run(version.ref, "validation", validation_document(dave.registry, version))
        dave.record_run(version.ref, "loadtest", loadtest_document(version))
        dave.mark_validated(version.ref)
        Governance(Registry(base, token=mode.tokens["vera"])).approve(version.ref, reason="review")
        Registry(base, token=mode.tokens["dep"]).set_alias("credit-risk", "production", number, reason="go")


@pytest.mark.parametrize("mode", ["remote"], indirect=True)
def test_a_developer_with_a_token_cannot_move_a_protected_alias_by_any_route(mode: Mode, credit_files) -> None:
    promote(mode, credit_files)
    settings = mode.settings("dave")
    assert settings.database_url is None and settings.artifacts_url is None  # nothing but the URL and a token
    dave = RemoteRegistry(settings)
    governance = RemoteGovernance(dave)
    attempts = {
        "set": (lambda: dave.set_alias("credit-risk", "production", 1), 403),
        "move": (lambda: dave.move_aliases([("credit-risk", "production", 1)]), 403),
        "move with another": (
            lambda: dave.move_aliases([("credit-risk", "staging", 2), ("credit-risk", "production", 1)]),
            403,
        ),
        "rollback": (lambda: dave.rollback("credit-risk", "production"), 403),
        "delete": (lambda: dave.delete_alias("credit-risk", "production"), 403),
        "retire the holder": (lambda: dave.retire("credit-risk@2", reason="so production goes"), 409),
        "drop the gates": (lambda: governance.set_policy(governance.policy()[1], reason="mine now"), 403),
        "become a deployer": (lambda: governance.add_user("dave2", ["deployer"]), 403),
        "borrow a token": (lambda: governance.issue_token("dep"), 403),
        "waive a rule": (
            lambda: governance.grant_exception(
                "credit-risk@1", "approvals", reason="x", expires_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
            ),
            403,
        ),
    }
    for route, (attempt, status) in attempts.items():
        with pytest.raises(ScoregateError) as refused:
            attempt()
        assert refused.value.status_code == status, (route, refused.value.message)
    # the raw API, with the token in other places and other spellings, and without one
    url = mode.service.url + "/api/v1/models/credit-risk/aliases/production"
    token = mode.tokens["dave"]
    for headers in (
        {"authorization": f"Bearer {token}"},
        {"authorization": f"bearer {token}", "x-scoregate-user": "dep"},
        {"authorization": f"Basic {token}"},
        {"authorization": f"Bearer {mode.tokens['dep'][:-2]}xx"},
        {},
    ):
        answer = httpx.put(url, json={"version": 1}, headers=headers, timeout=30)
        assert answer.status_code in (401, 403), answer.text
        assert answer.json()["message"]
    forbidden = httpx.put(url, json={"version": 1}, headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert "requires the role deployer" in forbidden.json()["message"]  # 403 naming the rule

    held = Registry(mode.service.settings)
    assert held.resolve("credit-risk@production").version == 2
    with held.reading() as session:
        moved_by_dave = session.scalars(
            select(AuditEventRow).where(AuditEventRow.actor == "dave", AuditEventRow.action.like("alias%"))
        ).all()
    assert moved_by_dave == []
