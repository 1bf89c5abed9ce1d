"""The HTTP surface: plain JSON, V2, metadata, and every class of bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from scoregate.flavors.sklearn import SklearnScorer
from scoregate.schema import infer_schema
from scoregate.serving import InMemorySource
from tests.serving.conftest import FEATURES, sample_rows, serve

pytestmark = pytest.mark.anyio


def expected(source: InMemorySource, version: int, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    _info, scorer = source.load("credit", version)
    frame = pd.DataFrame(rows)[FEATURES]
    return scorer.predict(frame).to_dict(orient="records")


def close(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], rel=1e-12, abs=1e-15)


async def test_plain_rows_columns_and_headers(source: InMemorySource) -> None:
    rows = sample_rows(3, seed=0)
    async with serve(source) as s:
        r = await s.client.post(
            "/models/credit@production/predict", json={"rows": rows}, headers={"x-request-id": "req-123"}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        # the server's id names the decision; the client's is kept beside it
        assert r.headers["x-request-id"] == body["request_id"] and len(body["request_id"]) == 32
        assert r.headers["x-client-request-id"] == "req-123" and body["client_request_id"] == "req-123"
        assert r.headers["x-model-version"] == "credit@1"
        assert (body["model"], body["version"], body["alias"]) == ("credit", 1, "production")
        close(body["predictions"], expected(source, 1, rows))

        columns = {f: [row[f] for row in rows] for f in FEATURES}
        r2 = await s.client.post("/models/credit@2/predict", json={"columns": columns})
        assert r2.status_code == 200 and r2.headers["x-model-version"] == "credit@2"
        assert len(r2.headers["x-request-id"]) == 32  # generated
        close(r2.json()["predictions"], expected(source, 2, rows))
        # bare name: the production alias
        r3 = await s.client.post("/models/credit/predict", json={"rows": rows})
        assert r3.json()["version"] == 1


async def test_v2_infer_per_feature_tensors(source: InMemorySource) -> None:
    rows = sample_rows(4, seed=0)
    request = {
        "id": "abc",
        "parameters": {"trace": "yes"},
        "inputs": [
            {"name": "income", "shape": [4], "datatype": "FP64", "data": [r["income"] for r in rows]},
            {"name": "debt", "shape": [4, 1], "datatype": "FP32", "data": [[r["debt"]] for r in rows]},
            {"name": "age", "shape": [4], "datatype": "INT64", "data": [r["age"] for r in rows]},
            {"name": "segment", "shape": [4], "datatype": "BYTES", "data": [r["segment"] for r in rows]},
        ],
    }
    async with serve(source) as s:
        r = await s.client.post("/v2/models/credit/infer", json=request)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == "abc" and body["parameters"] == {"trace": "yes"}
        assert body["model_name"] == "credit" and body["model_version"] == "1"
        outputs = {o["name"]: o for o in body["outputs"]}
        assert outputs["prediction"]["datatype"] == "INT64" and outputs["proba_1"]["datatype"] == "FP64"
        assert outputs["proba_1"]["shape"] == [4]
        want = expected(source, 1, rows)  # JSON numbers are taken as sent, whatever the datatype
        assert outputs["proba_1"]["data"] == pytest.approx([w["proba_1"] for w in want], rel=1e-12)
        assert outputs["prediction"]["data"] == [w["prediction"] for w in want]

        request["outputs"] = [{"name": "proba_0"}]
        r = await s.client.post("/v2/models/credit/versions/2/infer", json=request)
        assert r.status_code == 200 and r.headers["x-model-version"] == "credit@2"
        assert [o["name"] for o in r.json()["outputs"]] == ["proba_0"]

        meta = (await s.client.get("/v2/models/credit")).json()
        assert meta["name"] == "credit" and set(meta["versions"]) == {"1", "2"}
        assert [i["name"] for i in meta["inputs"]] == FEATURES
        assert {o["name"] for o in meta["outputs"]} == {"prediction", "proba_0", "proba_1"}
        assert (await s.client.get("/v2/models/credit/versions/1/ready")).status_code == 200
        assert (await s.client.get("/v2/models/credit/versions/9/ready")).status_code == 404
        assert (await s.client.get("/v2/health/live")).status_code == 200
        assert (await s.client.get("/v2/health/ready")).json() == {"ready": True}


async def test_v2_single_2d_tensor_and_binary(tmp_path: Any) -> None:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    y = (x["a"] + x["b"] > 0).astype(int)
    model = LogisticRegression().fit(x.to_numpy(), y)
    src = InMemorySource()
    src.add("num", 1, SklearnScorer(model), infer_schema(x))
    src.set_alias("num", "production", 1)
    data = x.to_numpy()[:5]
    async with serve(src) as s:
        request = {"inputs": [{"name": "input-0", "shape": [5, 3], "datatype": "FP64", "data": data.ravel().tolist()}]}
        r = await s.client.post("/v2/models/num/infer", json=request)
        assert r.status_code == 200, r.text
        out = {o["name"]: o["data"] for o in r.json()["outputs"]}
        assert out["proba_1"] == pytest.approx(model.predict_proba(data)[:, 1].tolist(), rel=1e-12)

        # binary tensor extension in and out
        head = orjson.dumps(
            {
                "inputs": [{"name": "x", "shape": [5, 3], "datatype": "FP32", "parameters": {"binary_data_size": 60}}],
                "outputs": [{"name": "proba_1", "parameters": {"binary_data": True}}],
            }
        )
        raw = data.astype(np.float32).tobytes()
        r = await s.client.post(
            "/v2/models/num/infer", content=head + raw, headers={"inference-header-content-length": str(len(head))}
        )
        assert r.status_code == 200, r.text
        size = int(r.headers["inference-header-content-length"])
        meta = orjson.loads(r.content[:size])
        assert meta["outputs"][0]["parameters"]["binary_data_size"] == 40
        values = np.frombuffer(r.content[size:], dtype=np.float64)
        want = model.predict_proba(data.astype(np.float32).astype(np.float64))[:, 1]
        assert values == pytest.approx(want, rel=1e-12)


async def test_bad_inputs_never_500(source: InMemorySource) -> None:
    good = sample_rows(1, seed=0)[0]
    async with serve(source, max_body_bytes=20_000) as s:
        post = s.client.post
        # 422 naming each field and rule
        bad = dict(good, income="lots", age=-5, segment="unknown")
        del bad["debt"]
        r = await post("/models/credit@production/predict", json={"rows": [good, bad]})
        assert r.status_code == 422
        details = {(d["field"], d["rule"], d.get("row")) for d in r.json()["details"]}
        assert details == {
            ("income", "type", 1),
            ("age", "minimum", 1),  # a count: minimum 0 is a validity rule (debt's training range is not)
            ("segment", "categories", 1),
            ("debt", "required", 1),
        }
        assert r.headers["x-request-id"]
        r = await post("/models/credit@1/predict", json={"rows": [dict(good, age=30.5)]})
        assert r.status_code == 422 and r.json()["details"][0]["rule"] == "type"
        r = await post("/models/credit@1/predict", json={"rows": [dict(good, income=None)]})
        assert r.status_code == 422 and r.json()["details"][0] == {
            "field": "income",
            "rule": "required",
            "message": "value is null but the feature is not nullable",
            "row": 0,
        }
        r = await post("/models/credit@1/predict", json={"rows": ["not an object"]})
        assert r.status_code == 422 and r.json()["details"][0]["rule"] == "type"
        r = await post("/models/credit@1/predict", json={"columns": {"income": [1.0, 2.0], "debt": [1.0]}})
        assert r.status_code == 422 and r.json()["details"][0]["rule"] == "length"
        for body in ({"rows": []}, {"rows": {"a": 1}}, {"nothing": 1}):
            assert (await post("/models/credit@1/predict", json=body)).status_code == 422
        # 413: declared and streamed
        big = {"rows": [good] * 400}
        r = await post("/models/credit@1/predict", json=big)
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

        async def stream() -> Any:
            for _ in range(30):
                yield b" " * 1000

        r = await post("/models/credit@1/predict", content=stream())
        assert r.status_code == 413
        # 404: model, version, alias, route
        for path in (
            "/models/nope@1/predict",
            "/models/credit@9/predict",
            "/models/credit@staging/predict",
            "/v2/models/nope/infer",
            "/v2/models/credit/versions/7/infer",
        ):
            r = await post(path, json={"rows": [good]})
            assert r.status_code == 404, path
        assert (await s.client.get("/nothing/here")).status_code == 404
        assert (await s.client.get("/v2/models/credit/versions/1/nothing")).status_code == 404
        # 405: a route that exists, with a method it does not take, says which it does
        for method, path, allow in (
            ("GET", "/models/credit@1/predict", "POST"),
            ("PUT", "/v2/models/credit/infer", "POST"),
            ("POST", "/v2/health/ready", "GET, HEAD"),
            ("DELETE", "/v2/models/credit", "GET, HEAD"),
        ):
            r = await s.client.request(method, path)
            assert (r.status_code, r.headers.get("allow")) == (405, allow), (method, path)
            body = r.json()  # V2 errors carry the message in "error" and the code in "code"
            assert body.get("code", body["error"]) == "method_not_allowed"
            assert allow in body.get("message", body["error"])
        # 400: a reference with nothing after the "@"
        r = await post("/models/credit@/predict", json={"rows": [good]})
        assert r.status_code == 400 and r.json()["error"] == "invalid_reference"
        # 400: malformed JSON
        r = await post("/models/credit@1/predict", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"] == "bad_request"
        assert (await post("/models/credit@1/predict", content=b"[1, 2]")).status_code == 400
        r = await post("/v2/models/credit/infer", content=b"{oops")
        assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
        # V2 structure problems are 422 naming the input and rule
        cases = [
            ({"inputs": []}, "inputs", "required"),
            ({"inputs": [{"name": "zzz", "shape": [1], "datatype": "FP64", "data": [1.0]}]}, "zzz", "unknown_input"),
            ({"inputs": [{"name": "income", "shape": [2], "datatype": "FP64", "data": [1.0]}]}, "income", "shape"),
            ({"inputs": [{"name": "income", "shape": [1], "datatype": "FP99", "data": [1.0]}]}, "income", "datatype"),
            (
                {
                    "inputs": [
                        {"name": "income", "shape": [1], "datatype": "FP64", "data": [50.0]},
                        {"name": "debt", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
                    ]
                },
                "debt",
                "shape",
            ),
        ]
        for request, field, rule in cases:
            r = await post("/v2/models/credit/infer", json=request)
            assert r.status_code == 422, (request, r.text)
            assert (r.json()["details"][0]["field"], r.json()["details"][0]["rule"]) == (field, rule)
        # a V2 request with a missing feature is a schema violation
        r = await post(
            "/v2/models/credit/infer",
            json={"inputs": [{"name": "income", "shape": [1], "datatype": "FP64", "data": [50.0]}]},
        )
        assert r.status_code == 422 and {d["field"] for d in r.json()["details"]} == {"debt", "age", "segment"}
        metrics = (await s.client.get("/metrics")).text
        assert 'code="500"' not in metrics
        assert 'scoregate_request_errors_total{error="schema_violation"' in metrics


async def test_openapi_and_listing(source: InMemorySource) -> None:
    async with serve(source) as s:
        doc = (await s.client.get("/openapi.json")).json()
        assert doc["openapi"].startswith("3.")
        assert {"/models/{ref}/predict", "/v2/models/{name}/infer", "/metrics"} <= set(doc["paths"])
        listing = (await s.client.get("/models")).json()
        assert listing["models"][0]["aliases"]["production"]["version"] == 1


# thread: lone requests take the direct path (on the loop), concurrent ones batch on the thread
MODES = {"thread": {}, "thread-only": {"direct_below": 0.0}, "inline": {"scoring": "inline"}}


@pytest.mark.parametrize("mode", MODES)
async def test_batching_gives_the_same_answers(source: InMemorySource, mode: str) -> None:
    rows = sample_rows(120, seed=0)
    async with serve(source, max_batch_rows=32, **MODES[mode]) as s:
        alone = []
        for row in rows[:40]:
            r = await s.client.post("/models/credit@1/predict", json={"rows": [row]})
            alone.append(r.json()["predictions"][0])
        before = _batches(await s.client.get("/metrics"))
        responses = await asyncio.gather(
            *[s.client.post("/models/credit@1/predict", json={"rows": [row]}) for row in rows[:40]],
            *[s.client.post("/models/credit@1/predict", json={"rows": rows[i : i + 5]}) for i in range(40, 120, 5)],
        )
        after = _batches(await s.client.get("/metrics"))
    assert all(r.status_code == 200 for r in responses)
    merged = [r.json()["predictions"][0] for r in responses[:40]]
    close(merged, alone)  # BLAS may differ in the last bit between batch sizes (LogisticRegression)
    multi = [p for r in responses[40:] for p in r.json()["predictions"]]
    close(multi, expected(source, 1, rows[40:120]))
    calls, total_rows = after[0] - before[0], after[1] - before[1]
    assert total_rows == 120
    assert calls < 56, "concurrent requests were not merged into batches"


def _batches(response: Any) -> tuple[float, float]:
    count = total = 0.0
    for line in response.text.splitlines():
        if line.startswith('scoregate_batch_size_rows_count{model="credit",version="1"}'):
            count = float(line.split()[-1])
        if line.startswith('scoregate_batch_size_rows_sum{model="credit",version="1"}'):
            total = float(line.split()[-1])
    return count, total


@pytest.mark.parametrize("mode", MODES)
async def test_batched_tree_model_is_bit_identical(mode: str) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(1)
    x = pd.DataFrame(rng.normal(size=(500, 5)), columns=[f"f{i}" for i in range(5)])
    y = (x["f0"] * x["f1"] > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x.to_numpy(), y)
    src = InMemorySource()
    src.add("tree", 1, SklearnScorer(model), infer_schema(x))
    src.set_alias("tree", "production", 1)
    rows = x.head(60).to_dict(orient="records")
    async with serve(src, **MODES[mode]) as s:
        alone = [
            (await s.client.post("/models/tree/predict", json={"rows": [r]})).json()["predictions"][0] for r in rows
        ]
        together = await asyncio.gather(*[s.client.post("/models/tree/predict", json={"rows": [r]}) for r in rows])
        metrics = (await s.client.get("/metrics")).text
    assert [r.json()["predictions"][0] for r in together] == alone
    direct = model.predict_proba(x.head(60).to_numpy())[:, 1].tolist()
    assert [a["proba_1"] for a in alone] == direct
    count = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('scoregate_batch_size_rows_count{model="tree"')
    )
    assert count < 60 + 30  # 60 calls for the lone requests; the 60 concurrent ones were merged
