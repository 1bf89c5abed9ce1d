"""MLflow's scoring protocol in front of scoregate: /invocations, /ping, /health, /version.

The models are saved by MLflow itself; the caller is MLflow's own scoring client
(``ScoringServerClient``, what ``mlflow models`` tooling uses); the expected answer is
``mlflow.pyfunc.load_model(path).predict`` on the same frame.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from scoregate.flavors import load_scorer
from scoregate.schema import infer_schema
from scoregate.serving import InMemorySource, create_app
from scoregate.serving.mlflow_protocol import parse_request, predictions
from tests.serving.conftest import ThreadedServer, serve

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("skops")

FEATURES = ["x1", "x2", "k"]
pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _mlflow_may_unpickle(monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    logging.getLogger("mlflow").setLevel(logging.ERROR)


def _training() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 300
    return pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.uniform(-2, 2, size=n), "k": rng.normal(size=n)})


def _frame(n: int = 60) -> pd.DataFrame:
    """Rows within the schema's ranges (it is inferred from the training data)."""
    return _training().sample(n, random_state=3).reset_index(drop=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A skops sklearn classifier and a LightGBM booster, saved by MLflow."""
    import lightgbm as lgb
    import mlflow.lightgbm
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("mlflow-served")
    frame = _training()
    label = (frame.x1 + frame.x2 > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.sklearn.save_model(
            LogisticRegression().fit(frame, label),
            root / "sk",
            signature=infer_signature(frame),
            pip_requirements=["scikit-learn"],
        )
        booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1}, lgb.Dataset(frame, label), 5)
        mlflow.lightgbm.save_model(booster, root / "lgb", signature=infer_signature(frame), pip_requirements=["x"])
    return {"sk": root / "sk", "lgb": root / "lgb"}


def _source(models: dict[str, Path], names=("sk", "lgb")) -> InMemorySource:
    schema = infer_schema(_training())
    source = InMemorySource()
    for name in names:
        source.add(name, 1, load_scorer("mlflow", models[name]), schema, flavor="mlflow")
        source.set_alias(name, "production", 1)
    return source


def _pyfunc(path: Path, frame: pd.DataFrame) -> list:
    import mlflow.pyfunc

    return np.asarray(mlflow.pyfunc.load_model(str(path)).predict(frame)).tolist()


@pytest.mark.parametrize("name", ["sk", "lgb"])
def test_mlflow_client_scores_unchanged(models, name):
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    frame = _frame()
    with ThreadedServer(create_app(_source(models, (name,)), poll_interval=0.05)) as server:
        client = ScoringServerClient("127.0.0.1", server.port)
        client.wait_server_ready(timeout=20)
        got = client.invoke(frame).get_predictions(predictions_format="ndarray")
        assert client.get_version()

    expected = _pyfunc(models[name], frame)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12)
    if name == "lgb":
        assert not np.isin(expected, [0, 1]).all()  # the booster's probability, as pyfunc returns


async def test_every_request_format_gives_the_same_answer(models):
    frame = _frame(5)
    records = frame.to_dict(orient="records")
    split = frame.to_dict(orient="split")
    bodies = [
        {"dataframe_split": split},
        {"dataframe_split": {"data": split["data"]}},  # no columns: the schema's order
        {"dataframe_records": records},
        {"instances": records},
        {"instances": frame.to_numpy().tolist()},
        {"inputs": {c: frame[c].tolist() for c in frame.columns}},
        {"inputs": records},
        {"inputs": records[0]},
    ]
    expected = _pyfunc(models["sk"], frame)
    async with serve(_source(models, ("sk",))) as served:
        for body in bodies:
            response = await served.client.post("/invocations", json=body)
            assert response.status_code == 200, (body, response.text)
            want = expected[:1] if body.get("inputs") is records[0] else expected
            assert response.json() == {"predictions": want}, body
        csv = frame.to_csv(index=False).encode()
        response = await served.client.post("/invocations", content=csv, headers={"content-type": "text/csv"})
        assert response.json() == {"predictions": expected}
        assert (await served.client.get("/ping")).status_code == 200
        assert (await served.client.get("/health")).status_code == 200


async def test_refusals_are_mlflow_shaped_and_validated(models):
    row = _frame(1).to_dict(orient="records")[0]
    async with serve(_source(models)) as served:
        post = served.client.post
        # two models served: the caller must say which
        response = await post("/invocations", json={"inputs": [row]})
        assert response.status_code == 400
        assert "X-Scoregate-Model" in response.json()["message"]
        header = {"x-scoregate-model": "lgb@production"}
        response = await post("/invocations", json={"inputs": [row]}, headers=header)
        assert response.status_code == 200
        assert response.headers["x-model-version"] == "lgb@1"

        # scoregate's validation stands behind the route
        response = await post("/invocations", json={"inputs": [{**row, "x1": "high"}]}, headers=header)
        body = response.json()
        assert response.status_code == 422
        assert body["error_code"] == "INVALID_PARAMETER_VALUE"
        assert body["details"][0]["field"] == "x1"

        response = await post("/invocations", json={"inputs": [row], "params": {"temperature": 1}}, headers=header)
        assert response.status_code == 422
        assert "params ('temperature') are not supported" in response.json()["message"]

        response = await post("/invocations", json={"rows": [row]}, headers=header)
        assert response.status_code == 422
        assert "dataframe_split" in response.json()["message"]

        response = await post("/invocations", json={"instances": [[1.0, 2.0]]}, headers=header)
        assert response.status_code == 422
        assert "has 2 values; the model takes 3 (x1, x2, k" in response.json()["message"]

        response = await post("/invocations", content=b"a", headers={**header, "content-type": "text/plain"})
        assert response.status_code == 415

        response = await post("/invocations", json={"inputs": [row]}, headers={"x-scoregate-model": "nope"})
        assert response.status_code == 404
        assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"

        assert (await served.client.get("/invocations")).status_code == 405


async def test_rows_past_the_limit_are_413_before_building_them(models):
    async with serve(_source(models, ("sk",)), max_request_rows=10) as served:
        split = {"columns": FEATURES, "data": [[0.0, 0.0, 0.0]] * 11}
        response = await served.client.post("/invocations", json={"dataframe_split": split})
        assert response.status_code == 413
        assert response.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"


def test_health_is_503_before_any_model():
    import asyncio

    async def check() -> int:
        async with serve(InMemorySource()) as served:
            return (await served.client.get("/ping")).status_code

    assert asyncio.run(check()) == 503


def test_prediction_shapes():
    assert predictions(["prediction"], [[1, 0]], None) == [1, 0]
    assert predictions(["prediction", "proba_0", "proba_1"], [[1, 0], [0.2, 0.7], [0.8, 0.3]], None) == [1, 0]
    assert predictions(["prediction", "proba_0", "proba_1"], [[1], [0.2], [0.8]], ("proba_1",)) == [0.8]
    assert predictions(["output_0", "output_1"], [[1, 2], [3, 4]], None) == [[1, 3], [2, 4]]
    assert predictions(["a", "b"], [[1, 2], [3, 4]], None) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]


def test_parse_rejects_two_formats():
    with pytest.raises(Exception, match="exactly one of"):
        parse_request(b'{"inputs": [], "instances": []}', b"application/json", FEATURES, 10)


def test_a_plain_http_caller_sees_httpx_works_too(models):
    frame = _frame(3)
    with ThreadedServer(create_app(_source(models, ("sk",)), poll_interval=0.05)) as server:
        response = httpx.post(f"{server.url}/invocations", json={"dataframe_records": frame.to_dict("records")})
    assert response.json()["predictions"] == _pyfunc(models["sk"], frame)
