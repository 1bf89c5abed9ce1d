"""The UI in a real browser: Debian's chromium driven by Playwright, headless.

Every test fails on any request to another host (route interception aborts and records
it), on any console error and on any Content-Security-Policy violation (chromium reports
those on the console). No browser is downloaded: Playwright drives /usr/bin/chromium.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.ui.world import World, build_world

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and os.environ.get("CI", "").lower() not in ("1", "true", "yes"),
    reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)",
)
VERSION = "/ui/models/credit-risk/2"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("browser") / "home")


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[str]:
    """The embedded site (``scoregate ui``) on a free loopback port, in a thread of this process."""
    import uvicorn

    from scoregate.ui.app import embedded_site

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    instance = uvicorn.Server(uvicorn.Config(embedded_site(world.settings), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert instance.started, "the UI server did not start"
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield launched
        launched.close()


class Watched:
    """A page whose every request, console message and page error is checked."""

    def __init__(self, browser, base: str) -> None:  # type: ignore[no-untyped-def]
        self.base = base
        self.host = urlsplit(base).netloc
        self.offhost: list[str] = []
        self.errors: list[str] = []
        #: Statuses the test expects a page to answer with (a refused form): chromium logs each
        #: as "Failed to load resource"; each expected one is taken off once, nothing else is.
        self.expected_statuses: list[int] = []
        self.context = browser.new_context(base_url=base)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on(
            "console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.set_default_timeout(15_000)

    def _route(self, route) -> None:  # type: ignore[no-untyped-def]
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme == "data" or parts.netloc == self.host:
            route.continue_()
        else:
            self.offhost.append(url)
            route.abort()

    def sign_in(self, token: str) -> None:
        page = self.page
        page.goto("/ui/")
        assert "/ui/login" in page.url
        page.fill("#token", token)
        page.click("form.card button[type=submit]")
        page.wait_for_url(re.compile(r"/ui/$"))

    def sign_out(self) -> None:
        self.page.click("header .who button")
        self.page.wait_for_url(re.compile(r"/ui/login"))

    def expect_refusal(self, status: int) -> None:
        self.expected_statuses.append(status)

    def check(self) -> None:
        errors = list(self.errors)
        for status in self.expected_statuses:
            line = f"console error: Failed to load resource: the server responded with a status of {status} "
            match = next((e for e in errors if e.startswith(line)), None)
            assert match is not None, f"expected a page answered with {status}"
            errors.remove(match)
        self.errors = errors
        assert not self.offhost, f"requests to other hosts: {self.offhost}"
        assert not self.errors, f"console errors or CSP violations: {self.errors}"


@pytest.fixture
def watched(browser, server: str) -> Iterator[Watched]:  # type: ignore[no-untyped-def]
    view = Watched(browser, server)
    yield view
    try:
        view.check()
    finally:
        view.context.close()


def test_sign_in_and_navigate_to_an_evidence_report(watched: Watched, world: World) -> None:
    watched.sign_in(world.tokens["viewer"])
    page = watched.page
    assert page.locator("#inventory").get_by_text("credit-risk").first.is_visible()
    page.locator("#inventory a", has_text="credit-risk").click()
    page.wait_for_url(re.compile(r"/ui/models/credit-risk$"))
    page.locator("#versions a", has_text="v2").click()
    page.wait_for_url(re.compile(r"/ui/models/credit-risk/2\?artifact="))
    assert page.locator("h1").inner_text().startswith("credit-risk@2")
    page.locator("#evidence-table a", has_text="report").first.click()
    page.wait_for_url(re.compile(r"/evidence/1"))
    assert "pass" in page.locator("#case-counts").inner_text()
    assert page.get_by_role("heading", name="Checks").is_visible()


def test_four_eyes_one_refused_one_approving(watched: Watched, world: World) -> None:
    page = watched.page
    watched.sign_in(world.tokens["val"])  # val registered v2
    page.goto(VERSION)
    page.fill("#form-approve input[name=reason]", "I built it, I approve it")
    watched.expect_refusal(403)
    page.click("#form-approve button")
    assert "four-eyes rule" in page.locator("#form-approve .field-error").inner_text()
    watched.sign_out()
    watched.sign_in(world.tokens["vera"])
    page.goto(VERSION)
    page.fill("#form-approve input[name=reason]", "independent review of the validation run")
    page.click("#form-approve button")
    assert "approved by vera" in page.locator(".done").inner_text()
    assert "independent review of the validation run" in page.locator("#decisions-table").inner_text()


def test_a_viewer_is_refused_on_the_server_when_posting_by_hand(watched: Watched, world: World) -> None:
    page = watched.page
    watched.sign_in(world.tokens["viewer"])
    page.goto(VERSION)
    assert page.locator("#form-approve").count() == 0 and page.locator("#form-alias").count() == 0
    csrf = page.locator("header .who input[name=csrf]").get_attribute("value")
    for action, form, message in (
        ("approve", {"reason": "by hand"}, "viewer (roles: viewer) may not approve"),
        ("alias", {"alias": "production"}, "viewer may not move credit-risk@production"),
        ("alias", {"alias": "staging"}, "viewer (roles: viewer) may not move alias"),
    ):
        answer = watched.context.request.post(f"{VERSION}/actions/{action}", form={**form, "csrf": csrf})
        assert answer.status == 403, action
        assert message in answer.text()


def test_the_alias_timeline(watched: Watched, world: World) -> None:
    page = watched.page
    watched.sign_in(world.tokens["viewer"])
    page.goto("/ui/models/credit-risk")
    bars = page.locator("svg.timeline rect.bar")
    assert bars.count() == 2  # staging: v1, then v2
    assert "staging" in page.locator("svg.timeline").text_content()
    history = page.locator("table.alias-history[data-alias=staging] tbody tr")
    assert history.count() == 2 and "retrained" in history.nth(1).inner_text()
    page.fill("input[name=at]", "2999-01-01")
    page.click("form.filters button")
    assert "staging: v2" in page.locator("#held-at").inner_text()


def test_an_audit_page(watched: Watched, world: World) -> None:
    page = watched.page
    watched.sign_in(world.tokens["viewer"])
    page.goto("/ui/audit")
    page.fill("input[name=action]", "alias.set")
    page.click("form.filters button")
    rows = page.locator("#audit-events tbody tr")
    assert rows.count() == 2 and all("alias.set" in t for t in rows.all_inner_texts())
    rows.first.locator("a").first.click()
    assert page.locator("h1").inner_text().startswith("Audit event")
    page.goto("/ui/audit")
    page.get_by_role("link", name="Verify now").click()
    assert "Chain intact" in page.locator("#verdict").inner_text()


def test_a_monitoring_chart_from_real_drift_results(watched: Watched, world: World) -> None:
    page = watched.page
    watched.sign_in(world.tokens["viewer"])
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(VERSION + "#monitoring")
    charts = page.locator("figure.drift svg.chart")
    assert charts.count() >= 4
    drifted = page.locator("figure.drift.drifted")
    assert drifted.count() >= 1
    line = drifted.first.locator("svg.chart").first.locator("polyline.series")
    assert line.is_visible() and len(line.get_attribute("points").split()) == 3  # three stored results
    assert drifted.first.locator("circle.flagged").count() >= 1
    assert page.locator("#alerts li").count() >= 1
    assert page.locator("#alert-history tr.open").count() >= 1
    shot = page.locator("figure.drift.drifted").first.screenshot()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    folder = os.environ.get("SCOREGATE_UI_SCREENSHOTS")  # docs/ when the README's screenshots are retaken
    if folder:
        page.goto(VERSION)
        top = page.locator("#monitoring").bounding_box()
        clip = {"x": 0, "y": top["y"] - 8, "width": 1400, "height": 1000}
        page.screenshot(path=str(Path(folder) / "ui-version.png"), full_page=True, clip=clip)
        page.goto("/ui/models/credit-risk")
        page.screenshot(path=str(Path(folder) / "ui-model.png"), full_page=False)


def test_the_watch_catches_csp_violations_and_requests_to_other_hosts(watched: Watched) -> None:
    """The checks every test ends with can fail: a page under the UI's policy that breaks it,
    and one that asks another host for an image, are both caught."""
    from scoregate.ui.security import CONTENT_SECURITY_POLICY

    def probe(body: str, policy: str | None):  # type: ignore[no-untyped-def]
        headers = {"content-type": "text/html"}
        if policy:
            headers["content-security-policy"] = policy
        return lambda route: route.fulfill(status=200, headers=headers, body=body)

    page = watched.page
    page.route("**/ui/probe-csp", probe("<p style='color:red'>x</p><script>document.title='ran'</script>",
                                         CONTENT_SECURITY_POLICY))  # fmt: skip
    page.goto("/ui/probe-csp")
    assert page.title() != "ran"
    assert any("Content Security Policy" in e for e in watched.errors), watched.errors
    page.route("**/ui/probe-host", probe("<img src='http://elsewhere.invalid/pixel.png'>", None))
    page.goto("/ui/probe-host")
    page.wait_for_load_state("load")
    assert watched.offhost == ["http://elsewhere.invalid/pixel.png"]
    watched.errors.clear()
    watched.offhost.clear()
