"""A real MLflow tracking store and Model Registry (SQLite backend, made here by MLflow itself),
imported into scoregate twice, and models:/ and runs:/ references registered directly."""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import pandas as pd
import pytest

from scoregate import Client
from scoregate.errors import NotFoundError
from scoregate.registry.mlflow_import import PENDING_TAG, VERSION_TAG
from tests.conftest import invoke_cli

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("skops")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)


def _data(seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    return frame, (frame.a - frame.b > 0).astype(int)


def _log_version(name: str, c: float, *, metric: float) -> tuple[str, str]:
    """One run that logs a model and registers it as a new version of ``name``: (run id, version)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    frame, label = _data()
    with warnings.catch_warnings(), mlflow.start_run() as run:
        warnings.simplefilter("ignore")
        mlflow.log_params({"C": c, "solver": "lbfgs"})
        mlflow.log_metric("auc", metric)
        info = mlflow.sklearn.log_model(
            LogisticRegression(C=c).fit(frame, label),
            name="model",
            signature=infer_signature(frame, label),
            registered_model_name=name,
            pip_requirements=["scikit-learn"],
        )
    return run.info.run_id, str(info.registered_model_version)


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """An MLflow tracking store in SQLite with its artifacts in a folder, like a team's server."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("credit", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    client = mlflow.MlflowClient()
    runs = [_log_version("credit-risk", 1.0, metric=0.81), _log_version("credit-risk", 0.1, metric=0.84)]
    client.update_registered_model("credit-risk", description="PD model, retail")
    client.set_registered_model_tag("credit-risk", "team", "retail")
    client.set_model_version_tag("credit-risk", "2", "validated_by", "risk")
    client.update_model_version("credit-risk", "1", description="first fit")
    client.set_registered_model_alias("credit-risk", "champion", "2")
    client.set_registered_model_alias("credit-risk", "production", "1")
    return {"uri": uri, "runs": runs, "client": client, "experiment": experiment}


def test_import_twice_brings_only_what_is_new(tracking, sqlite_settings):
    uri = tracking["uri"]
    with Client(settings=sqlite_settings) as client:
        first = client.import_mlflow(uri)
        assert first.imported == ["credit-risk@1", "credit-risk@2"] and not first.failed, first
        versions = client.list_versions("credit-risk")
        one, two = versions
        run_one, _ = tracking["runs"][0]
        assert one.tags[VERSION_TAG] == "1" and one.tags["mlflow.run_id"] == run_one
        assert one.tags["mlflow.experiment_id"] == tracking["experiment"]
        assert one.tags["mlflow.model_tag.team"] == "retail"
        assert two.tags["validated_by"] == "risk"
        assert one.metrics == {"auc": 0.81} and one.params == {"C": "1.0", "solver": "lbfgs"}
        assert one.description == "first fit"
        assert one.flavor == "mlflow" and one.input_schema.feature_names == ["a", "b"]
        assert [m.description for m in client.search_models("credit-risk")] == ["PD model, retail"]

        # champion is not protected: it moves; production is, and the policy wants evidence first
        assert client.get("credit-risk@champion").version == 2
        assert [ref for ref, _ in first.pending] == ["credit-risk@production"]
        with pytest.raises(NotFoundError):
            client.get("credit-risk@production")
        assert client.get("credit-risk@1").tags[PENDING_TAG] == "production"

        frame, _ = _data()
        import mlflow.pyfunc

        expected = mlflow.pyfunc.load_model("models:/credit-risk/2").predict(frame.head(5))
        np.testing.assert_array_equal(client.predict("credit-risk@2", frame.head(5))["prediction"], expected)

        second = client.import_mlflow(uri)
        assert second.imported == [] and second.skipped == ["credit-risk@1", "credit-risk@2"]
        assert [ref for ref, _ in second.pending] == ["credit-risk@production"]  # still the policy's call
        assert len(client.list_versions("credit-risk")) == 2

        # a new MLflow version, and an alias moved there: the third import brings just that
        _log_version("credit-risk", 10.0, metric=0.86)
        tracking["client"].set_registered_model_alias("credit-risk", "champion", "3")
        third = client.import_mlflow(uri, model="credit-risk")
        assert third.imported == ["credit-risk@3"]
        assert client.get("credit-risk@champion").version == 3

        with pytest.raises(NotFoundError, match="no registered model 'nope'"):
            client.import_mlflow(uri, model="nope")


def test_a_pending_production_alias_moves_once_the_policy_allows(tracking, sqlite_settings):
    with Client(settings=sqlite_settings) as client:
        client.import_mlflow(tracking["uri"])
        assert PENDING_TAG in client.get("credit-risk@1").tags
        client.registry.set_risk_tier("credit-risk", "low", reason="pilot model")  # low: no evidence needed
        report = client.import_mlflow(tracking["uri"])
        assert report.pending == [] and "credit-risk@production -> 1" in report.aliases
        assert client.get("credit-risk@production").version == 1
        assert PENDING_TAG not in client.get("credit-risk@1").tags


def test_models_and_runs_uris_register_directly(tracking, sqlite_settings):
    run_id, _ = tracking["runs"][0]
    with Client(settings=sqlite_settings) as client:
        by_version = client.register("from-registry", "models:/credit-risk/1")
        by_alias = client.register("from-registry", "models:/credit-risk@champion")
        by_run = client.register("from-run", f"runs:/{run_id}/model")
        assert by_version.tags["mlflow.source"] == "models:/credit-risk/1"
        assert by_run.tags["mlflow.run_id"] == run_id
        assert by_alias.artifact_digest != by_version.artifact_digest  # version 2, another model
        frame, _ = _data()
        pd.testing.assert_frame_equal(
            client.predict(by_run.ref, frame.head(5)), client.predict(by_version.ref, frame.head(5))
        )
        with pytest.raises(NotFoundError, match="MLflow cannot fetch 'models:/credit-risk/9'"):
            client.register("x", "models:/credit-risk/9")


def test_cli_import_and_register_uri(tracking, sqlite_settings, monkeypatch, capsys):
    monkeypatch.setenv("SCOREGATE_HOME", str(sqlite_settings.home))
    monkeypatch.setenv("COLUMNS", "200")

    def cli(*args):
        code, out, err = invoke_cli(monkeypatch, capsys, args)
        return code, out + err

    code, out = cli("import", "mlflow", "--tracking-uri", tracking["uri"])
    assert code == 0, out
    assert "2 imported, 0 already there, 0 failed, 1 alias move(s) pending" in out
    code, out = cli("import", "mlflow", "--tracking-uri", tracking["uri"])
    assert code == 0 and "0 imported, 2 already there" in out, out
    code, out = cli("register", "via-uri", "models:/credit-risk@champion")
    assert code == 0 and "registered via-uri@1 (mlflow" in out, out
    assert os.environ["MLFLOW_TRACKING_URI"] == tracking["uri"]


def test_without_mlflow_the_message_names_the_extra(monkeypatch, sqlite_settings):
    import sys

    from scoregate.errors import ConfigurationError

    monkeypatch.setitem(sys.modules, "mlflow", None)
    with Client(settings=sqlite_settings) as client, pytest.raises(ConfigurationError, match=r"scoregate\[mlflow\]"):
        client.register("x", "models:/credit-risk/1")
