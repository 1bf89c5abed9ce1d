"""A model that cannot be served does not take the others down: a missing one, a tampered
artifact. Each is reported in one line, health and metrics name it, the others are served."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from scoregate.errors import NotFoundError
from scoregate.registry import Registry
from scoregate.serving import RegistrySource, create_app
from tests.serving.conftest import Served, register_credit, sample_rows

GOOD = sample_rows(400, seed=0)[0]


def test_serving_only_missing_models_is_one_line_and_exit_4(run: Any) -> None:
    code, out, err = run("serve", "nope@1", "credit@production")
    assert code == 4, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "nothing to serve: nope@1" in lines[0], err
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_missing_model_is_reported_once_and_the_others_are_served(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    home = tmp_path / "home"
    register_credit(home, artifacts).close()
    env = {**os.environ, "SCOREGATE_HOME": str(home)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scoregate", "serve", "credit@1", "nope@1", "--port", "0", "--log-level", "info"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        port = None
        deadline = time.monotonic() + 120
        while port is None:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            line = proc.stderr.readline()  # type: ignore[union-attr]
            lines.append(line)
            found = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else None
        url = f"http://127.0.0.1:{port}"
        ready = httpx.get(f"{url}/v2/health/ready", timeout=10)
        assert ready.status_code == 200
        assert [(n["ref"], "not found" in n["reason"]) for n in ready.json()["not_loaded"]] == [("nope@1", True)]
        assert httpx.post(f"{url}/models/credit@1/predict", json={"rows": [GOOD]}).status_code == 200
        r = httpx.post(f"{url}/models/nope@1/predict", json={"rows": [GOOD]})
        assert r.status_code == 503 and r.json()["error"] == "not_loaded" and "nope@1" in r.json()["message"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1]
    log = "".join(lines) + rest
    assert [line for line in log.splitlines() if "nope" in line] == [
        line for line in log.splitlines() if "not serving nope@1" in line
    ]
    assert len([line for line in log.splitlines() if "nope" in line]) == 1, log
    assert "Traceback" not in log


def tamper(registry: Registry, version: int) -> None:
    record = registry.resolve(f"credit@{version}")
    digest = record.artifact_digest
    blob = registry.settings.home / "artifacts" / "sha256" / digest[:2] / digest
    blob.write_bytes(blob.read_bytes() + b"tampered")
    for cached in registry.settings.cache_dir.rglob(f"*{digest}*"):
        if cached.is_file():
            cached.unlink()


@pytest.mark.anyio
async def test_a_tampered_artifact_is_refused_and_the_others_are_served(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    registry = register_credit(tmp_path / "home", artifacts, versions=2)
    registry.set_alias("credit", "challenger", 2)
    tamper(registry, 2)
    try:
        async with Served(create_app(RegistrySource(registry))) as s:
            ready = (await s.client.get("/v2/health/ready")).json()
            assert ready["ready"] is True
            not_loaded = {n["ref"]: n["reason"] for n in ready["not_loaded"]}
            assert set(not_loaded) == {"credit@2", "credit@challenger"}
            assert "integrity check failed" in not_loaded["credit@2"]
            metrics = (await s.client.get("/metrics")).text
            assert 'scoregate_model_loaded{model="credit",version="2"} 0.0' in metrics
            assert 'scoregate_model_loaded{model="credit",version="1"} 1.0' in metrics
            for ref in ("credit@2", "credit@challenger"):
                r = await s.client.post(f"/models/{ref}/predict", json={"rows": [GOOD]})
                assert r.status_code == 503 and "integrity" in r.json()["message"], r.text
            assert (await s.client.post("/models/credit@production/predict", json={"rows": [GOOD]})).status_code == 200
    finally:
        registry.close()


@pytest.mark.anyio
async def test_nothing_to_serve_refuses_to_start_in_one_line(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    registry = register_credit(tmp_path / "home", artifacts)
    tamper(registry, 1)
    app = create_app(RegistrySource(registry))
    try:
        with pytest.raises(NotFoundError, match=r"nothing to serve: credit@1: artifact integrity check failed"):
            await app.startup()
    finally:
        await app.shutdown()
        registry.close()
