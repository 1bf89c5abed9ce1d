"""Governance gates: identity and roles, four-eyes, policy gates, alias history, retention.

Each refusal is checked to leave the registry exactly as it was.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from scoregate.config import Settings
from scoregate.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    PolicyViolationError,
    UnauthorizedError,
)
from scoregate.governance.service import Governance
from scoregate.registry import Registry
from tests.governance.runs import loadtest_document, validation_document


class Team:
    """An initialised registry with one user per role, each with their own client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tokens = {"admin": Governance(Registry(settings)).init("admin")}
        admin = self.gov("admin")
        for name, role in [
            ("root2", "admin"),
            ("dave", "developer"),
            ("val", "validator"),
            ("vera", "validator"),
            ("dep", "deployer"),
            ("viewer", "viewer"),
        ]:
            self.tokens[name] = admin.add_user(name, [role])

    def reg(self, user: str | None) -> Registry:
        return Registry(self.settings, token=self.tokens[user] if user else "")

    def gov(self, user: str) -> Governance:
        return Governance(self.reg(user))

    def set_policy(self, document: str, reason: str) -> int:
        """Put ``document`` in force: proposed by one admin, approved by the second (where the
        policy in force asks for that)."""
        change = self.gov("admin").set_policy(document, reason=reason)
        if change.version is not None:
            return change.version
        return self.gov("root2").approve_policy(change.proposal, reason="second admin").version


@pytest.fixture
def team(settings: Settings) -> Team:
    return Team(settings)


def register(registry: Registry, files, tier: str = "high"):  # type: ignore[no-untyped-def]
    return registry.register(
        "credit-risk", files["model"], flavor="sklearn", train_data=files["train"], target="default", risk_tier=tier
    )


def record_validation(gov: Governance, version, **changes):  # type: ignore[no-untyped-def]
    return gov.record_run(version.ref, "validation", validation_document(gov.registry, version, **changes))


def state(registry: Registry) -> tuple:
    versions = [v.model_dump() for m in registry.list_models() for v in registry.list_versions(m.name)]
    return versions, registry.aliases(), registry.alias_revision()


def test_tokens_required_once_initialised(team: Team, credit_files) -> None:
    with pytest.raises(UnauthorizedError, match="an API token is required"):
        register(team.reg(None), credit_files)
    with pytest.raises(UnauthorizedError, match="not valid"):
        register(Registry(team.settings, token="sg_forged"), credit_files)
    with pytest.raises(ForbiddenError, match=r"viewer \(roles: viewer\) may not register.*developer"):
        register(team.reg("viewer"), credit_files)
    assert register(team.reg("dave"), credit_files).created_by == "dave"
    with pytest.raises(ConflictError, match="already initialised"):
        Governance(team.reg(None)).init("mallory")


def test_token_expiry_and_revocation(team: Team, credit_files) -> None:
    admin = team.gov("admin")
    token = admin.issue_token("dave", expires_in_days=1)
    later = Registry(team.settings, token=token)
    register(later, credit_files)
    admin.revoke_token(token[:10])
    with pytest.raises(UnauthorizedError, match="was revoked"):
        register(later, credit_files)
    expired = admin.issue_token("dave", expires_in_days=1)
    registry = team.reg("admin")
    with registry.mutation(None, "token") as (session, actor):  # an audited change: not a tampered row
        from sqlalchemy import select

        from scoregate.governance.tables import TokenRow

        row = session.scalars(select(TokenRow).where(TokenRow.prefix == expired[:10])).one()
        row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        registry.record_event(session, actor, "token.expire", f"token:{expired[:10]}")
    with pytest.raises(UnauthorizedError, match="expired"):
        register(Registry(team.settings, token=expired), credit_files)
    with pytest.raises(ForbiddenError, match="manage users and tokens"):
        team.gov("dave").issue_token("dave")


ROLE_MATRIX = [
    # (user, action, allowed)
    ("viewer", "register", False),
    ("dave", "register", True),
    ("val", "register", True),
    ("dep", "register", False),
    ("admin", "register", True),
    ("viewer", "staging", False),
    ("dave", "staging", True),
    ("val", "staging", False),
    ("dep", "staging", True),
    ("dave", "retire", True),
    ("val", "retire", False),
    ("viewer", "retire", False),
    ("dep", "retire", True),
]


