"""Traffic policies are set by a command, checked when written, audited, and gated like the
alias they split: a canary of ``production`` answers customers, so it needs what
production needs."""

from __future__ import annotations

import pytest

from scoregate.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PolicyViolationError,
)
from scoregate.governance.audit import iter_events
from scoregate.traffic import TrafficPolicy
from tests.governance.runs import loadtest_document, validation_document
from tests.governance.test_lifecycle import Team, register, state


@pytest.fixture
def team(sqlite_settings) -> Team:  # type: ignore[no-untyped-def]
    return Team(sqlite_settings)


def _promotable(team: Team, version) -> None:  # type: ignore[no-untyped-def]
    """Record the runs and decisions the high tier asks for, by the people it asks them of."""
    dave = team.gov("dave")
    dave.record_run(version.ref, "validation", validation_document(dave.registry, version))
    dave.record_run(version.ref, "loadtest", loadtest_document(version))
    dave.mark_validated(version.ref)
    team.gov("val").approve(version.ref, reason="reviewed")


def test_a_canary_of_production_needs_what_production_needs(team: Team, credit_files) -> None:
    dave = team.reg("dave")
    v1, v2, v3 = (register(dave, credit_files) for _ in range(3))
    _promotable(team, v1)
    dep = team.reg("dep")
    dep.set_alias("credit-risk", "production", 1)
    before = state(dep)
    with pytest.raises(PolicyViolationError, match="may not take a canary share of credit-risk@production") as refused:
        dep.set_traffic_policy("credit-risk", "production", {"canary": {"version": 2, "percent": 10}})
    assert {d["rule"] for d in refused.value.details} >= {"evidence:validation", "approvals"}
    with pytest.raises(ForbiddenError, match=r"may not split credit-risk@production's traffic.*deployer"):
        dave.set_traffic_policy("credit-risk", "production", {"shadow": {"version": 3}})
    assert state(dep) == before and dep.traffic_policies() == {}
    _promotable(team, v2)
    dep.set_traffic_policy(
        "credit-risk",
        "production",
        {"canary": {"version": 2, "percent": 10, "sticky_field": "purpose"}, "shadow": {"version": 3}},
        reason="try v2 on 10%",
    )
    assert dep.traffic_policies() == {
        ("credit-risk", "production"): {
            "canary": {"version": 2, "percent": 10.0, "sticky_field": "purpose"},
            "shadow": {"version": 3, "sample": 1.0},
        }
    }
    with dep.reading() as session:
        [event] = [e for e in iter_events(session, action="traffic_policy.set")]
    assert event.actor == "dep" and event.reason == "try v2 on 10%" and event.after["canary"]["version"] == 2
    assert v3.version == 3  # a shadow answers nobody: it needs no approval
    dep.set_traffic_policy("credit-risk", "production", None, reason="done")
    assert dep.traffic_policies() == {}
    with pytest.raises(NotFoundError, match="has no traffic policy"):
        dep.set_traffic_policy("credit-risk", "production", None)


@pytest.mark.parametrize(
    ("policy", "error", "message"),
    [
        ({"canary": {"version": 9, "percent": 10}}, NotFoundError, "credit-risk@9 not found"),
        ({"canary": {"version": 1, "percent": 10}}, InvalidInputError, "is the version credit-risk@staging already"),
        ({"canary": {"version": 2, "percent": 0}}, InvalidInputError, "canary.percent"),
        ({"canary": {"version": 2, "percent": 150}}, InvalidInputError, "canary.percent"),
        ({"canary": {"version": 2, "percent": float("nan")}}, InvalidInputError, "canary.percent"),
        ({"canary": {"version": 2, "percent": 5, "sticky_field": "ssn"}}, InvalidInputError, "'ssn' is not an input"),
        ({"shadow": {"version": 10**30}}, InvalidInputError, "shadow.version"),
        ({"shadow": {"version": 3, "sample": 2}}, InvalidInputError, "shadow.sample"),
        ({"mirror": {"version": 2}}, InvalidInputError, "mirror"),
        ({"shadow": {"version": 4}}, ConflictError, "credit-risk@4 is retired"),
    ],
)
def test_a_policy_is_checked_when_written(team: Team, credit_files, policy, error, message) -> None:
    dave = team.reg("dave")
    for _ in range(4):
        register(dave, credit_files)
    dave.retire("credit-risk@4", reason="withdrawn")
    dave.set_alias("credit-risk", "staging", 1)
    before = state(dave)
    with pytest.raises(error, match=message):
        dave.set_traffic_policy("credit-risk", "staging", policy)
    assert state(dave) == before and dave.traffic_policies() == {}


def test_a_policy_needs_its_alias_and_the_right_role(team: Team, credit_files) -> None:
    dave = team.reg("dave")
    register(dave, credit_files)
    register(dave, credit_files)
    with pytest.raises(NotFoundError, match="alias 'staging' of model 'credit-risk' not found"):
        dave.set_traffic_policy("credit-risk", "staging", {"shadow": {"version": 2}})
    dave.set_alias("credit-risk", "staging", 1)
    with pytest.raises(ForbiddenError, match="may not move alias"):
        team.reg("viewer").set_traffic_policy("credit-risk", "staging", {"shadow": {"version": 2}})
    assert dave.set_traffic_policy("credit-risk", "staging", {"shadow": {"version": 2}}) == TrafficPolicy.parse(
        {"shadow": {"version": 2}}
    )
    dave.delete_alias("credit-risk", "staging")  # a policy goes with its alias
    assert dave.traffic_policies() == {}


def test_traffic_commands(run, credit_files) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        code, _, err = run(
            "register", "credit-risk", credit_files["model"], "--flavor", "sklearn",
            "--train-data", credit_files["train"], "--target", "default", "--risk-tier", "low",
        )  # fmt: skip
        assert code == 0, err
    assert run("alias", "set", "credit-risk@1", "staging")[0] == 0
    code, out, err = run(
        "traffic", "set", "credit-risk@staging", "--canary", "credit-risk@2=25%", "--sticky-key", "purpose",
        "--shadow", "credit-risk@3", "--shadow-sample", "0.5", "--reason", "compare",
    )  # fmt: skip
    assert code == 0, err
    assert "canary version 2 takes 25%, sticky on purpose; shadow version 3 scores 50% of requests" in out
    code, out, _ = run("traffic", "show")
    assert "credit-risk@staging" in out and "canary version 2 takes 25%" in out
    for args, message in [
        (["--canary", "credit-risk@2"], "expected NAME@VERSION=PERCENT%"),
        (["--canary", "other@2=10%"], "names model 'other'"),
        (["--canary", "credit-risk@staging=10%"], "needs NAME@VERSION"),
        (["--canary", "credit-risk@2=0%"], "the percent must be in (0, 100]"),
        (["--shadow", "credit-risk@3", "--shadow-sample", "0"], "must be in (0, 1]"),
        (["--sticky-key", "purpose"], "give --canary, --shadow or both"),
        (["--shadow", "credit-risk@3", "--sticky-key", "purpose"], "applies to a canary"),
        (["--canary", "credit-risk@2=10%", "--sticky-key", ""], "sticky_field"),
    ]:
        code, out, err = run("traffic", "set", "credit-risk@staging", *args)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    code, _, err = run("traffic", "set", "credit-risk@2", "--shadow", "credit-risk@3")
    assert code != 0 and "belongs to NAME@ALIAS" in err
    code, out, err = run("traffic", "clear", "credit-risk@staging", "--reason", "done")
    assert code == 0 and "no traffic policy" in out
    code, out, _ = run("traffic", "show", "credit-risk@staging")
    assert "has no traffic policy" in out
