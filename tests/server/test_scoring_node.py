"""A scoring server that reads what to serve from the registry service with a scorer's token:
it serves and hot-swaps, and nothing it holds can change the registry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from scoregate.config import Settings
from scoregate.errors import ForbiddenError
from scoregate.governance.service import Governance
from scoregate.registry import Registry
from scoregate.remote import RemoteRegistry
from tests.server.conftest import SRC, Mode, free_port
from tests.serving.conftest import wait_for


@pytest.mark.parametrize("mode", ["remote"], indirect=True)
def test_scoring_server_runs_from_the_registry_service_with_no_write_credential(
    mode: Mode, credit_files, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    base = mode.service.settings
    admin = Registry(base, token=mode.tokens["admin"])
    for number in (1, 2):
        admin.register(
            "credit-risk", credit_files["model"], flavor="sklearn", train_data=credit_files["train"],
            target="default", risk_tier="low", tags={"n": str(number)},
        )  # fmt: skip
    admin.set_alias("credit-risk", "production", 1)
    node_token = Governance(admin).add_user("node", ["scorer"])
    node_home = tmp_path / "node-home"

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREGATE_")}
    env.update(
        PYTHONPATH=SRC,
        SCOREGATE_HOME=str(node_home),
        SCOREGATE_URL=mode.service.url,
        SCOREGATE_TOKEN=node_token,
    )
    command = [sys.executable, "-m", "scoregate", "serve", "--port", str(port), "credit-risk@production",
               "--require-token", "--poll-interval", "0.2"]  # fmt: skip
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    headers = {"authorization": f"Bearer {node_token}"}
    rows = json.loads(credit_files["rows"].read_text())
    try:
        wait_for(lambda: httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200, what="readiness")

        def served() -> int:
            answer = httpx.post(f"{url}/models/credit-risk@production/predict", json={"rows": rows}, headers=headers)
            assert answer.status_code == 200, answer.text
            return answer.json()["version"]

        assert served() == 1
        assert httpx.post(f"{url}/models/credit-risk@production/predict", json={"rows": rows}).status_code == 401
        admin.set_alias("credit-risk", "production", 2)  # the registry moves; the node follows
        wait_for(lambda: served() == 2, timeout=30, what="the swap to version 2")
    finally:
        proc.terminate()  # uvicorn drains, then re-raises the signal it caught
        assert proc.wait(60) in (0, -signal.SIGTERM)

    node = RemoteRegistry(Settings(home=node_home, url=mode.service.url, token=node_token))
    assert not (node_home / "registry.db").exists()  # no database, only a verified artifact cache
    with pytest.raises(ForbiddenError, match="node may not move credit-risk@production: policy rule"):
        node.set_alias("credit-risk", "production", 1)
    with pytest.raises(ForbiddenError):
        node.register("credit-risk", credit_files["model"], flavor="sklearn", train_data=credit_files["train"])
    assert admin.resolve("credit-risk@production").version == 2
