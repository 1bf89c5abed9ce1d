"""The registration hook: training data given -> the full data's profile is bound to the new version."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from scoregate.config import Settings
from scoregate.monitoring import store
from scoregate.monitoring.service import profile_at_registration
from scoregate.registry import Registry
from tests.conftest import make_credit_data


def files(tmp_path: Path, rows: int = 3_000) -> dict[str, Path]:
    frame = make_credit_data(rows, seed=0)
    features = frame.drop(columns="default")
    model = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["purpose"]), remainder=StandardScaler()),
        LogisticRegression(max_iter=500),
    ).fit(features, frame["default"])
    paths = {"model": tmp_path / "model.joblib", "train": tmp_path / "train.parquet", "json": tmp_path / "train.jsonl"}
    joblib.dump(model, paths["model"])
    frame.to_parquet(paths["train"], index=False)
    frame.to_json(paths["json"], orient="records", lines=True)
    return paths


def test_register_with_training_data_binds_the_full_profile(run, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths = files(tmp_path)
    code, out, err = run(
        "register",
        "credit",
        paths["model"],
        "--flavor",
        "sklearn",
        "--train-data",
        paths["train"],
        "--target",
        "default",
    )
    assert code == 0, err
    assert "reference profile sha256:" in out and "(3,000 rows)" in out  # every row, not the 1,000-row sample
    code, out, _ = run("monitor", "show", "credit@1", "--json")
    profile = json.loads(out)
    assert profile["source"]["rows"] == 3_000
    assert {c["role"] for c in profile["columns"]} == {"input", "output"}
    code, out, _ = run("audit", "log", "--subject", "credit@1")
    assert "register" in out and "monitor.reference" in out
    # the same data again is the same profile (content-addressed): `monitor reference` is a no-op
    code, out, _ = run("monitor", "reference", "credit@1", paths["train"])
    assert code == 0 and "already recorded (same profile)" in out


def test_register_without_data_has_none_until_monitor_reference(run, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths = files(tmp_path)
    schema = tmp_path / "schema.json"
    registry = Registry(Settings(home=home))
    try:
        registry.register("seed", paths["model"], flavor="sklearn", train_data=paths["train"], target="default")
        schema.write_text(registry.resolve("seed@1").input_schema.model_dump_json())
    finally:
        registry.close()
    code, out, err = run("register", "credit", paths["model"], "--flavor", "sklearn", "--schema", schema)
    assert code == 0, err
    assert "reference profile" not in out
    code, _, err = run("monitor", "show", "credit@1")
    assert code == 4 and "has no reference profile" in err
    code, out, err = run("monitor", "reference", "credit@1", paths["train"])
    assert code == 0, err
    assert run("monitor", "show", "credit@1")[0] == 0


def test_no_profile_flag_and_formats_it_cannot_stream(run, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths = files(tmp_path, rows=1_500)
    code, out, _ = run(
        "register",
        "credit",
        paths["model"],
        "--flavor",
        "sklearn",
        "--train-data",
        paths["train"],
        "--target",
        "default",
        "--no-profile",
    )
    assert code == 0 and "reference profile" not in out
    assert run("monitor", "show", "credit@1")[0] == 4
    code, out, err = run(
        "register",
        "credit",
        paths["model"],
        "--flavor",
        "sklearn",
        "--train-data",
        paths["json"],
        "--target",
        "default",
    )
    assert code == 0  # registered; the profile is what is missing, and the warning says how to add it
    assert "warning: no reference profile" in err and "Parquet or CSV" in err and "monitor reference credit@2" in err


def test_a_profile_past_its_time_bound_leaves_the_version_registered(home: Path, tmp_path: Path) -> None:
    paths = files(tmp_path, rows=1_500)
    registry = Registry(Settings(home=home))
    try:
        version = registry.register(
            "credit", paths["model"], flavor="sklearn", train_data=paths["train"], target="default"
        )
        done = profile_at_registration(registry, version, paths["train"], timeout=1e-9)
        assert done.digest is None and "longer than" in (done.note or "")
        assert not store.history(registry, version)
        with registry.reading() as session:
            assert not store._events(session, version.ref, store.REFERENCE_ACTION)
        assert profile_at_registration(registry, version, paths["train"]).digest is not None
    finally:
        registry.close()
