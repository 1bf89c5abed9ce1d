"""The real thing: registry, `serving.run` with two worker processes, a Triton client,
an alias moved through the registry, SIGTERM, and the prediction log afterwards."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from scoregate.serving import read_predictions
from tests.serving.conftest import (
    free_port,
    register_credit,
    sample_rows,
    start_server,
    stop_server,
    triton_inputs,
    wait_for,
)


@pytest.mark.slow
def test_registry_two_workers_triton_client_swap_and_shutdown(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    registry = register_credit(tmp_path / "home", artifacts, versions=2)
    settings = registry.settings
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(settings.home, port, workers=2)
    try:
        wait_for(lambda: httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200, what="readiness")
        rows = sample_rows(3, seed=0)

        # an unchanged Triton HTTP client (binary tensors both ways by default)
        import tritonclient.http as triton

        client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")
        assert client.is_server_live() and client.is_model_ready("credit")
        result = client.infer("credit", triton_inputs(rows), request_id="triton-1")
        plain = httpx.post(f"{url}/models/credit@production/predict", json={"rows": rows}, timeout=10).json()
        assert result.get_response()["model_version"] == "1"
        assert result.as_numpy("proba_1").tolist() == pytest.approx([p["proba_1"] for p in plain["predictions"]])
        assert result.as_numpy("prediction").tolist() == [p["prediction"] for p in plain["predictions"]]
        client.close()

        # the alias moves in the registry; every worker swaps within a second or so
        registry.set_alias("credit", "production", 2)

        def all_on_two() -> bool:
            seen = {
                httpx.post(f"{url}/models/credit@production/predict", json={"rows": rows[:1]}).json()["version"]
                for _ in range(20)
            }
            return seen == {2}

        wait_for(all_on_two, timeout=30, what="the swap to version 2")

        metrics = httpx.get(f"{url}/metrics").text  # aggregated over both workers
        assert 'scoregate_requests_total{code="200",model="credit",protocol="json",version="2"}' in metrics
        assert "scoregate_request_latency_seconds_bucket" in metrics
    finally:
        assert stop_server(proc) == 0
    log = read_predictions(settings)
    assert {"triton-1"} <= set(log["client_request_id"])  # the V2 id is kept as the client's id
    assert set(log["version"]) == {1, 2}
    assert len(log) >= 3 + 3 + 20
