"""The audit chain covers the state the gates read: a row changed, forged or deleted in SQL
is refused by every read that relies on it and named by ``audit verify``.

Each bypass is done as the database's owner would: plain SQL, no platform in between.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re

import pytest
from sqlalchemy import Engine, func, select, text

from scoregate.config import Settings
from scoregate.errors import IntegrityError, PolicyViolationError, UnauthorizedError
from scoregate.governance.audit import iter_events, verify
from scoregate.governance.service import Governance
from scoregate.registry import Registry
from scoregate.serving import RegistrySource, create_app
from tests.governance.runs import loadtest_document
from tests.governance.test_lifecycle import Team, record_validation, register


@pytest.fixture
def team(db_settings: Settings) -> Team:
    return Team(db_settings)


def sql(registry: Registry, statement: str, **params: object) -> None:
    """What the database's owner can do: plain SQL, behind the platform's back."""
    with registry.engine.begin() as connection:
        connection.execute(text(statement), params)


def version_id(registry: Registry, number: int) -> int:
    with registry.engine.connect() as connection:
        return connection.execute(text("SELECT id FROM model_versions WHERE version = :v"), {"v": number}).scalar_one()


def mismatches(engine: Engine) -> list[str]:
    result = verify(engine)
    assert result.reason is None, result  # the chain itself is intact: only the rows differ
    return [m.message for m in result.mismatches]


ALIAS_MOVED = re.compile(
    r"aliases row credit-risk@production: version_id is (\d+), the audit log \(event (\d+)\) says (\d+)"
)


# -- the alias row -------------------------------------------------------------------------------


def test_an_alias_moved_in_sql_is_refused_by_every_read_and_named_by_verify(
    db_settings: Settings, credit_files, run, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(db_settings)
    register(registry, credit_files, tier="low")
    register(registry, credit_files, tier="low")
    registry.set_alias("credit-risk", "production", 1)
    assert verify(registry.engine).ok
    v1, v2 = version_id(registry, 1), version_id(registry, 2)
    sql(registry, "UPDATE aliases SET version_id = :v WHERE alias = 'production'", v=v2)

    with pytest.raises(IntegrityError, match=ALIAS_MOVED.pattern) as refused:
        registry.resolve("credit-risk@production")
    stored, seq, recorded = ALIAS_MOVED.search(str(refused.value)).groups()
    assert (int(stored), int(recorded)) == (v2, v1)
    source = RegistrySource(Registry(db_settings))
    with pytest.raises(IntegrityError, match=ALIAS_MOVED.pattern):
        source.aliases()  # what a running server reloads from: it keeps serving what it had
    with pytest.raises(IntegrityError, match=ALIAS_MOVED.pattern):
        source.resolve("credit-risk@production")
    app = create_app(source, models=["credit-risk@production"])
    with pytest.raises(IntegrityError, match=ALIAS_MOVED.pattern):
        asyncio.run(app.startup())  # a restarted server does not start on the forged alias
    asyncio.run(app.shutdown())

    for args in (
        ("predict", "credit-risk@production", "--input", credit_files["rows"]),
        ("models", "show", "credit-risk@production"),
    ):
        code, out, err = run(*args)
        assert code == 5 and "Traceback" not in err, (args, out, err)
        assert ALIAS_MOVED.search(" ".join(err.split())), err
    code, out, err = run("audit", "verify")
    assert code == 1
    assert re.search(ALIAS_MOVED.pattern + r"\n", " ".join(err.split()) + "\n"), err
    assert [ALIAS_MOVED.fullmatch(m) is not None for m in mismatches(registry.engine)] == [True]
    assert int(seq) == max(e.seq for e in iter_events_of(registry) if e.action == "alias.set")


def iter_events_of(registry: Registry) -> list:
    with registry.reading() as session:
        return list(iter_events(session))


def test_an_alias_forged_or_deleted_in_sql_is_named(db_settings: Settings, credit_files) -> None:
    registry = Registry(db_settings)
    register(registry, credit_files, tier="low")
    registry.set_alias("credit-risk", "staging", 1)
    with registry.engine.connect() as connection:
        model_id = connection.execute(text("SELECT id FROM models")).scalar_one()
    sql(
        registry,
        "INSERT INTO aliases (model_id, alias, version_id, updated_at) VALUES (:m, 'production', :v, :t)",
        m=model_id,
        v=version_id(registry, 1),
        t=dt.datetime.now(dt.UTC),
    )
    with pytest.raises(IntegrityError, match=r"aliases row credit-risk@production: no audit event wrote it"):
        registry.resolve("credit-risk@production")
    with pytest.raises(IntegrityError, match="no audit event wrote it"):
        registry.aliases()
    sql(registry, "DELETE FROM aliases WHERE alias = 'staging'")
    found = mismatches(registry.engine)
    assert len(found) == 2
    assert "aliases row credit-risk@production: no audit event wrote it" in found[0]
    assert re.fullmatch(r"aliases row credit-risk@staging is gone: the audit log \(event \d+\) records it", found[1])


# -- the rows the gates read ---------------------------------------------------------------------


def promotable(team: Team, files, *, approve: bool = True):  # type: ignore[no-untyped-def]
    """credit-risk@1 (high tier) with its validation and load-test reports, validated, approved."""
    v = register(team.reg("dave"), files, tier="high")
    dave = team.gov("dave")
    record_validation(dave, v)
    dave.record_run(v.ref, "loadtest", loadtest_document(v))
    dave.mark_validated(v.ref)
    if approve:
        team.gov("val").approve(v.ref, reason="reviewed")
    return v


def refused_everywhere(team: Team, run, pattern: str) -> None:
    """``check`` and moving production refuse, as does the CLI, in one line; verify names the row."""
    with pytest.raises(IntegrityError, match=pattern):
        team.gov("viewer").check("credit-risk@1")
    with pytest.raises(IntegrityError, match=pattern):
        team.reg("dep").set_alias("credit-risk", "production", 1)
    code, out, err = run("check", "credit-risk@1")
    assert code == 5 and "Traceback" not in err and re.search(pattern, " ".join(err.split())), (out, err)
    assert any(re.search(pattern, m) for m in mismatches(team.reg("admin").engine))
    with team.reg("admin").engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM aliases")).scalar() == 0


def test_a_forged_approval_is_refused_and_named(team: Team, credit_files, run) -> None:
    v = promotable(team, credit_files, approve=False)
    assert [m["rule"] for m in team.gov("viewer").check(v.ref)] == ["approvals"]
    registry = team.reg("admin")
    sql(
        registry,
        "INSERT INTO decisions (version_id, action, from_status, to_status, actor, reason, evidence, at) "
        "VALUES (:v, 'approve', 'validated', 'approved', 'val', 'looks fine', '[]', :t)",
        v=version_id(registry, 1),
        t=dt.datetime.now(dt.UTC),
    )
    refused_everywhere(team, run, r"decisions row \d+ credit-risk@1 approve: no audit event wrote it")


def test_an_approval_rewritten_to_the_registrant_is_refused_and_named(team: Team, credit_files, run) -> None:
    promotable(team, credit_files)
    sql(team.reg("admin"), "UPDATE decisions SET actor = 'dave' WHERE action = 'approve'")
    refused_everywhere(
        team, run, r'decisions row \d+ credit-risk@1 approve: actor is "dave", the audit log \(event \d+\) says "val"'
    )


def test_forged_evidence_is_refused_and_named(team: Team, credit_files, run) -> None:
    v = register(team.reg("dave"), credit_files, tier="high")
    record_validation(team.gov("dave"), v)
    team.gov("dave").mark_validated(v.ref)
    team.gov("val").approve(v.ref, reason="reviewed")
    assert [m["rule"] for m in team.gov("viewer").check(v.ref)] == ["evidence:loadtest"]
    summary = json.dumps({"passed": True, "artifact_digest": v.artifact_digest, "within_budget": True})
    sql(
        team.reg("admin"),
        "INSERT INTO evidence (version_id, kind, name, digest, size, bound_digest, passed, summary, author, "
        "created_at, origin, settings) VALUES (:v, 'loadtest', 'loadtest.json', :d, 2, :b, :p, :s, 'dave', :t, "
        "'run', '{}')",
        v=version_id(team.reg("admin"), 1),
        d="f" * 64,
        b=v.artifact_digest,
        p=True,
        s=summary,
        t=dt.datetime.now(dt.UTC),
    )
    refused_everywhere(team, run, r"evidence row \d+ credit-risk@1 loadtest: no audit event wrote it")


LAX = """\
protected_aliases: [production]
default_tier: high
tiers:
  high: {evidence: [], approvals: 0, protected_alias_role: developer}
