"""V2 with a stock Triton client: gzip- and deflate-compressed requests, and the
classification extension (``class_count``)."""

from __future__ import annotations

import gzip
import zlib

import httpx
import orjson
import pytest

from scoregate.serving import create_app
from scoregate.serving.compression import decode
from scoregate.serving.errors import HTTPError
from tests.serving.conftest import FEATURES, ThreadedServer, sample_rows, triton_inputs

triton = pytest.importorskip("tritonclient.http")


def test_triton_client_with_compression_and_class_count(source):
    rows = sample_rows(4, seed=0)
    with ThreadedServer(create_app(source, poll_interval=0.05)) as server:
        plain = httpx.post(f"{server.url}/models/credit@production/predict", json={"rows": rows}).json()
        client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
        try:
            for algorithm in ("gzip", "deflate"):
                result = client.infer("credit", triton_inputs(rows), request_compression_algorithm=algorithm)
                assert result.as_numpy("proba_1").tolist() == pytest.approx(
                    [p["proba_1"] for p in plain["predictions"]]
                )

            asked = [triton.InferRequestedOutput("prediction", class_count=2)]
            result = client.infer("credit", triton_inputs(rows), outputs=asked, request_compression_algorithm="gzip")
            top = result.as_numpy("prediction")
            assert top.shape == (4, 2)
            for row, expected in zip(top, plain["predictions"], strict=True):
                best = row[0].decode().split(":")
                second = row[1].decode().split(":")
                label = str(expected["prediction"])
                assert best[2] == label and float(best[0]) == pytest.approx(expected[f"proba_{label}"], rel=1e-5)
                assert float(best[0]) >= float(second[0])
                assert {best[1], second[1]} == {"0", "1"}
            assert "classification" in client.get_server_metadata()["extensions"]
        finally:
            client.close()


def test_compressed_bodies_are_bounded_and_checked(source):
    body = orjson.dumps({"inputs": [{"name": n, "shape": [1], "datatype": "BYTES", "data": ["x"]} for n in FEATURES]})
    assert decode(gzip.compress(body), b"gzip", 10_000) == body
    assert decode(zlib.compress(body), b"deflate", 10_000) == body
    assert decode(body, b"identity", 10_000) == body
    bomb = gzip.compress(b"\0" * 50_000_000)  # 50 MB of zeros in about 50 kB
    with pytest.raises(HTTPError, match="decompressed request body exceeds the limit") as caught:
        decode(bomb, b"gzip", 1_000_000)
    assert caught.value.status_code == 413
    with pytest.raises(HTTPError, match="cannot be decompressed"):
        decode(b"not gzip at all", b"gzip", 10_000)
    with pytest.raises(HTTPError, match="truncated"):
        decode(gzip.compress(body)[:-12], b"gzip", 10_000)
    with pytest.raises(HTTPError, match="'br' is not accepted") as caught:
        decode(body, b"br", 10_000)
    assert caught.value.status_code == 415

    with ThreadedServer(create_app(source, poll_interval=0.05, max_body_bytes=1_000_000)) as server:
        response = httpx.post(
            f"{server.url}/v2/models/credit/infer", content=bomb, headers={"content-encoding": "gzip"}
        )
        assert response.status_code == 413
        rows = sample_rows(2, seed=1)
        request = {"rows": rows}
        response = httpx.post(
            f"{server.url}/models/credit@production/predict",
            content=gzip.compress(orjson.dumps(request)),
            headers={"content-encoding": "gzip", "content-type": "application/json"},
        )
        assert response.status_code == 200 and len(response.json()["predictions"]) == 2
        v2 = {
            "inputs": [
                {"name": "income", "shape": [1], "datatype": "FP64", "data": [rows[0]["income"]]},
                {"name": "debt", "shape": [1], "datatype": "FP64", "data": [rows[0]["debt"]]},
                {"name": "age", "shape": [1], "datatype": "INT64", "data": [rows[0]["age"]]},
                {"name": "segment", "shape": [1], "datatype": "BYTES", "data": [rows[0]["segment"]]},
            ],
            "outputs": [{"name": "prediction", "parameters": {"classification": 0}}],
        }
        response = httpx.post(f"{server.url}/v2/models/credit/infer", json=v2)
        assert response.status_code == 422 and "positive integer" in response.json()["error"]
