"""``--require-token``: scoring and metadata need a token with the scorer role; health stays
open, /metrics unless asked; the tokens are the registry's, and a revoked one stops working."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from scoregate.config import Settings
from scoregate.governance.service import Governance
from scoregate.registry import Registry
from scoregate.serving import InMemorySource, RegistrySource, create_app
from tests.serving.conftest import Served, sample_rows, serve

pytestmark = pytest.mark.anyio

GOOD = sample_rows(400, seed=0)[0]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_scoring_and_metadata_need_a_token_of_the_scorer_role(source: InMemorySource) -> None:
    source.add_token("sg_scorer", "svc", ["scorer"])
    source.add_token("sg_viewer", "bob", ["viewer"])
    source.add_token("sg_admin", "root", ["admin"])
    source.add_token("sg_expired", "old", ["scorer"], expires_at=time.time() - 1)
    body = {"rows": [GOOD]}
    async with serve(source, require_token=True) as s:
        post = s.client.post
        for headers, status in (
            ({}, 401),
            (bearer("sg_wrong"), 401),
            ({"authorization": "Basic c3ZjOnB3"}, 401),
            (bearer("sg_expired"), 401),
            (bearer("sg_viewer"), 403),
            (bearer("sg_scorer"), 200),
            (bearer("sg_admin"), 200),
        ):
            r = await post("/models/credit@1/predict", json=body, headers=headers)
            assert r.status_code == status, (headers, r.text)
            if status == 401:
                assert r.headers["www-authenticate"].startswith("Bearer")
        r = await post("/models/credit@1/predict", json=body, headers=bearer("sg_viewer"))
        assert "bob (roles: viewer) may not use this server: it requires the role scorer" in r.json()["message"]
        assert (await post("/v2/models/credit/infer", json={"inputs": []})).status_code == 401
        for path in ("/v2/models/credit", "/v2/models/credit/ready", "/models", "/openapi.json", "/v2"):
            assert (await s.client.get(path)).status_code == 401, path
            assert (await s.client.get(path, headers=bearer("sg_scorer"))).status_code == 200, path
        for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):  # probes and scrapers
            assert (await s.client.get(path)).status_code == 200, path
    async with serve(source, require_token=True, token_role="any", require_token_for_metrics=True) as s:
        r = await s.client.post("/models/credit@1/predict", json=body, headers=bearer("sg_viewer"))
        assert r.status_code == 200
        assert (await s.client.get("/metrics")).status_code == 401
        assert (await s.client.get("/metrics", headers=bearer("sg_viewer"))).status_code == 200
    async with serve(source) as s:  # without --require-token nothing changes
        assert (await s.client.post("/models/credit@1/predict", json=body)).status_code == 200


async def test_the_registrys_tokens_and_a_revocation(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    registry = Registry.open(Settings(home=tmp_path / "home"))
    registry.register(
        "credit", artifacts["v1"], flavor="sklearn", train_data=artifacts["train"], target="default", risk_tier="low"
    )
    registry.set_alias("credit", "production", 1)
    admin_token = Governance(registry).init("admin")
    admin = Registry(registry.settings, token=admin_token)
    scorer = Governance(admin).add_user("svc", ["scorer"])
    viewer = Governance(admin).add_user("bob", ["viewer"])
    try:
        app = create_app(RegistrySource(registry), require_token=True, poll_interval=0.05)
        async with Served(app) as s:

            async def status(token: str) -> int:
                r = await s.client.post("/models/credit/predict", json={"rows": [GOOD]}, headers=bearer(token))
                return r.status_code

            assert await status(scorer) == 200
            assert await status(viewer) == 403
            assert await status(admin_token) == 200
            await asyncio.to_thread(Governance(admin).revoke_token, scorer[:10])
            deadline = time.monotonic() + 30
            while await status(scorer) != 401:  # within a poll or two
                assert time.monotonic() < deadline, "the revoked token still works"
                await asyncio.sleep(0.05)
    finally:
        admin.close()
        registry.close()