@pytest.mark.parametrize(("user", "action", "allowed"), ROLE_MATRIX)
def test_role_matrix(sqlite_settings: Settings, credit_files, user: str, action: str, allowed: bool) -> None:
    team = Team(sqlite_settings)
    register(team.reg("dave"), credit_files)
    registry = team.reg(user)
    before = state(registry)
    calls = {
        "register": lambda: register(registry, credit_files),
        "staging": lambda: registry.set_alias("credit-risk", "staging", 1),
        "retire": lambda: registry.retire("credit-risk@1", reason="test"),
    }
    if allowed:
        calls[action]()
    else:
        with pytest.raises(ForbiddenError, match="rule requires one of the roles"):
            calls[action]()
        assert state(registry) == before


def test_lifecycle_with_four_eyes_and_gates(team: Team, credit_files) -> None:
    v = register(team.reg("dave"), credit_files)
    dep = team.reg("dep")
    before = state(dep)
    with pytest.raises(PolicyViolationError) as refused:
        dep.set_alias("credit-risk", "production", 1)
    rules = {d["rule"] for d in refused.value.details}
    assert rules == {"evidence:validation", "evidence:loadtest", "approvals", "revalidation"}
    assert state(dep) == before

    dave = team.gov("dave")
    with pytest.raises(PolicyViolationError, match="no recorded validation run"):
        dave.mark_validated(v.ref)
    failed = validation_document(dave.registry, v)
    failed["cases"][0]["status"] = "fail"
    dave.record_run(v.ref, "validation", failed)
    record_validation(dave, v, settings={"reference": "none"})
    with pytest.raises(PolicyViolationError):
        dave.mark_validated(v.ref)  # a failing run, or one with a weaker reference, does not count
    record_validation(dave, v)
    assert dave.mark_validated(v.ref, reason="suite passed") == "validated"

    with pytest.raises(ForbiddenError, match="may not approve"):
        dave.approve(v.ref, reason="mine")  # developer role cannot approve anyway
    team.gov("admin").add_user("dana", ["developer", "validator"])
    # four-eyes: a validator who ran a validation of it may not approve
    val = team.gov("val")
    record_validation(val, v)
    with pytest.raises(ForbiddenError, match="four-eyes rule, the approver may not be an author"):
        val.approve(v.ref, reason="looks good")
    assert team.gov("vera").approve(v.ref, reason="independent review") == "approved"

    with pytest.raises(PolicyViolationError) as refused:
        dep.set_alias("credit-risk", "production", 1)
    assert [d["rule"] for d in refused.value.details] == ["evidence:loadtest"]
    dave.record_run(v.ref, "loadtest", loadtest_document(v, p99_ms=900.0))
    with pytest.raises(PolicyViolationError, match=r"its p99 latency was 900\.0 ms against a 300 ms budget"):
        dep.set_alias("credit-risk", "production", 1)
    dave.record_run(v.ref, "loadtest", loadtest_document(v))
    with pytest.raises(ForbiddenError, match="requires the role deployer"):
        team.reg("dave").set_alias("credit-risk", "production", 1)
    dep.set_alias("credit-risk", "production", 1, reason="go live")
    assert dep.resolve("credit-risk@1").status == "production"
    actions = [d["action"] for d in dave.decisions(v.ref)]
    assert actions == ["validate", "approve", "production"]


def test_four_eyes_registrant_may_not_approve(team: Team, credit_files) -> None:
    team.gov("admin").add_user("both", ["developer", "validator"])
    # "both" registers; even as a validator they may not approve their own version
    both_token = team.gov("admin").issue_token("both")
    both = Registry(team.settings, token=both_token)
    v = register(both, credit_files)
    record_validation(team.gov("dave"), v)
    team.gov("dave").mark_validated(v.ref)
    with pytest.raises(ForbiddenError, match="may not be its registrant"):
        Governance(both).approve(v.ref, reason="self")


