"""Batch jobs as registry records: the CLI, the job record and audit events, the policy rule,
Client.batch, and the same output as the HTTP server for the same rows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from scoregate.client import Client
from scoregate.config import Settings
from scoregate.errors import PolicyViolationError

from .conftest import applicants, write_parquet


def test_cli_runs_records_shows_verifies_and_audits_a_job(run, home: Path, tmp_path: Path, float_model) -> None:  # type: ignore[no-untyped-def]
    frame = applicants(9_000, seed=11)
    frame.loc[100, "x3"] = np.inf
    write_parquet(frame, tmp_path / "in.parquet", 3_000)
    code, out, err = run(
        "batch",
        "credit-float@1",
        tmp_path / "in.parquet",
        tmp_path / "out",
        "--keep",
        "id",
        "--chunk-rows",
        "3000",
        "--workers",
        "2",
    )
    assert code == 0, out + err
    assert "done job" in out and "8999 rows scored, 1 rejected" in out
    code, out, _ = run("batch", "list")
    job = out.split("b2026")[1].split()[0] if "b2026" in out else None
    assert code == 0 and job
    job = "b2026" + job.strip("│ ")
    code, out, _ = run("batch", "show", job, "--json")
    record = json.loads(out)
    assert record["state"] == "done" and record["ref"] == "credit-float@1"
    assert record["artifact_digest"] == float_model.artifact_digest
    assert record["scored"] == 8_999 and record["rejected"] == 1 and record["engine"] == "local"
    assert record["input_files"][0]["sha256"] and record["output_digest"]
    assert record["progress"]["chunks_done"] == 3
    code, out, _ = run("audit", "log")
    assert "batch.start" in out and "batch.end" in out
    assert run("audit", "verify")[0] == 0
    assert run("batch", "verify", job)[0] == 0
    code, _, err = run("batch", "resume", job)
    assert code == 5 and "nothing to resume" in err
    # Tamper with one part: verify names it, exit 1.
    part = tmp_path / "out" / "part-000002.parquet"
    table = pq.read_table(part).to_pandas()
    table.loc[3, "proba_0"] = 0.25
    table.to_parquet(part, index=False)
    code, out, _ = run("batch", "verify", job)
    assert code == 1 and "MISMATCH" in out and "chunk 2" in out
    code, _, err = run("batch", "credit-float@1", tmp_path / "nothere.parquet", tmp_path / "o2")
    assert code == 3 and "no such file" in err
    code, _, err = run("batch", "credit-float@1", tmp_path / "in.parquet", tmp_path / "o3", "--chunk-rows", "0")
    assert code != 0 and "--chunk-rows" in err


POLICY = """
protected_aliases: [production]
default_tier: high
policy_changes: {approvals: 0}
tiers:
  high:
    batch_requires_protected_alias: true
