"""/openapi.json carries each served version's contract, V2 metadata describes what infer
accepts, and schemathesis, fuzzing the server from that document, finds no 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from scoregate.flavors.base import Scorer
from scoregate.schema import Feature, FeatureType, ModelSchema
from scoregate.serving import InMemorySource, create_app
from scoregate.serving.state import warmup_record

KINDS = ModelSchema(
    features=[
        Feature(name="f", type=FeatureType.FLOAT, minimum=-5, maximum=5),
        Feature(name="g", type=FeatureType.FLOAT, nullable=True),
        Feature(name="i", type=FeatureType.INT),
        Feature(name="b", type=FeatureType.BOOL),
        Feature(name="c", type=FeatureType.CATEGORY, categories=["x", "y"], nullable=True),
        Feature(name="s", type=FeatureType.STRING),
        Feature(name="d", type=FeatureType.DATETIME),
    ]
)


class Kinds(Scorer):
    """A scorer over every feature type (the fuzzer's widest contract)."""

    flavor = "python"

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"score": np.arange(len(frame), dtype=float), "label": ["a"] * len(frame)})


@pytest.fixture
def fuzzed(source: InMemorySource, threaded: Any, tmp_path: Path) -> Any:
    source.add("kinds", 1, Kinds(), KINDS, flavor="python")
    source.set_alias("kinds", "production", 1)
    app = create_app(source, predictions_dir=tmp_path / "predictions", max_request_rows=50, poll_interval=0.05)
    return threaded(app)


def test_each_served_version_has_its_contract_in_openapi(fuzzed: Any) -> None:
    doc = httpx.get(f"{fuzzed.url}/openapi.json").json()
    assert {"/models/credit@1/predict", "/models/credit@production/predict", "/v2/models/kinds/infer"} <= set(
        doc["paths"]
    )
    body = doc["paths"]["/models/credit@1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["rows"]["maxItems"] == 50
    row = doc["components"]["schemas"]["credit.v1.Row"]
    assert row["additionalProperties"] is False and row["required"] == ["income", "debt", "age", "segment"]
    assert row["properties"]["segment"]["enum"] == ["corporate", "retail", "sme"]
    assert row["properties"]["age"]["type"] == "integer" and row["properties"]["income"]["type"] == "number"
    kinds = doc["components"]["schemas"]["kinds.v1.Row"]["properties"]
    assert kinds["g"]["type"] == ["number", "null"] and kinds["c"]["enum"] == ["x", "y", None]
    assert kinds["d"] == {"type": "string", "format": "date-time"}
    prediction = doc["components"]["schemas"]["credit.v1.Prediction"]
    assert set(prediction["properties"]) == {"prediction", "proba_0", "proba_1"}


def test_v2_metadata_describes_what_infer_accepts(fuzzed: Any) -> None:
    schemas = {"credit": None, "kinds": KINDS}
    with httpx.Client(base_url=fuzzed.url) as http:
        for name in schemas:
            meta = http.get(f"/v2/models/{name}").json()
            served = fuzzed.app.state.table.models[name].default.primary
            record = warmup_record(served.info.input_schema)
            inputs = []
            for tensor in meta["inputs"]:
                shape = [2 if d == -1 else d for d in tensor["shape"]]
                inputs.append({**tensor, "shape": shape, "data": [record[tensor["name"]]] * shape[0]})
            r = http.post(f"/v2/models/{name}/infer", json={"inputs": inputs})
            assert r.status_code == 200, (name, r.text)
            described = [(o["name"], o["datatype"]) for o in meta["outputs"]]
            assert [(o["name"], o["datatype"]) for o in r.json()["outputs"]] == described
            assert all(o["shape"] == [2] for o in r.json()["outputs"])


def schemathesis(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[checks.negative_data_rejection]\nexpected-statuses = [400, 401, 403, 404, 405, 413, 415, 422]\n"
    )
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        "15",
        "--seed",
        "7",
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--generation-database",
        "none",
        "--no-color",
        "--report-dir",
        str(tmp_path / "report"),
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_contract_mismatch(fuzzed: Any, tmp_path: Path) -> None:
    # The plain routes of each version: exact, so schema-valid bodies must be accepted and
    # schema-violating ones refused.
    exact = schemathesis(fuzzed.url, tmp_path, "--include-path-regex", "^/models/[^{]*/predict$")
    assert exact.returncode == 0, exact.stdout[-6000:]
    # Everything else: no 5xx, documented statuses, content types and bodies; schema-violating
    # requests refused. (A V2 request's tensors must share one row count, which JSON Schema
    # cannot say, so schema-valid V2 bodies may be refused and that check is left out.)
    rest = schemathesis(fuzzed.url, tmp_path, "--exclude-checks", "positive_data_acceptance")
    assert rest.returncode == 0, rest.stdout[-6000:]