def test_policy_change_is_versioned_and_exceptions_expire(team: Team, credit_files) -> None:
    v = register(team.reg("dave"), credit_files, tier="low")
    admin = team.gov("admin")
    number, document = admin.policy()
    assert number == 0 and "tiers:" in document
    with pytest.raises(ForbiddenError, match="change the governance policy"):
        team.gov("dave").set_policy(document, reason="x")
    with pytest.raises(InvalidInputError, match="invalid governance policy"):
        admin.set_policy("tiers: {low: {approvals: -1}}", reason="broken")
    stricter = document.replace(
        "  low:\n    evidence: []\n    approvals: 0", "  low:\n    evidence: []\n    approvals: 1"
    )
    assert team.set_policy(stricter, reason="low tier needs an approval") == 1
    with pytest.raises(PolicyViolationError, match="needs 1 approval"):
        team.reg("dave").set_alias("credit-risk", "production", 1)
    admin.grant_exception(
        v.ref, "approvals", reason="regulator waiver", expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    )
    team.reg("dave").set_alias("credit-risk", "production", 1)  # low tier: developer may move it


def test_alias_history_rollback_and_atomic_moves(team: Team, credit_files) -> None:
    dave = team.reg("dave")
    for _ in range(3):
        register(dave, credit_files)
    dave.set_alias("credit-risk", "staging", 1)
    t1 = dt.datetime.now(dt.UTC)
    dave.set_alias("credit-risk", "staging", 2)
    dave.set_alias("credit-risk", "staging", 3)
    assert [h["version"] for h in dave.alias_history("credit-risk", "staging")] == [1, 2, 3]
    assert dave.alias_at("credit-risk", "staging", t1) == 1
    assert dave.alias_at("credit-risk", "staging", t1 - dt.timedelta(days=1)) is None
    assert dave.rollback("credit-risk", "staging").version == 2
    dave.move_aliases([("credit-risk", "staging", 1), ("credit-risk", "challenger", 3)])
    assert {a.alias: a.version for a in dave.aliases()} == {"challenger": 3, "staging": 1}
    before = state(dave)
    with pytest.raises(ConflictError):  # the second move fails, so the first does not happen either
        dave.move_aliases([("credit-risk", "staging", 2), ("credit-risk", "challenger", 1)], overwrite=False)
    assert state(dave) == before


def test_retention_and_legal_hold(team: Team, credit_files) -> None:
    dave = team.reg("dave")
    v = register(dave, credit_files, tier="low")
    admin = team.gov("admin")
    with pytest.raises(ConflictError, match="only a retired version"):
        admin.delete(v.ref, reason="cleanup")
    dave.retire(v.ref, reason="replaced")
    with pytest.raises(ConflictError, match="must be retained until"):
        admin.delete(v.ref, reason="cleanup")
    admin.legal_hold(v.ref, reason="litigation 42")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    with pytest.raises(ConflictError, match="legal hold"):
        admin.delete(v.ref, reason="cleanup", now=later)
    with pytest.raises(ForbiddenError):
        team.gov("dave").release_hold(v.ref, reason="mine")
    admin.release_hold(v.ref, reason="case closed")
    admin.delete(v.ref, reason="retention over", now=later)
    assert dave.resolve(v.ref).status == "deleted"
    assert not admin.registry.artifacts.fs.exists(admin.registry.artifacts._key(v.artifact_digest))


def test_inventory_card_and_bom(team: Team, credit_files) -> None:
    from scoregate.governance.card import card_facts, cyclonedx_bom, render_html, render_markdown, requirements_lock

    dave = team.reg("dave")
    v = register(dave, credit_files)
    dave.set_tag(v.ref, "limitations", "not for business loans")
    rows = team.gov("viewer").inventory()
    assert rows[0]["model"] == "credit-risk" and rows[0]["status"] == "in development"
    assert rows[0]["limitations"] == "not for business loans" and 0 < rows[0]["completeness"] < 1
    assert team.gov("viewer").inventory(at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)) == []
    facts = card_facts(team.gov("viewer"), v.ref)
    markdown = render_markdown(facts)
    assert v.artifact_digest in markdown and "income" in markdown
    # the validity rules and the training data's observed profile are separate columns
    assert "| feature | type | nullable | validity rules | observed in training |" in markdown
    income = v.input_schema.feature("income").observed
    assert f"| income | float | no | - | [{income.minimum:g}, {income.maximum:g}] |" in markdown
    assert "| age | int | no | >= 0 |" in markdown and "(unseen levels scored)" in markdown
    assert "<table>" in render_html(markdown)
    bom = cyclonedx_bom(facts)
    assert bom["bomFormat"] == "CycloneDX"
    assert bom["components"][0]["hashes"][0]["content"] == v.artifact_digest
    assert f"scikit-learn=={v.environment['lock']['scikit-learn']}" in requirements_lock(v)


