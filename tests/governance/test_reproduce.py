"""Reproducing a served prediction: the real scoring server logs it, the registry re-scores it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from scoregate.config import Settings
from scoregate.errors import NotFoundError
from scoregate.governance.reproduce import package_differences, reproduce
from scoregate.registry import Registry
from scoregate.serving import read_predictions
from tests.governance.conftest import serve_requests

FEATURES = ["income", "age", "debt_ratio", "purpose"]


@pytest.fixture
def registry(sqlite_settings: Settings) -> Any:
    reg = Registry(sqlite_settings)
    yield reg
    reg.close()


@pytest.fixture
def credit(registry: Registry, credit_files: dict[str, Path]) -> Any:
    return registry.register(
        "credit-risk", credit_files["model"], flavor="sklearn", train_data=credit_files["train"], target="default"
    )


def rows(n: int = 3, seed: int = 11) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "income": round(float(rng.normal(50_000, 12_000)), 2),
            "age": int(rng.integers(18, 80)),
            "debt_ratio": float(rng.uniform(0, 1)),
            "purpose": str(rng.choice(["car", "home", "education"])),
        }
        for _ in range(n)
    ]


def test_a_served_prediction_reproduces(registry: Registry, credit: Any) -> None:
    answers = serve_requests(registry, "credit-risk@1", {"req-a": rows(3), "req-b": rows(1)})
    assert len(read_predictions(registry.settings)) == 4  # the log really holds the rows

    result = reproduce(registry, "req-a")
    assert result.matched, result.to_dict()
    [request] = result.requests
    assert (request.ref, request.rows, request.artifact_digest) == ("credit-risk@1", 3, credit.artifact_digest)
    assert set(request.max_difference) == set(answers["req-a"]["predictions"][0])
    assert result.max_difference <= 1e-9
    assert result.packages == []  # same process that registered it


def test_a_tampered_log_is_a_mismatch_with_its_size(registry: Registry, credit: Any) -> None:
    serve_requests(registry, "credit-risk@1", {"req-t": rows(2)})
    [segment] = registry.settings.predictions_dir.rglob("*.parquet")
    table = pq.read_table(segment).to_pandas()
    outputs = [json.loads(v) for v in table["outputs"]]
    probability = next(k for k in outputs[1] if k.startswith("proba_"))
    outputs[1][probability] += 1e-6  # one probability, one row, nudged
    outputs[0]["prediction"] = 1 - outputs[0]["prediction"]  # one label flipped
    table["outputs"] = [json.dumps(o) for o in outputs]
    table.to_parquet(segment, index=False)

    result = reproduce(registry, "req-t")
    assert not result.matched
    found = {(d.row, d.output): d for d in result.differences}
    assert set(found) == {(1, probability), (0, "prediction")}
    assert found[(1, probability)].size == pytest.approx(1e-6, rel=1e-6)
    assert found[(0, "prediction")].size == 1.0  # labels: exact, any difference counts
    # a looser tolerance accepts the probability, never the label
    loose = reproduce(registry, "req-t", tolerance=1e-5)
    assert [(d.row, d.output) for d in loose.differences] == [(0, "prediction")]


def test_a_model_served_that_was_not_the_registered_one_is_caught(
    registry: Registry, credit: Any, credit_files: dict[str, Path], tmp_path: Path
) -> None:
    """Serve version 1's id from a different artifact: the registry's own artifact does not reproduce it."""
    data = pd.read_parquet(credit_files["train"])
    other = make_pipeline(
        make_column_transformer((OneHotEncoder(), ["purpose"]), remainder="passthrough"),
        LogisticRegression(C=0.001, max_iter=500),
    ).fit(data[FEATURES], data["default"])
    path = tmp_path / "other.joblib"
    joblib.dump(other, path)
    registry.register("credit-risk", path, flavor="sklearn", train_data=credit_files["train"], target="default")
    serve_requests(registry, "credit-risk@2", {"req-o": rows(4)})
    # rewrite the partition so the log claims version 1 answered
    [segment] = registry.settings.predictions_dir.rglob("*.parquet")
    moved = Path(str(segment).replace("version=2", "version=1"))
    moved.parent.mkdir(parents=True)
    segment.rename(moved)

    result = reproduce(registry, "req-o")
    assert not result.matched and result.requests[0].ref == "credit-risk@1"
    assert result.max_difference > 1e-3


def test_an_unknown_request_id_is_not_found(registry: Registry, credit: Any) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        reproduce(registry, "nope")  # no log at all
    serve_requests(registry, "credit-risk@1", {"req-x": rows(1)})
    with pytest.raises(NotFoundError, match="req-y"):
        reproduce(registry, "req-y")


def test_package_differences_name_what_changed() -> None:
    from scoregate.governance.reproduce import current_lock

    lock = current_lock()
    name = next(iter(lock))
    recorded = {"python": "2.7.18", "lock": {**{k: v for k, v in lock.items() if k != name}, "made-up-pkg": "1.0"}}
    found = {p.name: (p.recorded, p.current) for p in package_differences([recorded])}
    assert found == {"python": ("2.7.18", found["python"][1]), name: (None, lock[name]), "made-up-pkg": ("1.0", None)}