"""


def test_a_forged_policy_is_refused_and_named(team: Team, credit_files, run) -> None:
    v = register(team.reg("dave"), credit_files, tier="high")
    assert team.gov("viewer").check(v.ref) != []
    sql(
        team.reg("admin"),
        "INSERT INTO policies (document, digest, author, reason, created_at) VALUES (:doc, :d, 'admin', 'x', :t)",
        doc=LAX,
        d="0" * 64,
        t=dt.datetime.now(dt.UTC),
    )
    refused_everywhere(team, run, r"policies row \d+: no audit event wrote it")


def test_the_newest_policy_deleted_in_sql_does_not_bring_back_the_one_before(team: Team, credit_files) -> None:
    admin = team.gov("admin")
    team.set_policy(LAX, reason="lax for a while")
    _, document = admin.policy()
    number = team.set_policy(document.replace("approvals: 0", "approvals: 2"), reason="strict again")
    v = register(team.reg("dave"), credit_files, tier="high")
    sql(team.reg("admin"), "DELETE FROM policies WHERE id = :id", id=number)  # the lax one is in force again
    with pytest.raises(IntegrityError, match=rf"policies row {number} is gone: the audit log \(event \d+\) records it"):
        team.gov("viewer").check(v.ref)
    with pytest.raises(IntegrityError, match="is gone"):
        team.reg("dave").set_alias("credit-risk", "production", 1)


def test_a_legal_hold_deleted_in_sql_still_blocks_deletion(db_settings: Settings, credit_files) -> None:
    registry = Registry(db_settings)
    v = register(registry, credit_files, tier="low")
    registry.retire(v.ref, reason="superseded")
    governance = Governance(registry)
    governance.legal_hold(v.ref, reason="litigation")
    sql(registry, "DELETE FROM legal_holds")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)  # past the low tier's retention
    pattern = r"legal_holds row credit-risk@1 is gone: the audit log \(event \d+\) records it"
    with pytest.raises(IntegrityError, match=pattern):
        governance.delete(v.ref, reason="retention over", now=later)
    assert registry.resolve(v.ref).status == "retired"
    assert any(re.fullmatch(pattern, m) for m in mismatches(registry.engine))


def test_users_deleted_in_sql_do_not_hand_out_the_local_admin(team: Team, credit_files) -> None:
    registry = team.reg(None)
    with pytest.raises(UnauthorizedError):
        register(registry, credit_files)
    sql(registry, "DELETE FROM api_tokens")
    sql(registry, "DELETE FROM users")  # before the first user, the local user acts as admin
    with pytest.raises(IntegrityError, match=r"users row admin is gone: the audit log \(event \d+\) records it"):
        register(registry, credit_files)


def test_a_token_revived_in_sql_is_refused(team: Team, credit_files) -> None:
    token = team.gov("admin").issue_token("dave")
    team.gov("admin").revoke_token(token[:10])
    sql(team.reg("admin"), "UPDATE api_tokens SET revoked_at = NULL")
    with pytest.raises(IntegrityError, match=r"api_tokens row \d+ sg_[\w-]+: revoked_at is null, the audit log"):
        register(Registry(team.settings, token=token), credit_files)


def test_a_status_set_in_sql_is_named_twice(team: Team, credit_files) -> None:
    promotable(team, credit_files, approve=False)
    sql(team.reg("admin"), "UPDATE model_versions SET status = 'approved'")
    found = mismatches(team.reg("admin").engine)
    assert re.fullmatch(
        r'model_versions row credit-risk@1: status is "approved", the audit log \(event \d+\) says "validated"',
        found[0],
    )
    assert found[1] == (
        "model_versions row credit-risk@1: status is 'approved', but its last decision "
        f"(decisions row {_last_decision(team)}) moved it to 'validated'"
    )


def _last_decision(team: Team) -> int:
    with team.reg("admin").engine.connect() as connection:
        return connection.execute(text("SELECT max(id) FROM decisions")).scalar_one()


def test_an_honest_change_does_not_launder_a_row_changed_in_sql(db_settings: Settings, credit_files) -> None:
    """A row is checked as stored before the platform overwrites it, so the next event does not
    record the tampered value as if it had been made by the platform."""
    registry = Registry(db_settings)
    register(registry, credit_files, tier="high")
    sql(registry, "UPDATE models SET risk_tier = 'low'")  # fewer gates for the next version ...
    with pytest.raises(IntegrityError, match=r'models row credit-risk: risk_tier is "low", the audit log'):
        register(registry, credit_files)  # ... which updates the model row: refused, nothing stored
    assert [m.message for m in verify(registry.engine).mismatches] != []
    with registry.reading() as session:
        assert session.scalar(select(func.count()).select_from(text("model_versions"))) == 1


# -- triggers ------------------------------------------------------------------------------------


def test_a_dropped_or_disabled_trigger_is_reported(db_settings: Settings, credit_files, run) -> None:
    registry = Registry(db_settings)
    register(registry, credit_files, tier="low")
    assert verify(registry.engine).problems == ()
    if registry.engine.dialect.name == "postgresql":
        sql(registry, "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        sql(registry, "DROP TRIGGER audit_keys_no_truncate ON audit_keys")
        expected = [
            "the append-only trigger audit_events_append_only is disabled: UPDATE and DELETE of audit_events "
            "is not refused",
            "the append-only trigger audit_keys_no_truncate is missing: TRUNCATE of audit_keys is not refused",
        ]
    else:
        sql(registry, "DROP TRIGGER audit_events_no_update")
        sql(registry, "DROP TRIGGER audit_keys_no_delete")
        sql(registry, "CREATE TRIGGER audit_keys_no_delete BEFORE DELETE ON audit_keys BEGIN SELECT 1; END")
        expected = [
            "the append-only trigger audit_events_no_update is missing: UPDATE of audit_events is not refused",
            "the append-only trigger audit_keys_no_delete is altered: DELETE of audit_keys may not be refused",
        ]
    result = verify(registry.engine)
    assert not result.ok and result.reason is None and list(result.problems) == expected
    code, _, err = run("audit", "verify")
    assert code == 1 and all(line in " ".join(err.split()) for line in expected), err


# -- the registry's own writes -------------------------------------------------------------------


def test_every_change_the_platform_makes_verifies_row_by_row(team: Team, credit_files, receiver) -> None:
    v = promotable(team, credit_files)
    register(team.reg("dave"), credit_files, tier="high")
    team.reg("dep").set_alias("credit-risk", "production", 1)
    team.reg("dave").set_tag(v.ref, "limitations", "not for SME loans")
    team.gov("admin").grant_exception(
        v.ref, "revalidation", reason="booked", expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    )
    team.gov("admin").legal_hold(v.ref, reason="litigation")
    team.gov("admin").release_hold(v.ref, reason="settled")
    team.reg("dep").set_traffic_policy("credit-risk", "production", {"shadow": {"version": 2, "sample": 0.1}})
    hook = team.gov("admin").add_webhook(receiver.url, "s3cret-s3cret-s3cret-s3cret", ["alias.*"])
    team.gov("admin").remove_webhook(hook)
    result = verify(team.reg("viewer").engine)
    assert result.ok and result.mismatches == () and result.problems == (), result
    with team.reg("admin").engine.connect() as connection:
        tables = [r[0] for r in connection.execute(text("SELECT DISTINCT table_name FROM audit_keys ORDER BY 1"))]
        state = " ".join(
            r[0] for r in connection.execute(text("SELECT state FROM audit_events WHERE state IS NOT NULL"))
        )
    assert tables == [
        "alias_history",
        "aliases",
        "api_tokens",
        "decisions",
        "evidence",
        "legal_holds",
        "model_versions",
        "models",
        "policy_exceptions",
        "traffic_policies",
        "users",
        "version_tags",
        "webhook_subscriptions",
    ]
    assert result.rows > 20
    assert "s3cret" not in state  # secrets are recorded by digest only
    for token in team.tokens.values():
        assert token not in state


def test_webhook_subscriptions_are_covered_and_their_secret_is_a_digest(team: Team, receiver) -> None:
    hook = team.gov("admin").add_webhook(receiver.url, "s3cret-s3cret-s3cret-s3cret", ["*"])
    registry = team.reg("admin")
    sql(registry, "UPDATE webhook_subscriptions SET url = 'https://evil.example/x'")
    found = mismatches(registry.engine)
    assert len(found) == 1 and found[0].startswith(f"webhook_subscriptions row {hook} ")
    assert 'url is "https://evil.example/x", the audit log' in found[0]


def test_a_refused_move_leaves_the_log_as_it_was(team: Team, credit_files) -> None:
    v = register(team.reg("dave"), credit_files, tier="high")
    with team.reg("admin").engine.connect() as connection:
        before = connection.execute(text("SELECT count(*) FROM audit_keys")).scalar()
    with pytest.raises(PolicyViolationError):
        team.reg("dep").set_alias("credit-risk", "production", v.version)
    with team.reg("admin").engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM audit_keys")).scalar() == before
    assert verify(team.reg("admin").engine).ok


def test_governance_reads_after_a_legitimate_change_in_another_process_are_not_tampering(
    team: Team, credit_files
) -> None:
    """A reader that cached nothing stale: rows changed by the platform between two reads verify."""
    v = promotable(team, credit_files)
    reader = Governance(team.reg("viewer"))
    assert reader.check(v.ref) == []
    team.reg("dep").set_alias("credit-risk", "production", 1)
    team.reg("dave").set_tag(v.ref, "findings", "none")
    assert reader.check(v.ref) == []
    assert team.reg("viewer").resolve("credit-risk@production").version == 1


MOVER = """
import sys
from scoregate.config import Settings
from scoregate.registry import Registry
registry = Registry(Settings(home=sys.argv[1], database_url=sys.argv[2] or None))
for i in range(int(sys.argv[3])):
    registry.set_alias("credit-risk", "staging", 1 + i % 2)
    registry.set_tag("credit-risk@1", "round", str(i))
registry.close()
"""


def test_reads_racing_honest_writers_never_cry_tampering(db_settings: Settings, credit_files) -> None:
    """A read overtaken by a commit between reading a row and its event is re-read, not refused."""
    import subprocess
    import sys

    registry = Registry(db_settings)
    register(registry, credit_files, tier="low")
    register(registry, credit_files, tier="low")
    registry.set_alias("credit-risk", "staging", 1)
    url = db_settings.database_url or ""
    mover = subprocess.Popen([sys.executable, "-c", MOVER, str(db_settings.home), url, "40"], stderr=subprocess.PIPE)
    reads = 0
    while mover.poll() is None:
        assert {a.version for a in registry.aliases()} <= {1, 2}
        assert registry.resolve("credit-risk@staging").version in (1, 2)
        reads += 1
    assert mover.returncode == 0, mover.stderr.read().decode() if mover.stderr else ""
    assert reads > 0 and verify(registry.engine).ok
