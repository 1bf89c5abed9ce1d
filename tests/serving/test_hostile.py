"""Requests a hostile client sends: every one the first release answered with 500, echoes of
huge values, the wrong Content-Type, undeclared fields, reused and malicious request ids,
and the metrics of failed requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scoregate.serving import InMemorySource, read_predictions
from tests.serving.conftest import sample_rows, serve

pytestmark = pytest.mark.anyio

GOOD = sample_rows(400, seed=0)[0]  # a training row: within every range of the schema


def v2(row: dict[str, Any], **extra: Any) -> dict[str, Any]:
    inputs = []
    for key, value in row.items():
        datatype = "BYTES" if isinstance(value, str) else ("INT64" if isinstance(value, int) else "FP64")
        inputs.append({"name": key, "shape": [1], "datatype": datatype, "data": [value]})
    return {"inputs": inputs, **extra}


class Raw(str):
    """A JSON body given as text (the stdlib encoder cannot nest 990 levels)."""


def nested_tensor(depth: int) -> Raw:
    data = "[" * depth + "1.0" + "]" * depth
    return Raw('{"inputs": [{"name": "income", "shape": [1], "datatype": "FP64", "data": ' + data + "}]}")


async def test_every_former_500_is_a_4xx_naming_what_is_wrong(source: InMemorySource) -> None:
    long_version = "9" * 5000
    tensor = {"name": "income", "shape": [1], "datatype": "FP64", "data": [50.0]}
    cases: list[tuple[str, str, Any, int, str]] = [
        # (method, path, body, status, what the error must name: a field, or words of the message)
        ("POST", "/v2/models/credit/infer", {"inputs": [{**tensor, "datatype": {}}]}, 422, "income"),
        ("POST", "/v2/models/credit/infer", nested_tensor(990), 422, "income"),
        (
            "POST",
            "/models/credit@1/predict",
            Raw('{"rows": [{"income": ' + "[" * 990 + "]" * 990 + "}]}"),
            422,
            "income",
        ),
        ("POST", "/v2/models/credit/infer", {"inputs": [{**tensor, "name": ["income"]}]}, 422, "inputs[0].name"),
        ("POST", "/v2/models/credit/infer", {"inputs": [{**tensor, "shape": [True]}]}, 422, "income"),
        ("POST", "/v2/models/credit/infer", {"inputs": [{**tensor, "shape": {"a": 1}}]}, 422, "income"),
        ("POST", "/models/credit@²/predict", {"rows": [GOOD]}, 400, "model reference"),
        ("POST", f"/models/credit@{long_version}/predict", {"rows": [GOOD]}, 400, "model reference"),
        ("POST", "/v2/models/credit/versions/²/infer", v2(GOOD), 400, "model reference"),
        ("POST", f"/v2/models/credit/versions/{long_version}/infer", v2(GOOD), 400, "model reference"),
        ("GET", "/v2/models/credit/versions/²", None, 400, "model reference"),
        ("GET", f"/v2/models/credit/versions/{long_version}", None, 400, "model reference"),
    ]
    async with serve(source) as s:
        for method, path, body, status, named in cases:
            if isinstance(body, Raw):
                r = await s.client.request(method, path, content=body.encode())
            else:
                r = await s.client.request(method, path, json=body)
            assert r.status_code == status, (path[:80], body if body is None else str(body)[:200], r.text[:300])
            payload = r.json()
            fields = {d.get("field") for d in payload.get("details", [])}
            words = payload.get("message", payload["error"])
            assert named in fields or named in words, (path[:80], payload)
            assert len(r.content) < 2000, "the error echoed the request back"
        metrics = (await s.client.get("/metrics")).text
    assert 'code="500"' not in metrics and "internal_error" not in metrics


async def test_a_huge_value_is_not_echoed_back(source: InMemorySource) -> None:
    huge = "x" * 1_000_000
    async with serve(source) as s:
        r = await s.client.post("/models/credit@1/predict", json={"rows": [{**GOOD, "segment": huge}]})
        assert r.status_code == 422 and r.json()["details"][0]["field"] == "segment"
        assert len(r.content) < 5000, len(r.content)
        r = await s.client.post("/models/credit@1/predict", json={"rows": [{**GOOD, huge: 1}]})
        assert r.status_code == 422 and len(r.content) < 5000, len(r.content)
        r = await s.client.post("/v2/models/credit/infer", json={"inputs": [{"name": huge, "shape": [1]}]})
        assert 400 <= r.status_code < 500 and len(r.content) < 5000, len(r.content)


async def test_content_type_must_be_json(source: InMemorySource) -> None:
    import orjson

    body = orjson.dumps({"rows": [GOOD]})
    async with serve(source) as s:
        for content_type, status in (
            ("text/plain", 415),
            ("application/x-www-form-urlencoded", 415),
            ("multipart/form-data; boundary=x", 415),
            ("application/json", 200),
            ("application/json; charset=utf-8", 200),
            ("Application/JSON", 200),
            (None, 200),  # Triton's client sends none
        ):
            headers = {"content-type": content_type} if content_type else {}
            r = await s.client.post("/models/credit@1/predict", content=body, headers=headers)
            assert r.status_code == status, (content_type, r.text)
            if status == 415:
                assert r.json()["error"] == "unsupported_media_type" and "application/json" in r.json()["message"]
        r = await s.client.post(
            "/v2/models/credit/infer", content=orjson.dumps(v2(GOOD)), headers={"content-type": "text/csv"}
        )
        assert r.status_code == 415


async def test_undeclared_fields_are_refused_on_every_route_and_never_logged(
    source: InMemorySource, tmp_path: Path
) -> None:
    secret = {**GOOD, "ssn": "123-45-6789"}
    columns = {k: [v] for k, v in secret.items()}
    async with serve(source, predictions_dir=tmp_path / "predictions") as s:
        r = await s.client.post("/models/credit@1/predict", json={"rows": [GOOD, secret]})
        assert r.status_code == 422
        assert {(d["field"], d["rule"], d["row"]) for d in r.json()["details"]} == {("ssn", "undeclared", 1)}
        r = await s.client.post("/models/credit@1/predict", json={"columns": columns})
        assert r.status_code == 422 and r.json()["details"][0]["field"] == "ssn"
        r = await s.client.post("/v2/models/credit/infer", json=v2(secret))
        assert r.status_code == 422 and r.json()["details"][0]["field"] == "ssn"
        ok = await s.client.post("/models/credit@1/predict", json={"rows": [GOOD]})
        assert ok.status_code == 200
    log = read_predictions(tmp_path)
    assert list(log["request_id"]) == [ok.json()["request_id"]]
    assert "ssn" not in log["inputs"][0] and "123-45-6789" not in str(log.to_dict())


async def test_a_version_can_drop_undeclared_fields_instead(
    source: InMemorySource, schema: Any, tmp_path: Path
) -> None:
    _info, scorer = source.load("credit", 1)
    source.add("lenient", 1, scorer, schema, extra_fields="drop")
    source.set_alias("lenient", "production", 1)
    secret = {**GOOD, "ssn": "123-45-6789"}
    async with serve(source, predictions_dir=tmp_path / "predictions") as s:
        plain = await s.client.post("/models/lenient/predict", json={"rows": [secret]})
        tensors = await s.client.post("/v2/models/lenient/infer", json=v2(secret))
        reference = await s.client.post("/models/credit@1/predict", json={"rows": [GOOD]})
    assert plain.status_code == 200 and tensors.status_code == 200, (plain.text, tensors.text)
    assert plain.json()["predictions"] == reference.json()["predictions"]
    log = read_predictions(tmp_path, model="lenient")
    assert len(log) == 2 and all(inputs == GOOD for inputs in log["inputs"])


async def test_request_ids_are_the_servers_and_the_clients_is_kept_beside(
    source: InMemorySource, tmp_path: Path
) -> None:
    async with serve(source, predictions_dir=tmp_path / "predictions") as s:
        post = s.client.post
        first = await post("/models/credit@1/predict", json={"rows": [GOOD]}, headers={"x-request-id": "dup"})
        second = await post("/models/credit@1/predict", json={"rows": [GOOD]}, headers={"x-request-id": "dup"})
        ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
        assert ids[0] != ids[1] and [r.json()["request_id"] for r in (first, second)] == ids
        assert all(r.headers["x-client-request-id"] == "dup" for r in (first, second))
        # the V2 body's id is the client's id; the response and the log agree on the server's
        both = await post("/v2/models/credit/infer", json=v2(GOOD, id="body-id"), headers={"x-request-id": "header-id"})
        assert both.status_code == 200
        assert both.json()["id"] == "body-id" and both.headers["x-client-request-id"] == "body-id"
        # hostile ids: refused with 400 naming the field, never stored
        for headers, body, field in (
            ({}, v2(GOOD, id="x" * 100_000), "id"),
            ({}, v2(GOOD, id="\x1b[2J\x1b]0;pwned\x07"), "id"),
            ({}, v2(GOOD, id=12), "id"),
            ({}, v2(GOOD, id=""), "id"),
            ({"x-request-id": "a" * 129}, v2(GOOD), "x-request-id"),
            ({"x-request-id": b"caf\xe9\x1b[2J"}, v2(GOOD), "x-request-id"),
        ):
            r = await post("/v2/models/credit/infer", json=body, headers=headers)
            assert r.status_code == 400, (field, r.text[:200])
            assert r.json()["details"][0]["field"] == field and len(r.content) < 1000
    log = read_predictions(tmp_path)
    assert len(log) == 3 and len(set(log["request_id"])) == 3
    assert list(log["client_request_id"]) == ["dup", "dup", "body-id"]
    assert log["request_id"].iloc[2] == both.headers["x-request-id"]
    assert len(read_predictions(tmp_path, request_id=ids[0])) == 1  # a server id names one decision
    assert len(read_predictions(tmp_path, request_id="dup")) == 2  # a client id all of its requests


async def test_failed_requests_are_counted_per_model_and_version(source: InMemorySource) -> None:
    async with serve(source) as s:
        assert (
            await s.client.post("/models/credit@1/predict", json={"rows": [{**GOOD, "age": "x"}]})
        ).status_code == 422
        assert (await s.client.post("/models/credit@9/predict", json={"rows": [GOOD]})).status_code == 404
        assert (await s.client.post("/models/nope@1/predict", json={"rows": [GOOD]})).status_code == 404
        metrics = (await s.client.get("/metrics")).text
    assert 'scoregate_request_errors_total{error="schema_violation",model="credit",version="1"} 1.0' in metrics
    assert 'scoregate_request_errors_total{error="not_found",model="credit",version=""} 1.0' in metrics
    assert 'scoregate_request_errors_total{error="not_found",model="",version=""} 1.0' in metrics
    assert 'scoregate_requests_total{code="422",model="credit",protocol="json",version="1"} 1.0' in metrics
    # failed requests are in the latency histogram too
    assert 'scoregate_request_latency_seconds_count{model="credit",version="1"} 1.0' in metrics
    assert 'scoregate_request_latency_seconds_count{model="",version=""} 1.0' in metrics
    for gauge in (
        "scoregate_requests_in_flight",
        'scoregate_queue_depth{model="credit",version="1"}',
        'scoregate_model_loaded{model="credit",version="1"} 1.0',
        "scoregate_process_resident_memory_bytes",
        "scoregate_process_open_fds",
    ):
        assert gauge in metrics, gauge


async def test_rows_per_request_are_bounded(source: InMemorySource) -> None:
    rows = [GOOD] * 51
    async with serve(source, max_request_rows=50) as s:
        r = await s.client.post("/models/credit@1/predict", json={"rows": rows})
        assert r.status_code == 413 and r.json()["error"] == "too_many_rows"
        assert "at most 50 (--max-request-rows)" in r.json()["message"]
        columns = {k: [v] * 51 for k, v in GOOD.items()}
        r = await s.client.post("/models/credit@1/predict", json={"columns": columns})
        assert r.status_code == 413 and r.json()["details"][0]["field"] == "columns"
        body = {
            "inputs": [
                {"name": k, "shape": [51], "datatype": t["datatype"], "data": [v] * 51}
                for (k, v), t in zip(GOOD.items(), v2(GOOD)["inputs"], strict=True)
            ]
        }
        r = await s.client.post("/v2/models/credit/infer", json=body)
        assert r.status_code == 413 and r.json()["code"] == "too_many_rows"
        assert (await s.client.post("/models/credit@1/predict", json={"rows": rows[:50]})).status_code == 200
