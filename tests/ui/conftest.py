"""Fixtures of the UI tests: a populated registry and HTTP clients signed in as its users."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from scoregate.ui import create_ui
from tests.ui.world import World, build_world


def mounted(world_or_settings) -> Starlette:  # type: ignore[no-untyped-def]
    settings = getattr(world_or_settings, "settings", world_or_settings)
    return Starlette(routes=[Mount("/ui", app=create_ui(settings))])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("ui") / "home")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


class Browserless:
    """A TestClient signed in as one user, the way a browser would: the login form, cookies, CSRF."""

    def __init__(self, app: Starlette, token: str | None) -> None:
        self.client = TestClient(app, base_url="http://testserver", follow_redirects=False)
        if token is not None:
            page = self.client.get("/ui/login")
            answer = self.client.post("/ui/login", data={"token": token, "csrf": csrf_of(page.text), "next": "/ui/"})
            assert answer.status_code == 303, answer.text

    def get(self, path: str, **kwargs):  # type: ignore[no-untyped-def]
        return self.client.get(path, **kwargs)

    def post_form(self, page: str, action: str, data: dict[str, str]):  # type: ignore[no-untyped-def]
        """Post ``data`` to ``action`` with the CSRF token of ``page`` (as its form would)."""
        token = csrf_of(self.client.get(page).text)
        return self.client.post(action, data={**data, "csrf": token})


@pytest.fixture(scope="module")
def app(world: World) -> Iterator[Starlette]:
    application = mounted(world)
    yield application


@pytest.fixture
def as_user(app: Starlette, world: World):  # type: ignore[no-untyped-def]
    def make(user: str | None) -> Browserless:
        return Browserless(app, None if user is None else world.tokens[user])

    return make
