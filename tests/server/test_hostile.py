"""The registry service under bad input: every refusal one line with the right status, no
5xx, nothing staged or stored half-way."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from scoregate.config import Settings
from scoregate.errors import ConfigurationError
from scoregate.governance.service import Governance
from scoregate.registry import Registry
from scoregate.server import ServerSettings, create_server_app


@pytest.fixture
def api(sqlite_settings: Settings):  # type: ignore[no-untyped-def]
    token = Governance(Registry(sqlite_settings)).init("admin")
    app = create_server_app(sqlite_settings, ServerSettings(max_upload_bytes=1000, max_json_bytes=20_000, ui=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["authorization"] = f"Bearer {token}"
        yield client
    app.state.registry.close()


def staged(settings: Settings) -> list[str]:
    return sorted(p.name for p in (settings.home / "uploads").iterdir())


def test_uploads_are_kept_only_under_their_digest(api: TestClient, sqlite_settings: Settings) -> None:
    data = b"model bytes"
    digest = hashlib.sha256(data).hexdigest()
    wrong = api.put(f"/api/v1/uploads/{digest}", content=data[:-1])
    assert wrong.status_code == 422 and "upload digest mismatch" in wrong.json()["message"]
    assert staged(sqlite_settings) == []
    too_big = api.put(f"/api/v1/uploads/{'0' * 64}", content=b"x" * 1001)
    assert too_big.status_code == 413 and staged(sqlite_settings) == []
    assert api.put("/api/v1/uploads/not-a-digest", content=data).status_code == 422
    anonymous = api.put(f"/api/v1/uploads/{digest}", content=data, headers={"authorization": ""})
    assert anonymous.status_code == 401 and staged(sqlite_settings) == []
    assert api.put(f"/api/v1/uploads/{digest}", content=data).json() == {"digest": digest, "size": len(data)}
    assert staged(sqlite_settings) == [digest]


def test_bad_requests_get_one_line_and_no_5xx(api: TestClient) -> None:
    body = {"flavor": "sklearn", "artifact": {"digest": "a" * 64, "name": "model.joblib"}}
    missing = api.post("/api/v1/models/credit-risk/versions", json=body)
    assert missing.status_code == 404 and "PUT /api/v1/uploads/" in missing.json()["message"]
    dotted = {**body, "artifact": {**body["artifact"], "name": ".."}}
    dots = api.post("/api/v1/models/credit-risk/versions", json=dotted)
    assert dots.status_code == 422 and dots.json()["message"].startswith("invalid body.artifact.name")
    extra = api.post("/api/v1/models/credit-risk/versions", json={**body, "surprise": 1})
    assert extra.status_code == 422 and "surprise" in extra.json()["message"]
    huge = api.put("/api/v1/models/credit-risk/aliases/staging", content=b'{"version": 1, "reason": "' + b"x" * 30_000)
    assert huge.status_code == 413
    assert api.get("/api/v1/models", params={"limit": 0}).json()["message"].startswith("invalid query.limit")
    assert api.get("/api/v1/refs/credit-risk@1").status_code == 404
    assert api.get("/api/v1/refs/bad name").status_code == 400
    assert api.get("/api/v1/nowhere").json()["error"] == "not_found"
    bad_id = api.get("/api/v1/whoami", headers={"x-request-id": "x" * 200})
    assert bad_id.status_code == 422 and "x-request-id" in bad_id.json()["message"]
    answered = api.get("/api/v1/whoami", headers={"x-request-id": "ci-run-7"})
    assert answered.headers["x-request-id"] == "ci-run-7" and answered.json()["name"] == "admin"
    assert api.get("/api/v1/whoami", headers={"authorization": "Bearer sg_forged"}).status_code == 401


def test_a_tampered_blob_is_refused_by_the_service(api: TestClient, sqlite_settings: Settings, credit_files) -> None:  # type: ignore[no-untyped-def]
    registry = Registry(sqlite_settings, token=api.headers["authorization"].split()[1])
    model, train = credit_files["model"], credit_files["train"]
    version = registry.register("credit-risk", model, flavor="sklearn", train_data=train)
    stored = next(Path(registry.artifacts.root).rglob(version.artifact_digest))
    stored.write_bytes(stored.read_bytes() + b"!")
    answer = api.get(f"/api/v1/artifacts/{version.artifact_digest}")
    assert answer.status_code == 409 and "integrity check failed" in answer.json()["message"]


def test_the_service_refuses_to_start_open_to_anyone(sqlite_settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="run `scoregate init`"):
        create_server_app(sqlite_settings, ServerSettings(ui=False))
    with pytest.raises(ConfigurationError, match="unset SCOREGATE_URL"):
        create_server_app(Settings(home=tmp_path / "h", url="http://127.0.0.1:1"), ServerSettings(ui=False))
