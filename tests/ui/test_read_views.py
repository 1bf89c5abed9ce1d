"""The read views over plain HTTP: what each page shows, its permalinks, exports and bad input."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

from tests.ui.conftest import Browserless


def test_pages_need_a_session_once_initialised(as_user) -> None:  # type: ignore[no-untyped-def]
    anonymous = as_user(None)
    for path in ("/ui/", "/ui/models/credit-risk", "/ui/models/credit-risk/2", "/ui/audit", "/ui/predictions"):
        answer = anonymous.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/ui/login?next=")


def test_a_bad_token_is_refused_next_to_the_field(as_user) -> None:  # type: ignore[no-untyped-def]
    client = as_user(None)
    page = client.get("/ui/login")
    from tests.ui.conftest import csrf_of

    answer = client.client.post("/ui/login", data={"token": "sg_nope", "csrf": csrf_of(page.text)})
    assert answer.status_code == 401
    assert 'id="token-error"' in answer.text and "the API token is not valid" in answer.text
    assert "set-cookie" not in answer.headers or "sg_session" not in answer.headers.get("set-cookie", "")


def test_login_without_csrf_is_refused(as_user, world) -> None:  # type: ignore[no-untyped-def]
    client = as_user(None)
    client.get("/ui/login")
    answer = client.client.post("/ui/login", data={"token": world.tokens["viewer"]})
    assert answer.status_code == 403 and "CSRF" in answer.text


def test_inventory_lists_the_model_with_its_governance_facts(as_user) -> None:  # type: ignore[no-untyped-def]
    page = as_user("viewer").get("/ui/")
    assert page.status_code == 200
    assert "credit-risk" in page.text and "alice" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "<script" not in page.text


def test_inventory_filters_and_search(as_user) -> None:  # type: ignore[no-untyped-def]
    client = as_user("viewer")
    assert "credit-risk" in client.get("/ui/?q=retail").text
    assert "No model matches" in client.get("/ui/?q=nothing-like-it").text
    assert "No model matches" in client.get("/ui/?status=retired").text
    assert "credit-risk" in client.get("/ui/?status=in+development").text


def test_inventory_exports(as_user) -> None:  # type: ignore[no-untyped-def]
    client = as_user("viewer")
    rows = json.loads(client.get("/ui/?format=json").content)
    assert [r["model"] for r in rows] == ["credit-risk"] and rows[0]["latest_version"] == 2
    assert rows[0]["open_alerts"] >= 1  # fired on the shifted drift result
    table = list(csv.DictReader(io.StringIO(client.get("/ui/?format=csv").text)))
    assert table[0]["model"] == "credit-risk" and table[0]["owner"] == "alice"


def test_inventory_as_it_was(as_user) -> None:  # type: ignore[no-untyped-def]
    client = as_user("viewer")
    assert "No model matches" in client.get("/ui/?at=2020-01-01").text
    assert "credit-risk" in client.get("/ui/?at=2999-01-01").text


def test_bad_inventory_input_is_shown_next_to_the_field(as_user) -> None:  # type: ignore[no-untyped-def]
    client = as_user("viewer")
    answer = client.get("/ui/?at=yesterday-ish")
    assert answer.status_code == 422 and 'id="at-error"' in answer.text and "invalid date" in answer.text
    assert client.get("/ui/?status=bogus").status_code == 422
    assert client.get("/ui/?format=xml").status_code == 422
    assert client.get("/ui/?q=" + "x" * 5000).status_code == 200  # cut to the bound, not a 500


def test_model_page_shows_versions_lineage_and_alias_timeline(as_user) -> None:  # type: ignore[no-untyped-def]
    page = as_user("viewer").get("/ui/models/credit-risk")
    assert page.status_code == 200
    assert 'class="chart timeline"' in page.text
    assert "first candidate" in page.text and "retrained" in page.text
    assert "v1 →" in page.text  # v2 names v1 as its parent


def test_alias_held_at_a_moment(as_user) -> None:  # type: ignore[no-untyped-def]
    client = as_user("viewer")
    assert "staging: no version" in client.get("/ui/models/credit-risk?at=2020-01-01").text
    assert "staging: v2" in client.get("/ui/models/credit-risk?at=2999-01-01").text
    assert client.get("/ui/models/credit-risk?at=soon").status_code == 422


def test_version_page_shows_schema_evidence_decisions_policy_and_drift(as_user) -> None:  # type: ignore[no-untyped-def]
    page = as_user("viewer").get("/ui/models/credit-risk/2")
    assert page.status_code == 200
    text = page.text
    for expected in (
        "debt_ratio",
        "purpose",
        "auc",
        "validation",
        "validate",
        "validation run passed",
        "Reference profile",
    ):
        assert expected in text, expected
    assert 'id="missing"' in text and "approval" in text  # the high tier still wants approvals
    assert text.count('<svg class="chart"') >= 4  # drift charts per column
    assert 'id="alerts"' in text and 'id="alert-history"' in text and '<strong class="bad">open</strong>' in text
    assert 'id="form-approve"' not in text  # a viewer is offered no action


def test_permalink_carries_the_artifact_digest(as_user) -> None:  # type: ignore[no-untyped-def]
    client = as_user("viewer")
    page = client.get("/ui/models/credit-risk/2").text
    link = page.split('id="permalink"')[0].rsplit('href="', 1)[1].split('"')[0]
    assert "artifact=" in link
    assert client.get(link).status_code == 200
    assert client.get("/ui/models/credit-risk/2?artifact=" + "0" * 64).status_code == 404


def test_evidence_report_is_viewable_in_the_page(as_user) -> None:  # type: ignore[no-untyped-def]
    client = as_user("viewer")
    page = client.get("/ui/models/credit-risk/2/evidence/1")
    assert page.status_code == 200
    assert 'id="case-counts"' in page.text and "output_contract" in page.text
    document = client.get("/ui/models/credit-risk/2/evidence/1/document")
    assert document.status_code == 200 and json.loads(document.content)["kind"] == "scoregate.validation"
    assert client.get("/ui/models/credit-risk/2/evidence/99").status_code == 404
    loadtest = client.get("/ui/models/credit-risk/2/evidence/2")
    assert loadtest.status_code == 200 and "overall.p99_ms" in loadtest.text and "correctness" in loadtest.text


def test_decision_permalink(as_user) -> None:  # type: ignore[no-untyped-def]
    client = as_user("viewer")
    page = client.get("/ui/models/credit-risk/2/decisions/1")
    assert page.status_code == 200 and "validation run passed" in page.text and "event" in page.text
    assert client.get("/ui/models/credit-risk/2/decisions/9").status_code == 404


def test_model_card_and_cyclonedx(as_user) -> None:  # type: ignore[no-untyped-def]
    client = as_user("viewer")
    assert "<iframe" in client.get("/ui/models/credit-risk/2/card").text
    card = client.get("/ui/models/credit-risk/2/card.html")
    assert "Model card: credit-risk@2" in card.text and "sandbox" in card.headers["content-security-policy"]
    bom = json.loads(client.get("/ui/models/credit-risk/2/cyclonedx.json").content)
    assert bom["bomFormat"] == "CycloneDX"


def test_unknown_things_are_404_pages_not_500(as_user) -> None:  # type: ignore[no-untyped-def]
    client = as_user("viewer")
    for path in ("/ui/models/nope", "/ui/models/credit-risk/7", "/ui/models/Bad%20Name/1", "/ui/audit/999999",
                 "/ui/nowhere", "/ui/models/credit-risk/99999999999999999999"):  # fmt: skip
        answer = client.get(path)
        assert answer.status_code in (400, 404, 422), (path, answer.status_code)
        assert "Traceback" not in answer.text


def test_audit_log_filters_and_pages(as_user) -> None:  # type: ignore[no-untyped-def]
    client = as_user("viewer")
    page = client.get("/ui/audit")
    assert page.status_code == 200 and "user.create" in page.text
    only = client.get("/ui/audit?action=alias.set").text
    assert "alias.set" in only and "user.create" not in only.split('id="audit-events"')[1]
    assert "No matching event" in client.get("/ui/audit?actor=nobody").text
    assert client.get("/ui/audit?since=notadate").status_code == 422
    assert client.get("/ui/audit?before=-3").status_code == 422
    first = client.get("/ui/audit/1")
    assert first.status_code == 200 and "user.create" in first.text


def test_audit_keyset_pages_cover_every_event_once(as_user, world) -> None:  # type: ignore[no-untyped-def]
    from scoregate.registry import Registry
    from scoregate.ui import queries

    registry = Registry(world.settings)
    with registry.reading() as session:
        seen, cursor = [], None
        while True:
            page = queries.audit_page(session, queries.AuditFilter(), before=cursor, size=3)
            seen += [e.seq for e in page.events]
            if page.older is None:
                break
            cursor = page.older
        back = queries.audit_page(session, queries.AuditFilter(), after=seen[5], size=3)
    registry.close()
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) and seen[-1] == 1
    assert [e.seq for e in back.events] == seen[2:5]


def test_audit_export_and_verify(as_user) -> None:  # type: ignore[no-untyped-def]
    from scoregate.governance.audit import verify_export

    client = as_user("viewer")
    lines = client.get("/ui/audit/export.jsonl").text.splitlines()
    assert json.loads(lines[0])["seq"] == 1
    verified = client.get("/ui/audit/verify")
    assert verified.status_code == 200 and "Chain intact" in verified.text
    assert "Chain intact" in client.get("/ui/audit").text
    subset = client.get("/ui/audit/export.jsonl?action=alias.set").text.splitlines()
    assert subset and all(json.loads(x)["action"] == "alias.set" for x in subset)
    del verify_export


def test_predictions_lookup_of_an_unknown_request(as_user) -> None:  # type: ignore[no-untyped-def]
    client: Browserless = as_user("viewer")
    assert client.get("/ui/predictions").status_code == 200
    answer = client.get("/ui/predictions?request_id=no-such-request")
    assert answer.status_code == 404 and "is not in the prediction log" in answer.text


def test_inventory_at_a_moment_between_two_versions(as_user, world) -> None:  # type: ignore[no-untyped-def]
    from scoregate.registry import Registry

    registry = Registry(world.settings)
    v1, v2 = registry.list_versions("credit-risk")
    registry.close()
    between = v1.created_at + (v2.created_at - v1.created_at) / 2
    in_paris = between.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    rows = json.loads(as_user("viewer").get("/ui/", params={"at": in_paris, "format": "json"}).content)
    assert rows[0]["latest_version"] == 1 and rows[0]["open_alerts"] is None


def test_the_ui_command_refuses_a_bad_port(run) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run("ui", "--port", "70000")
    assert code == 3 and "invalid --port 70000" in err


def test_a_broken_chain_shows_on_the_verification_page(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    from scoregate.config import Settings
    from scoregate.governance.service import Governance
    from scoregate.registry import Registry
    from tests.ui.conftest import Browserless, mounted

    settings = Settings(home=tmp_path / "home")
    registry = Registry(settings)
    token = Governance(registry).init("admin")
    Governance(Registry(settings, token=token)).add_user("viewer", ["viewer"])
    with registry.engine.begin() as connection:  # the database's owner drops the triggers and edits an event
        for name in connection.execute(text("SELECT name FROM sqlite_master WHERE type='trigger'")).scalars().all():
            connection.execute(text(f'DROP TRIGGER "{name}"'))
        connection.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2"))
    registry.close()
    client = Browserless(mounted(settings), token)
    answer = client.get("/ui/audit/verify")
    assert answer.status_code == 409 and "Chain broken" in answer.text
    assert "Chain broken" in client.get("/ui/audit").text


def test_every_read_view_is_plain_html_under_the_strict_policy(as_user) -> None:  # type: ignore[no-untyped-def]
    client = as_user("viewer")
    for path in ("/ui/", "/ui/models/credit-risk", "/ui/models/credit-risk/2", "/ui/models/credit-risk/2/evidence/1",
                 "/ui/models/credit-risk/2/decisions/1", "/ui/models/credit-risk/2/card", "/ui/audit",
                 "/ui/audit/1", "/ui/predictions", "/ui/login"):  # fmt: skip
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert "<script" not in answer.text and " style=" not in answer.text, path
        assert answer.headers["content-security-policy"].startswith("default-src 'self'"), path
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_the_model_page_lists_its_batch_jobs_as_recorded(  # type: ignore[no-untyped-def]
    as_user, world, tmp_path
) -> None:
    """Last in the module: it adds a job (and its audit events) to the module's registry."""
    from scoregate import Client
    from tests.conftest import make_credit_data

    assert "No batch job has run for this model." in as_user("viewer").get("/ui/models/credit-risk").text
    rows = make_credit_data(300, seed=9).drop(columns="default")
    rows.to_parquet(tmp_path / "in.parquet", index=False)
    dave = Client(settings=world.settings.model_copy(update={"token": world.tokens["dave"]}))
    try:
        result = dave.batch("credit-risk@2", tmp_path / "in.parquet", tmp_path / "out", workers=1)
    finally:
        dave.close()
    page = as_user("viewer").get("/ui/models/credit-risk").text
    assert result.job in page and "credit-risk@2" in page and ">300<" in page and ">dave<" in page
    assert (result.output_digest or "")[:12] in page
