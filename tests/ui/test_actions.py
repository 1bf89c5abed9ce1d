"""Sign-in, sessions, CSRF and the governance actions through the UI: each refused or allowed by
the same service as the CLI, with the service's message, whatever the page offered."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoregate.config import Settings
from scoregate.errors import ForbiddenError
from scoregate.governance.service import Governance
from scoregate.registry import Registry
from tests.ui.conftest import Browserless, csrf_of, mounted
from tests.ui.world import World, build_world

VERSION = "/ui/models/credit-risk/2"


@pytest.fixture
def fresh(tmp_path: Path) -> World:
    return build_world(tmp_path / "home", monitoring=False)


@pytest.fixture
def user(fresh: World):  # type: ignore[no-untyped-def]
    app = mounted(fresh)
    return lambda name: Browserless(app, fresh.tokens[name] if name else None)


def _decisions(world: World) -> list[dict]:
    registry = Registry(world.settings)
    try:
        return Governance(registry).decisions("credit-risk@2")
    finally:
        registry.close()


def test_four_eyes_one_refused_one_approving(user, fresh: World) -> None:  # type: ignore[no-untyped-def]
    registrant = user("val")
    assert 'id="form-approve"' in registrant.get(VERSION).text
    refused = registrant.post_form(VERSION, f"{VERSION}/actions/approve", {"reason": "looks good"})
    assert refused.status_code == 403
    assert "four-eyes rule, the approver may not be its registrant" in refused.text
    assert refused.text.rindex("four-eyes") > refused.text.index('id="form-approve"')  # next to the form too
    assert [d["action"] for d in _decisions(fresh)] == ["validate"]

    answer = user("vera").post_form(VERSION, f"{VERSION}/actions/approve", {"reason": "independent review done"})
    assert answer.status_code == 200 and "approved by vera" in answer.text
    decisions = _decisions(fresh)
    assert decisions[-1]["action"] == "approve" and decisions[-1]["actor"] == "vera"
    audit = user("viewer").get("/ui/audit?action=approve").text
    assert "independent review done" in audit and "ui-" in audit  # the UI request's id


def test_a_viewer_is_refused_on_the_server_even_posting_by_hand(user, fresh: World) -> None:  # type: ignore[no-untyped-def]
    viewer = user("viewer")
    page = viewer.get(VERSION).text
    assert 'id="form-approve"' not in page and 'id="form-alias"' not in page
    answer = viewer.client.post(f"{VERSION}/actions/approve", data={"reason": "sneaky", "csrf": csrf_of(page)})
    assert answer.status_code == 403
    with pytest.raises(ForbiddenError) as cli:
        fresh.gov("viewer").approve("credit-risk@2", reason="sneaky")
    assert cli.value.message in answer.text  # the same message as the CLI gets
    moved = viewer.client.post(f"{VERSION}/actions/alias", data={"alias": "staging", "csrf": csrf_of(page)})
    assert moved.status_code == 403 and "may not move alias" in moved.text
    assert [d["action"] for d in _decisions(fresh)] == ["validate"]


def test_a_form_without_its_csrf_token_changes_nothing(user, fresh: World) -> None:  # type: ignore[no-untyped-def]
    vera = user("vera")
    vera.get(VERSION)
    for data in ({"reason": "x"}, {"reason": "x", "csrf": "0" * 64}):
        answer = vera.client.post(f"{VERSION}/actions/approve", data=data)
        assert answer.status_code == 403 and "CSRF" in answer.text
    other = Browserless(mounted(fresh), fresh.tokens["viewer"])  # another session's token
    token = csrf_of(other.get(VERSION).text)
    assert vera.client.post(f"{VERSION}/actions/approve", data={"reason": "x", "csrf": token}).status_code == 403
    assert [d["action"] for d in _decisions(fresh)] == ["validate"]


def test_bad_input_is_shown_next_to_its_field(user) -> None:  # type: ignore[no-untyped-def]
    vera = user("vera")
    answer = vera.post_form(VERSION, f"{VERSION}/actions/approve", {"reason": "  "})
    assert answer.status_code == 422 and "an approval needs a reason" in answer.text
    dave = user("dave")
    bad = dave.post_form(VERSION, f"{VERSION}/actions/alias", {"alias": "not an alias!"})
    assert bad.status_code in (400, 422) and "alias" in bad.text and "Traceback" not in bad.text
    empty = dave.post_form(VERSION, f"{VERSION}/actions/alias", {"alias": ""})
    assert empty.status_code == 422 and "an alias is required" in empty.text
    assert dave.post_form(VERSION, f"{VERSION}/actions/bogus", {}).status_code == 422
    huge = dave.post_form(VERSION, f"{VERSION}/actions/approve", {"reason": "x" * 5000})
    assert huge.status_code == 422 and "longer than" in huge.text


def test_aliases_move_through_the_policy_gates(user, fresh: World) -> None:  # type: ignore[no-untyped-def]
    dave = user("dave")
    moved = dave.post_form(VERSION, "/ui/models/credit-risk/1/actions/alias", {"alias": "staging", "reason": "back"})
    assert moved.status_code == 200 and "credit-risk@staging now points at version 1" in moved.text
    refused = dave.post_form(VERSION, f"{VERSION}/actions/alias", {"alias": "production"})
    assert refused.status_code == 403  # a developer may not move a protected alias
    gated = user("dep").post_form(VERSION, f"{VERSION}/actions/alias", {"alias": "production"})
    assert gated.status_code == 409 and "approval" in gated.text  # the policy lists what is missing
    rolled = user("dep").post_form("/ui/models/credit-risk", "/ui/models/credit-risk/rollback", {"alias": "staging"})
    assert rolled.status_code == 303
    registry = Registry(fresh.settings)
    assert registry.alias_history("credit-risk", "staging")[-1]["version"] == 2
    registry.close()


def test_mark_validated_and_legal_hold(user) -> None:  # type: ignore[no-untyped-def]
    dave = user("dave")
    answer = dave.post_form(VERSION, f"{VERSION}/actions/validate", {"reason": "second look"})
    assert answer.status_code == 200 and "marked validated by dave" in answer.text
    refused = dave.post_form(VERSION, "/ui/models/credit-risk/1/actions/validate", {})
    assert refused.status_code == 409 and "cannot be marked validated" in refused.text
    assert dave.post_form(VERSION, f"{VERSION}/actions/hold", {"reason": "x"}).status_code == 403
    held = user("admin").post_form(VERSION, f"{VERSION}/actions/hold", {"reason": "litigation 42"})
    assert held.status_code == 200 and "legal hold placed" in held.text


def test_session_cookie_flags_and_logout(fresh: World) -> None:
    app = mounted(fresh)
    secure = Browserless(app, None)
    secure.client.base_url = "https://testserver"  # type: ignore[assignment]
    page = secure.get("/ui/login")
    answer = secure.client.post("/ui/login", data={"token": fresh.tokens["viewer"], "csrf": csrf_of(page.text)})
    cookie = answer.headers["set-cookie"]
    assert "sg_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie
    assert fresh.tokens["viewer"] not in cookie  # encrypted, not the token itself
    plain = Browserless(app, fresh.tokens["viewer"])
    assert plain.get("/ui/").status_code == 200
    out = plain.post_form("/ui/", "/ui/logout", {})
    assert out.status_code == 303 and plain.get("/ui/").status_code == 303


def test_a_revoked_token_ends_the_session(user, fresh: World) -> None:  # type: ignore[no-untyped-def]
    viewer = user("viewer")
    assert viewer.get("/ui/").status_code == 200
    fresh.gov("admin").revoke_token(fresh.tokens["viewer"][:10])
    assert viewer.get("/ui/").status_code == 303


def test_a_forged_session_cookie_is_no_session(fresh: World) -> None:
    client = Browserless(mounted(fresh), None)
    client.client.cookies.set("sg_session", "gAAAAAforged")
    assert client.get("/ui/").status_code == 303


def test_login_redirects_only_within_the_ui(fresh: World) -> None:
    client = Browserless(mounted(fresh), None)
    page = client.get("/ui/login?next=https://evil.example/")
    assert "evil.example" not in page.text
    answer = client.client.post(
        "/ui/login", data={"token": fresh.tokens["viewer"], "csrf": csrf_of(page.text), "next": "//evil.example/x"}
    )
    assert answer.headers["location"] == "/ui/"


def test_before_init_the_ui_needs_no_sign_in(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    from tests.ui.world import write_files

    files = write_files(tmp_path / "files")
    registry = Registry(settings)
    registry.register("solo", files["model"], flavor="sklearn", train_data=files["train"], target="default")
    registry.close()
    client = Browserless(mounted(settings), None)
    page = client.get("/ui/")
    assert page.status_code == 200 and "solo" in page.text and "not initialised" in page.text
    moved = client.post_form("/ui/models/solo/1", "/ui/models/solo/1/actions/alias", {"alias": "staging"})
    assert moved.status_code == 200 and "solo@staging now points at version 1" in moved.text


def test_attach_a_document_through_the_form(user, fresh: World) -> None:  # type: ignore[no-untyped-def]
    dave = user("dave")
    token = csrf_of(dave.get(VERSION).text)
    answer = dave.client.post(
        f"{VERSION}/actions/attach",
        data={"csrf": token, "kind": "external"},
        files={"document": ("review.txt", b"outside review: fine", "text/plain")},
    )
    assert answer.status_code == 200 and "attached review.txt as external evidence" in answer.text
    forged = dave.client.post(
        f"{VERSION}/actions/attach",
        data={"csrf": token, "kind": "validation"},
        files={"document": ("forged.json", b"{}", "application/json")},
    )
    assert forged.status_code == 422 and "evidence is recorded by scoregate" in forged.text
    none = dave.client.post(f"{VERSION}/actions/attach", data={"csrf": token, "kind": "external"},
                            files={"document": ("empty.txt", b"", "text/plain")})  # fmt: skip
    assert none.status_code == 422 and "choose a document" in none.text
    no_csrf = dave.client.post(f"{VERSION}/actions/attach", data={"kind": "external"},
                               files={"document": ("x.txt", b"x", "text/plain")})  # fmt: skip
    assert no_csrf.status_code == 403
    viewer = user("viewer")
    refused = viewer.client.post(
        f"{VERSION}/actions/attach",
        data={"csrf": csrf_of(viewer.get(VERSION).text), "kind": "external"},
        files={"document": ("x.txt", b"x", "text/plain")},
    )
    assert refused.status_code == 403 and "may not register" in refused.text
    kinds = [e["kind"] for e in Governance(Registry(fresh.settings)).evidence("credit-risk@2")]
    assert kinds == ["validation", "loadtest", "external"]


def test_a_served_decision_is_looked_up_and_reproduced(user, fresh: World) -> None:  # type: ignore[no-untyped-def]
    from tests.governance.conftest import serve_requests

    registry = Registry(fresh.settings)
    rows = [{"income": 52000.0, "age": 41, "debt_ratio": 0.3, "purpose": "car"}]
    serve_requests(registry, "credit-risk@2", {"ui-test-request-1": rows})
    registry.close()
    viewer = user("viewer")
    page = viewer.get("/ui/predictions?request_id=ui-test-request-1")
    assert page.status_code == 200 and 'id="logged"' in page.text and "credit-risk@2" in page.text
    again = viewer.get("/ui/predictions?request_id=ui-test-request-1&reproduce=1")
    assert again.status_code == 200 and "Reproduced: every output matches" in again.text


def test_the_team_server_serves_the_ui_under_ui(fresh: World) -> None:
    """`scoregate server` mounts the same app: sign in and approve there, as in embedded mode."""
    from scoregate.server.app import create_server_app

    client = Browserless(create_server_app(fresh.settings), fresh.tokens["vera"])
    assert client.get("/ui/").status_code == 200
    answer = client.post_form(VERSION, f"{VERSION}/actions/approve", {"reason": "reviewed on the team server"})
    assert answer.status_code == 200 and "approved by vera" in answer.text
    assert client.get("/ui/static/ui.css").status_code == 200