"""


def test_policy_can_require_a_protected_alias_for_batch_jobs(tmp_path: Path, batch_home: Settings, float_model) -> None:
    from scoregate.governance.service import Governance

    client = Client(settings=batch_home)
    Governance(client.registry).set_policy(POLICY, reason="batch jobs score with production versions only")
    source = write_parquet(applicants(1_000, seed=12), tmp_path / "in.parquet", 1_000)
    with pytest.raises(PolicyViolationError, match="holds no protected alias"):
        client.batch("credit-float@1", source, tmp_path / "out", max_reject_rate=1.0)
    assert not (tmp_path / "out").exists()  # refused before anything is written
    client.set_alias("credit-float@1", "production")
    result = client.batch("credit-float@production", source, tmp_path / "out", max_reject_rate=1.0, workers=1)
    assert result.state.value == "done"
    client.close()


def test_a_row_scores_the_same_in_batch_and_over_http(
    tmp_path: Path, sqlite_settings: Settings, credit_files: dict[str, Path]
) -> None:
    """The mixed-type pipeline (category, int, floats: the frame path) over the app's HTTP interface."""
    import httpx

    from scoregate.serving import RegistrySource, create_app
    from tests.conftest import make_credit_data

    client = Client(settings=sqlite_settings)
    client.register(
        "credit-risk", credit_files["model"], flavor="sklearn", train_data=credit_files["train"], target="default"
    )
    rows = make_credit_data(600, seed=5).drop(columns="default")
    rows.insert(0, "id", range(len(rows)))
    rows.loc[7, "age"] = -5  # breaks the inferred count rule (minimum 0): rejected in both
    rows.loc[8, "purpose"] = "boat"  # unseen, taken by the encoder (handle_unknown="ignore"): scored in both
    rows.to_parquet(tmp_path / "in.parquet", index=False)
    result = client.batch(
        "credit-risk@1", tmp_path / "in.parquet", tmp_path / "out", keep=["id"], workers=1, chunk_rows=250
    )
    assert result.state.value == "done" and result.rejected >= 1
    batch = pq.read_table(tmp_path / "out").to_pandas().sort_values("_row").set_index("id")
    rejected = set(pq.read_table(tmp_path / "out" / "_rejects").to_pandas()["id"])
    assert 7 in rejected and 8 not in rejected and len(batch) + len(rejected) == len(rows)

    async def over_http() -> tuple[list[dict], list[int]]:
        app = create_app(RegistrySource(client.registry), models=["credit-risk@1"], predictions_dir=None)
        await app.startup()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
                good = rows[~rows["id"].isin(rejected)].drop(columns="id").to_dict("records")
                response = await http.post("/models/credit-risk@1/predict", json={"rows": good})
                assert response.status_code == 200, response.text
                codes = []
                for row in rows[rows["id"].isin(rejected)].drop(columns="id").to_dict("records"):
                    codes.append((await http.post("/models/credit-risk@1/predict", json={"rows": [row]})).status_code)
                return response.json()["predictions"], codes
        finally:
            await app.shutdown()

    served, refused = asyncio.run(over_http())
    assert refused == [422] * len(rejected)  # what batch rejects, the server refuses
    served_frame = pd.DataFrame(served, index=rows[~rows["id"].isin(rejected)]["id"])
    assert list(batch.index) == list(served_frame.index)
    for name in served_frame.columns:
        assert np.array_equal(batch[name].to_numpy(), served_frame[name].to_numpy()), name
    client.close()


def test_log_appends_the_scored_rows_to_the_prediction_log(tmp_path: Path, batch_home: Settings, float_model) -> None:
    from scoregate.registry.predictions import read_predictions

    frame = applicants(3_000, seed=13)
    frame.loc[10, "x1"] = np.inf
    source = write_parquet(frame, tmp_path / "in.parquet", 1_000)
    client = Client(settings=batch_home)
    result = client.batch("credit-float@1", source, tmp_path / "out", log=True, workers=1, chunk_rows=1_000)
    assert result.state.value == "done"
    logged = read_predictions(batch_home, "credit-float", 1)
    assert len(logged) == result.scored == 2_999
    assert set(logged["route"]) == {"batch"} and logged["request_id"].str.startswith(result.job).all()
    first = logged[logged["request_id"] == f"{result.job}/0"].sort_values("row").iloc[0]
    out = pq.read_table(tmp_path / "out" / "part-000000.parquet").to_pandas().iloc[0]
    assert first["outputs"]["proba_1"] == out["proba_1"]
    assert first["inputs"]["x0"] == frame.loc[0, "x0"]
    client.close()


def test_resume_refuses_an_edited_manifest_and_an_output_on_s3(tmp_path: Path, batch_home: Settings, crasher) -> None:
    from scoregate.batch.service import BatchService
    from scoregate.errors import IntegrityError, InvalidInputError

    frame = applicants(3_000, seed=14)
    frame.loc[2_500, "x0"] = 77.0  # kills its worker: chunk 2 stops the job, which stays resumable
    source = write_parquet(frame, tmp_path / "in.parquet", 1_000)
    client = Client(settings=batch_home)
    result = client.batch("credit-crash@1", source, tmp_path / "out", workers=1, chunk_rows=1_000)
    assert result.state.value == "stopped" and result.failed_chunk == 2
    assert BatchService(client.registry).get(result.job).state == "stopped"
    manifest = tmp_path / "out" / "_scoregate" / "manifest.json"
    plan = json.loads(manifest.read_text())
    plan["chunks"] = plan["chunks"][:2]  # "finish" the job by dropping the chunk that fails
    manifest.write_text(json.dumps(plan, indent=1, sort_keys=True))
    with pytest.raises(IntegrityError, match="edited or replaced"):
        client.batch_resume(result.job)
    with pytest.raises(InvalidInputError, match="give a local"):
        client.batch("credit-crash@1", source, "s3://bucket/out")
    client.close()
