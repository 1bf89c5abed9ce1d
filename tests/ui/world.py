"""A registry as a validator or an auditor meets it: users in every role, a model with two
versions, recorded evidence, decisions, alias moves and real drift results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import joblib
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from scoregate.config import Settings
from scoregate.governance.service import Governance
from scoregate.registry import Registry
from tests.conftest import make_credit_data
from tests.governance.runs import loadtest_document, validation_document

USERS = [
    ("root2", "admin"),
    ("dave", "developer"),
    ("val", "validator"),
    ("vera", "validator"),
    ("dep", "deployer"),
    ("viewer", "viewer"),
]


@dataclass
class World:
    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def registry(self, user: str) -> Registry:
        return Registry(self.settings, token=self.tokens[user])

    def gov(self, user: str) -> Governance:
        return Governance(self.registry(user))


def write_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    frame = make_credit_data()
    features = frame.drop(columns="default")
    model = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["purpose"]), remainder=StandardScaler()),
        LogisticRegression(max_iter=500),
    ).fit(features, frame["default"])
    paths = {"model": folder / "model.joblib", "train": folder / "train.parquet"}
    joblib.dump(model, paths["model"])
    frame.to_parquet(paths["train"], index=False)
    same = make_credit_data(400, seed=5)
    shifted = make_credit_data(400, seed=6)
    shifted["debt_ratio"] = (shifted["debt_ratio"] * 0.3 + 0.7).clip(0, 1)
    shifted["income"] = shifted["income"] + 30_000
    paths["current_same"] = folder / "current_same.parquet"
    paths["current_shifted"] = folder / "current_shifted.parquet"
    same.to_parquet(paths["current_same"], index=False)
    shifted.to_parquet(paths["current_shifted"], index=False)
    return paths


def build_world(home: Path, *, monitoring: bool = True) -> World:
    """credit-risk v1 (dave) and v2 (val, parent v1): v2 validated on a recorded run by dave,
    staging moved v1 -> v2, a recorded load test of v2; with ``monitoring``, v2's reference
    profile and three drift results (one on data like the training data, two shifted: an
    alert fires)."""
    settings = Settings(home=home)
    world = World(settings, files=write_files(home.parent / "files"))
    world.tokens["admin"] = Governance(Registry(settings)).init("admin")
    admin = world.gov("admin")
    for name, role in USERS:
        world.tokens[name] = admin.add_user(name, [role])
    dave, val = world.registry("dave"), world.registry("val")
    v1 = dave.register(
        "credit-risk", world.files["model"], flavor="sklearn", train_data=world.files["train"], target="default",
        owner="alice", description="credit default risk of retail loans", metrics={"auc": 0.81},
    )  # fmt: skip
    v2 = val.register(
        "credit-risk", world.files["model"], flavor="sklearn", train_data=world.files["train"], target="default",
        owner="alice", description="credit default risk of retail loans", metrics={"auc": 0.84}, parent_version=1,
    )  # fmt: skip
    dave.set_alias("credit-risk", "staging", v1.version, reason="first candidate")
    dave.set_alias("credit-risk", "staging", v2.version, reason="retrained")
    Governance(dave).record_run(v2.ref, "validation", validation_document(dave, v2))
    Governance(dave).mark_validated(v2.ref, reason="validation run passed")
    Governance(dave).record_run(v2.ref, "loadtest", loadtest_document(v2))
    if monitoring:
        from scoregate.monitoring import service

        service.record_reference(dave, v2.ref, world.files["train"])
        from scoregate.monitoring.alerting import evaluate_version

        # as `scoregate monitor drift` does; the default policy fires on two drifted results in a row
        for current in ("current_same", "current_shifted", "current_shifted"):
            service.drift_file(dave, v2.ref, world.files[current])
            evaluate_version(dave, v2.ref)
    for registry in (dave, val, Registry(settings)):
        registry.close()
    return world