def _events(registry: Registry) -> int:
    from scoregate.governance.audit import iter_events

    with registry.reading() as session:
        return sum(1 for _ in iter_events(session))


def test_a_refused_or_failed_promotion_leaves_neither_change_nor_event(team: Team, credit_files) -> None:
    dave = team.reg("dave")
    register(dave, credit_files, tier="low")
    register(dave, credit_files, tier="low")
    dave.set_alias("credit-risk", "staging", 1)
    before, events = state(dave), _events(dave)
    with pytest.raises(ConflictError):
        dave.move_aliases([("credit-risk", "production", 2), ("credit-risk", "staging", 2)], overwrite=False)
    with pytest.raises(ForbiddenError):
        team.reg("viewer").set_alias("credit-risk", "staging", 2)
    assert state(dave) == before and _events(dave) == events
    assert dave.alias_history("credit-risk", "production") == []


def backdate(registry: Registry, table: type, where: object, **values: object) -> None:
    """Move recorded times as a clock would: through the ORM and with an audit event, as a
    change must be (the same UPDATE in SQL is refused as tampering)."""
    from sqlalchemy import select

    with registry.mutation(None, "test") as (session, actor):
        for row in session.scalars(select(table).where(where)):  # type: ignore[arg-type]
            for name, value in values.items():
                setattr(row, name, value)
        registry.record_event(session, actor, "test.backdate", "test")


def test_overdue_revalidation_blocks_and_is_flagged(team: Team, credit_files) -> None:
    from scoregate.governance.tables import DecisionRow

    dave = team.reg("dave")
    v = register(dave, credit_files, tier="medium")  # medium: one validation, one approval, 24 months
    dave_gov = team.gov("dave")
    record_validation(dave_gov, v)
    dave_gov.mark_validated(v.ref)
    team.gov("val").approve(v.ref, reason="ok")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=800)
    backdate(dave, DecisionRow, DecisionRow.action == "validate", at=long_ago)
    row = team.gov("viewer").inventory()[0]
    assert row["overdue"] is True and row["next_review"] < dt.date.today().isoformat()
    admin = team.gov("admin")
    _, document = admin.policy()
    team.set_policy(
        document.replace(
            "    revalidate_months: 24\n    block_when_overdue: false",
            "    revalidate_months: 24\n    block_when_overdue: true",
        ),
        reason="medium tier: overdue blocks promotion",
    )
    dep = team.reg("dep")
    with pytest.raises(PolicyViolationError, match="re-validation was due"):
        dep.set_alias("credit-risk", "production", 1)
    # an exception is honoured while it lasts, and not after it expires
    admin.grant_exception(
        v.ref, "revalidation", reason="review booked", expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    )
    assert team.gov("viewer").check(v.ref) == []
    from scoregate.governance.tables import PolicyExceptionRow

    backdate(dave, PolicyExceptionRow, True, expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    assert [m["rule"] for m in team.gov("viewer").check(v.ref)] == ["revalidation"]


def test_webhooks_from_registry_changes_are_signed(team: Team, credit_files) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from scoregate.governance.webhooks import verify_signature

    secret = "a-webhook-secret-of-32-characters"
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(
                {"ok": verify_signature(secret, body, self.headers["X-Scoregate-Signature"]), "event": json.loads(body)}
            )
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        with pytest.raises(ForbiddenError):
            team.gov("dave").add_webhook(url, secret, ["alias.*"])
        team.gov("admin").add_webhook(url, secret, ["alias.*"])
        dave = team.reg("dave")
        register(dave, credit_files, tier="low")
        dave.set_alias("credit-risk", "staging", 1)
        with pytest.raises(ForbiddenError):  # refused: nothing may be sent for it
            team.reg("viewer").set_alias("credit-risk", "challenger", 1)
        report = team.gov("admin").deliver_webhooks()
        assert report.delivered == 1
        assert len(received) == 1 and received[0]["ok"]
        assert "alias.set" in json.dumps(received[0]["event"])
    finally:
        server.shutdown()
        server.server_close()
