"""The registry against every store combination: SQLite or PostgreSQL, local folder or S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from scoregate.config import Settings
from scoregate.errors import (
    ConflictError,
    FlavorError,
    IntegrityError,
    InvalidInputError,
    InvalidReferenceError,
    NotFoundError,
    SchemaViolationError,
    StoreUnavailableError,
)
from scoregate.registry import Registry
from scoregate.registry.artifacts import sha256_file


def register(registry: Registry, files: dict[str, Path], **kwargs):  # type: ignore[no-untyped-def]
    # The low tier's policy lets production move without evidence; the gates are tested in tests/governance.
    kwargs.setdefault("risk_tier", "low")
    return registry.register(
        "credit-risk", files["model"], flavor="sklearn", train_data=files["train"], target="default", **kwargs
    )


def snapshot(registry: Registry) -> tuple:
    """Everything a failed operation must leave unchanged."""
    models = [m.model_dump() for m in registry.list_models()]
    versions = {m["name"]: [v.model_dump() for v in registry.list_versions(m["name"])] for m in models}
    return models, versions, registry.aliases(), registry.alias_revision()


def test_register_records_lineage_schema_and_environment(settings: Settings, credit_files) -> None:
    registry = Registry(settings)
    version = register(
        registry,
        credit_files,
        metrics={"auc": 0.91},
        owner="alice",
        risk_tier="high",
        description="credit default model",
        tags={"team": "risk"},
    )
    assert version.ref == "credit-risk@1"
    assert version.status == "registered"
    assert version.artifact_digest == sha256_file(credit_files["model"])
    assert version.training_data_digest == sha256_file(credit_files["train"])
    assert version.training_rows == 400
    assert version.metrics == {"auc": 0.91}
    assert version.tags == {"team": "risk"}
    assert version.environment["flavor_packages"]["scikit-learn"]
    assert version.environment["lock"]["pandas"] == pd.__version__
    schema = version.input_schema
    assert schema.feature_names == ["income", "age", "debt_ratio", "purpose"]
    assert schema.target == "default"
    purpose = schema.feature("purpose")
    assert purpose.type == "category" and purpose.categories == ["car", "education", "home"]
    assert purpose.unseen == "score"  # the pipeline's OneHotEncoder(handle_unknown="ignore") takes unknown levels
    assert schema.feature("income").unseen == "refuse"
    age = schema.feature("age")
    # the training range is the observed profile; the rule is only what inference is sure of (a count)
    assert age.type == "int" and (age.minimum, age.maximum) == (0, None)
    assert age.observed.minimum >= 18 and age.observed.maximum <= 79
    assert [o.name for o in version.output_schema] == ["prediction", "proba_0", "proba_1"]
    reference = registry.reference_data("credit-risk@1")
    assert len(reference) == 400 and "default" in reference.columns

    second = register(registry, credit_files, parent_version=1, risk_tier="high")
    assert second.version == 2 and second.parent_version == 1
    summary = registry.list_models()[0]
    assert (summary.name, summary.latest_version, summary.versions, summary.owner, summary.risk_tier) == (
        "credit-risk",
        2,
        2,
        "alice",
        "high",
    )
    assert [v.version for v in registry.list_versions("credit-risk")] == [1, 2]
    assert registry.resolve("credit-risk").version == 2  # bare name = latest


def test_load_scores_like_the_framework(settings: Settings, credit_files) -> None:
    registry = Registry(settings)
    register(registry, credit_files)
    loaded = registry.load("credit-risk@1")
    rows = json.loads(credit_files["rows"].read_text())
    predictions = loaded.predict(rows)
    model = joblib.load(credit_files["model"])
    expected = model.predict_proba(pd.DataFrame(rows))
    np.testing.assert_array_equal(predictions[["proba_0", "proba_1"]].to_numpy(), expected)


def test_aliases_move_resolve_and_delete(settings: Settings, credit_files) -> None:
    registry = Registry(settings)
    register(registry, credit_files)
    register(registry, credit_files)
    before = registry.alias_revision()
    registry.set_alias("credit-risk", "staging", 1)
    assert registry.resolve("credit-risk@staging").version == 1
    assert registry.alias_revision() != before
    registry.set_alias("credit-risk", "staging", 2)  # moving is also the rollback
    assert registry.resolve("credit-risk@staging").version == 2
    assert registry.resolve("credit-risk@2").aliases == ["staging"]
    with pytest.raises(ConflictError, match="already points at version 2"):
        registry.set_alias("credit-risk", "staging", 1, overwrite=False)
    registry.delete_alias("credit-risk", "staging")
    with pytest.raises(NotFoundError, match="alias 'staging' of model 'credit-risk' not found; it has no aliases"):
        registry.resolve("credit-risk@staging")
    with pytest.raises(NotFoundError):
        registry.delete_alias("credit-risk", "staging")


def test_retire(settings: Settings, credit_files) -> None:
    registry = Registry(settings)
    register(registry, credit_files)
    registry.set_alias("credit-risk", "production", 1)
    with pytest.raises(ConflictError, match="still holds alias"):
        registry.retire("credit-risk@1", reason="superseded")
    registry.delete_alias("credit-risk", "production")
    with pytest.raises(InvalidInputError, match="reason is required"):
        registry.retire("credit-risk@1", reason=" ")
    retired = registry.retire("credit-risk@1", reason="superseded")
    assert retired.status == "retired" and retired.retire_reason == "superseded" and retired.retired_at
    with pytest.raises(ConflictError, match="already retired"):
        registry.retire("credit-risk@1", reason="again")
    with pytest.raises(ConflictError, match="retired"):
        registry.set_alias("credit-risk", "production", 1)


def test_not_found_and_bad_references(settings: Settings, credit_files) -> None:
    registry = Registry(settings)
    with pytest.raises(NotFoundError, match="model 'credit-risk' not found"):
        registry.resolve("credit-risk@1")
    register(registry, credit_files)
    with pytest.raises(NotFoundError, match=r"credit-risk@7 not found: its versions are 1-1"):
        registry.resolve("credit-risk@7")
    for bad in ["", "credit risk", "credit-risk@", "credit-risk@0", "credit-risk@-1", "a@b@c", "@3"]:
        with pytest.raises(InvalidReferenceError, match="invalid model reference"):
            registry.resolve(bad)
    with pytest.raises(InvalidReferenceError, match="invalid alias"):
        registry.set_alias("credit-risk", "9lives", 1)


def test_failed_registrations_leave_the_registry_unchanged(settings: Settings, credit_files, tmp_path) -> None:
    registry = Registry(settings)
    register(registry, credit_files)
    registry.set_alias("credit-risk", "production", 1)
    before = snapshot(registry)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a model")
    broken_csv = tmp_path / "broken.parquet"
    broken_csv.write_bytes(b"PAR1 this is not parquet")
    attempts = [
        (FlavorError, dict(artifact=text_file)),  # a flavor that does not match the artifact
        (InvalidInputError, dict(train_data=tmp_path / "missing.csv")),
        (InvalidInputError, dict(train_data=broken_csv)),
        (SchemaViolationError, dict(target="no_such_column")),
        (InvalidInputError, dict(risk_tier="extreme")),
        (NotFoundError, dict(parent_version=9)),
        (InvalidReferenceError, dict(name="bad name!")),
    ]
    for error, overrides in attempts:
        kwargs = (
            dict(
                name="credit-risk",
                artifact=credit_files["model"],
                flavor="sklearn",
                train_data=credit_files["train"],
                target="default",
            )
            | overrides
        )
        name = kwargs.pop("name")
        artifact = kwargs.pop("artifact")
        with pytest.raises(error):
            registry.register(name, artifact, **kwargs)
        assert snapshot(registry) == before, f"{error.__name__} changed the registry"


def test_rows_that_break_the_schema_are_refused(sqlite_settings: Settings, credit_files) -> None:
    registry = Registry(sqlite_settings)
    register(registry, credit_files)
    loaded = registry.load("credit-risk@1")
    good = {"income": 50_000.0, "age": 40, "debt_ratio": 0.3, "purpose": "car"}
    with pytest.raises(SchemaViolationError) as caught:
        loaded.predict([good | {"income": "lots", "age": -1}, {k: v for k, v in good.items() if k != "age"}])
    details = {(d["row"], d["field"], d["rule"]) for d in caught.value.details}
    assert details == {(0, "income", "type"), (0, "age", "minimum"), (1, "age", "required")}
    with pytest.raises(SchemaViolationError, match="age"):
        loaded.predict(pd.DataFrame([good | {"age": -3}]))


def test_tampered_artifact_is_refused(settings: Settings, credit_files) -> None:
    registry = Registry(settings)
    version = register(registry, credit_files)
    key = registry.artifacts._key(version.artifact_digest)
    registry.artifacts.fs.pipe_file(key, b"tampered bytes")
    elsewhere = {
        "home": settings.home.with_name("other-home"),  # same stores, empty cache
        "database_url": settings.resolved_database_url,
        "artifacts_url": settings.resolved_artifacts_url,
    }
    fresh = Registry(settings.model_copy(update=elsewhere))
    with pytest.raises(IntegrityError, match="integrity check failed"):
        fresh.load("credit-risk@1")
    # a damaged local cache copy is dropped and fetched again, and then refused too
    cached = registry.artifacts.cache_dir / "blobs" / version.artifact_digest
    if cached.exists():
        cached.write_bytes(b"also tampered")
    with pytest.raises(IntegrityError):
        registry.load("credit-risk@1")


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url="postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(StoreUnavailableError, match="cannot reach the metadata database"):
        Registry(settings)


CONCURRENT_WORKER = textwrap.dedent(
    """
    import json, os, sys
    from scoregate.config import Settings
    from scoregate.registry import Registry
    settings = Settings.model_validate_json(os.environ["SG_SETTINGS"])
    registry = Registry(settings)
    versions = [
        registry.register("race", sys.argv[1], flavor="sklearn", train_data=sys.argv[2], target="default").version
        for _ in range(3)
    ]
    print(json.dumps(versions))
    """
)


def test_concurrent_registration_from_two_processes(settings: Settings, credit_files) -> None:
    env = dict(os.environ, SG_SETTINGS=settings.model_dump_json())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_WORKER, str(credit_files["model"]), str(credit_files["train"])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr
        results.extend(json.loads(stdout.strip().splitlines()[-1]))
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    registry = Registry(settings)
    assert [v.version for v in registry.list_versions("race")] == [1, 2, 3, 4, 5, 6]
    assert len(registry.list_models()) == 1


def test_traffic_policy_round_trip_bumps_revision(sqlite_settings: Settings, credit_files) -> None:
    registry = Registry(sqlite_settings)
    register(registry, credit_files)
    register(registry, credit_files)
    registry.set_alias("credit-risk", "production", 1)
    before = registry.alias_revision()
    registry.set_traffic_policy("credit-risk", "production", {"shadow": {"version": 2}})
    assert registry.traffic_policies() == {("credit-risk", "production"): {"shadow": {"version": 2, "sample": 1.0}}}
    assert registry.alias_revision() != before
    registry.delete_alias("credit-risk", "production")  # a policy goes with its alias
    assert registry.traffic_policies() == {}


def test_directory_artifact_round_trips_with_a_stable_digest(settings: Settings, credit_files, tmp_path) -> None:
    folder = tmp_path / "scorer"
    folder.mkdir()
    (folder / "scorer.py").write_text(
        "import numpy as np\n\n"
        "class Scorer:\n"
        "    def __init__(self, path):\n"
        "        self.weight = float((path / 'weight.txt').read_text())\n\n"
        "    def predict(self, frame):\n"
        "        return {'prediction': frame['debt_ratio'].to_numpy() * self.weight}\n"
    )
    (folder / "weight.txt").write_text("2.5")
    registry = Registry(settings)
    first = registry.register("rule", folder, flavor="python", train_data=credit_files["train"], target="default")
    (folder / "weight.txt").touch()  # a new mtime must not change the digest
    second = registry.register("rule", folder, flavor="python", train_data=credit_files["train"], target="default")
    assert first.artifact_kind == "dir" and first.artifact_digest == second.artifact_digest
    elsewhere = {
        "home": settings.home.with_name("cold-home"),
        "database_url": settings.resolved_database_url,
        "artifacts_url": settings.resolved_artifacts_url,
    }
    loaded = Registry(settings.model_copy(update=elsewhere)).load("rule@1")
    rows = [{"income": 50_000.0, "age": 30, "debt_ratio": 0.4, "purpose": "car"}]
    assert loaded.predict(rows)["prediction"].tolist() == [1.0]
