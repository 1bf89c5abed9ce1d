"""The service's OpenAPI document is valid OpenAPI, generated from the services' models, and
schemathesis, fuzzing the running service from it with a real token, finds no 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from tests.server.conftest import Mode


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
@pytest.mark.parametrize("mode", ["remote"], indirect=True)
def test_openapi_document_validates_and_uses_the_service_models(mode: Mode) -> None:
    document = httpx.get(f"{mode.service.url}/api/v1/openapi.json", timeout=30).json()
    validate(document)
    schemas = document["components"]["schemas"]
    assert {"ModelVersion", "ModelSummary", "AliasRecord", "ModelSchema", "RegisterRequest"} <= set(schemas)
    assert "/api/v1/models/{name}/aliases/{alias}" in document["paths"]


@pytest.mark.slow
@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
@pytest.mark.parametrize("mode", ["remote"], indirect=True)
def test_schemathesis_finds_no_server_error(mode: Mode, credit_files, tmp_path: Path) -> None:
    from scoregate.client import Client

    with Client(settings=mode.settings("dave")) as client:  # something to find, so paths resolve
        client.register("credit-risk", credit_files["model"], flavor="sklearn", train_data=credit_files["train"],
                        target="default")  # fmt: skip
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[checks.negative_data_rejection]\nexpected-statuses = [400, 401, 403, 404, 405, 409, 413, 415, 422]\n"
    )
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config), "run",
        f"{mode.service.url}/api/v1/openapi.json", "--url", mode.service.url,
        "--header", f"Authorization: Bearer {mode.tokens['admin']}",
        "--checks", "not_a_server_error", "--max-examples", "5", "--seed", "7", "--workers", "1",
        "--phases", "examples,coverage,fuzzing", "--generation-database", "none", "--no-color",
        "--report-dir", str(tmp_path / "report"),
        # uploads take raw bytes, not a JSON schema; the upload path is fuzzed by test_uploads
        "--exclude-path-regex", "uploads",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:]
    log = mode.service.log.read_text() if mode.service.log else ""
    assert "Traceback" not in log, log[-4000:]
