"""``labels ingest`` and ``monitor performance``: labels joined with the prediction log, late and out of order."""

from __future__ import annotations

import datetime as dt
import json
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from scoregate.config import Settings
from scoregate.governance.audit import iter_events
from scoregate.monitoring.labels import INGEST_ACTION, LABELS_DIR
from scoregate.monitoring.performance import PerformanceResult
from scoregate.registry import Registry
from scoregate.registry.predictions import PredictionLog
from scoregate.serving.batcher import Outputs
from tests.conftest import make_credit_data

DAY = 86_400
START = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)  # a Monday


def log_days(
    home: Path, monkeypatch: pytest.MonkeyPatch, frame: pd.DataFrame, days: int, *, client: bool = False
) -> pd.DataFrame:
    """Log ``frame``'s rows as single-row requests ``req-<i>``, spread evenly over ``days`` UTC days
    from START; returns the rows with their request id, time and the model's score."""
    registry = Registry(Settings(home=home))
    try:
        model = registry.load("credit-risk@1")
    finally:
        registry.close()
    log = PredictionLog(home / "predictions")
    features = frame.drop(columns="default")
    scored = model.scorer.predict(features)
    per_day = -(-len(frame) // days)
    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr("scoregate.registry.predictions.time", types.SimpleNamespace(time=lambda: clock.now))
    stamps = []
    for i, record in enumerate(features.to_dict(orient="records")):
        clock.now = START.timestamp() + (i // per_day) * DAY + (i % per_day)
        stamps.append(clock.now)
        row = scored.iloc[[i]]
        outputs = Outputs(list(row.columns), [row[c].dtype.str[1:] for c in row], [row[c].tolist() for c in row])
        log.append(
            "credit-risk", 1, f"req-{i}", [record], outputs, 1.0, client_request_id=f"app-{i}" if client else None
        )
    log.flush()
    monkeypatch.undo()
    out = frame.copy()
    out["request_id"] = [f"req-{i}" for i in range(len(frame))]
    out["client_id"] = [f"app-{i}" for i in range(len(frame))]
    out["time"] = pd.to_datetime(stamps, unit="s", utc=True)
    out["score"] = scored["proba_1"].to_numpy()
    out["predicted"] = scored["prediction"].to_numpy()
    return out


def label_file(path: Path, rows: pd.DataFrame, *, lag_days: float = 0.0, id_column: str = "request_id") -> Path:
    frame = pd.DataFrame(
        {
            "id": rows[id_column].to_numpy(),
            "outcome": rows["default"].to_numpy(),
            "observed": (rows["time"] + pd.Timedelta(days=lag_days)).dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        }
    )
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def ingest(run, ref: str, path: Path, *extra: object):  # type: ignore[no-untyped-def]
    return run("labels", "ingest", ref, path, "--id", "id", "--label", "outcome", "--at", "observed", *extra)


def measure(run, *extra: object) -> PerformanceResult:  # type: ignore[no-untyped-def]
    code, out, err = run("monitor", "performance", "credit-risk@1", "--json", *extra)
    assert code == 0, err
    return PerformanceResult.model_validate_json(out)


@pytest.fixture
def logged(credit, home: Path, monkeypatch: pytest.MonkeyPatch) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """600 predictions over 3 days (200 a day), logged and not yet labelled."""
    with monkeypatch.context() as patch:
        return log_days(home, patch, make_credit_data(600, seed=3), 3)


def test_realized_metrics_are_sklearns_per_day_of_prediction(run, logged: pd.DataFrame, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shuffled = logged.sample(frac=1.0, random_state=1)  # out of order
    code, out, err = ingest(run, "credit-risk", label_file(tmp_path / "labels.csv", shuffled, lag_days=95))
    assert code == 0, err
    assert "stored 600 of 600 labels for credit-risk" in out
    result = measure(run, "--by", "day")
    assert [p.start for p in result.periods] == [START.date() + dt.timedelta(days=d) for d in range(3)]
    for period, (_, day) in zip(result.periods, logged.groupby(logged["time"].dt.date), strict=True):
        y, score, predicted = day["default"].to_numpy(), day["score"].to_numpy(), day["predicted"].to_numpy()
        assert period.predictions == period.labelled == 200 and period.matched_share == 1.0
        r = period.realized
        assert r["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
        assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted), abs=1e-12)
        assert r["precision"] == pytest.approx(skm.precision_score(y, predicted, zero_division=np.nan), nan_ok=True)
        assert r["recall"] == pytest.approx(skm.recall_score(y, predicted), abs=1e-12)
        assert r["f1"] == pytest.approx(skm.f1_score(y, predicted), abs=1e-12)
        assert r["log_loss"] == pytest.approx(skm.log_loss(y, score, labels=[0, 1]), abs=1e-12)
        assert r["brier"] == pytest.approx(skm.brier_score_loss(y, score), abs=1e-12)
        assert 0 <= r["calibration_error"] < 0.2
        assert period.lag is not None and period.lag.median_days == pytest.approx(95, abs=1e-3)  # months late
        assert period.source.value == "realized" and period.figure == r["roc_auc"]
    weekly = measure(run, "--by", "week", "--no-record")
    assert len(weekly.periods) == 1 and weekly.periods[0].start == START.date()
    assert weekly.overall.realized["roc_auc"] == pytest.approx(
        skm.roc_auc_score(logged["default"], logged["score"]), abs=1e-12
    )
    code, out, _ = run("monitor", "performance", "credit-risk@1")
    assert code == 0 and "roc_auc" in out and "100.0% labelled" in out and "recorded" in out


def test_matched_rate_lag_and_labels_landing_in_batches(run, logged: pd.DataFrame, tmp_path: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    first, second = logged.iloc[::2], logged.iloc[1::2]
    assert ingest(run, "credit-risk", label_file(tmp_path / "a.parquet", second, lag_days=30))[0] == 0
    half = measure(run)
    assert half.overall.labelled == 300 and half.overall.matched_share == 0.5
    assert half.labels.matched == 300 and half.labels.stored == 300
    # the estimate (calibrated on the training sample) stands in while half the labels are missing
    assert all(p.source.value == "estimated" for p in half.periods)
    assert half.calibration is not None and half.calibration.rows == 1000
    stranger = pd.DataFrame({"request_id": ["nobody"], "default": [1], "time": [logged["time"].iloc[0]]})
    assert ingest(run, "credit-risk", label_file(tmp_path / "b.csv", pd.concat([first, stranger]), lag_days=60))[0] == 0
    full = measure(run)
    assert full.overall.labelled == 600 and full.labels.stored == 601 and full.labels.matched == 600
    assert all(p.source.value == "realized" for p in full.periods)
    assert full.overall.lag.median_days == pytest.approx(45, abs=1)  # type: ignore[union-attr]
    assert full.overall.lag.p90_days == pytest.approx(60, abs=1e-3)  # type: ignore[union-attr]
    code, out, _ = run("labels", "list", "credit-risk", "--json")
    assert code == 0 and [b["labels"] for b in json.loads(out)] == [300, 301]
    code, out, _ = run("monitor", "history", "credit-risk@1")
    assert code == 0


def test_a_second_label_is_a_conflict_unless_replace_which_is_audited(
    run, logged: pd.DataFrame, tmp_path: Path, home: Path
) -> None:  # type: ignore[no-untyped-def]
    path = label_file(tmp_path / "labels.csv", logged.iloc[:100])
    assert ingest(run, "credit-risk", path)[0] == 0
    code, out, _ = ingest(run, "credit-risk", path)
    assert code == 0 and "all 100 labels were already stored" in out
    flipped = logged.iloc[:100].copy()
    flipped.loc[flipped.index[:3], "default"] = 1 - flipped["default"].iloc[:3]
    changed = label_file(tmp_path / "changed.csv", flipped)
    code, _, err = ingest(run, "credit-risk", changed)
    assert code == 5 and "3 label(s) in" in err and "req-0" in err and "--replace" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = ingest(run, "credit-risk", changed, "--replace")
    assert code == 0, err
    assert "stored 3 of 100 labels" in out and "3 replaced" in out and "97 already stored" in out
    registry = Registry(Settings(home=home))
    try:
        with registry.reading() as session:
            events = list(iter_events(session, subject="credit-risk", action=INGEST_ACTION))
    finally:
        registry.close()
    assert [e.after["stored"] for e in events] == [100, 3]
    assert events[1].after["replaced"] == 3 and events[1].reason == "--replace" and events[1].before == {"replaced": 3}
    result = measure(run)
    realized = skm.accuracy_score(flipped["default"], logged["predicted"].iloc[:100])
    assert result.overall.labelled == 100 and result.overall.realized["accuracy"] == pytest.approx(realized)


@pytest.mark.parametrize(
    ("frame", "columns", "message"),
    [
        ({"id": ["a"], "outcome": [1]}, ("--id", "id", "--label", "label"), "lacks the column(s) label"),
        ({"id": ["a", "b"], "outcome": [1, 7]}, (), "must hold one of the classes 0, 1: 1 row(s), the first is row 2"),
        ({"id": ["a", "a", "b"], "outcome": [1, 0, 1]}, (), "1 id(s) appear more than once"),
        ({"id": ["a", None], "outcome": [1, 0]}, (), "column 'id' must hold an id"),
        ({"id": ["a"], "outcome": [1], "at": ["2999-01-01"]}, ("--at", "at"), "must not be in the future"),
        ({"id": ["a"], "outcome": [1], "at": ["yesterday"]}, ("--at", "at"), "must hold an ISO 8601 date"),
        ({"id": [], "outcome": []}, (), "has no rows"),
    ],
)
def test_bad_label_files_store_nothing(
    run, credit, home: Path, tmp_path: Path, frame: dict, columns: tuple, message: str
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.csv"
    pd.DataFrame(frame).to_csv(path, index=False)
    args = columns if "--id" in columns else ("--id", "id", "--label", "outcome", *columns)
    code, _, err = run("labels", "ingest", "credit-risk", path, *args)
    assert code == 3, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (home / LABELS_DIR).exists() or not any((home / LABELS_DIR).rglob("*.parquet"))
    code, out, _ = run("labels", "list", "credit-risk")
    assert "no labels stored" in out


def test_bad_arguments_and_a_model_without_a_log(run, credit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "labels.txt"
    path.write_text("id,outcome\na,1\n")
    code, _, err = run("labels", "ingest", "credit-risk", path, "--id", "id", "--label", "outcome")
    assert code == 3 and "unsupported extension" in err
    code, _, err = run("labels", "ingest", "credit-risk", tmp_path / "none.csv", "--id", "id", "--label", "outcome")
    assert code == 3 and "no such file" in err
    csv = tmp_path / "ok.csv"
    csv.write_text("id,outcome\na,1\n")
    code, _, err = run("labels", "ingest", "credit-risk", csv, "--id", "id", "--label", "outcome", "--key", "x")
    assert code == 3 and "invalid --key" in err
    code, _, err = run("monitor", "performance", "credit-risk@1", "--by", "month")
    assert code == 2 and "invalid --by" in err
    code, _, err = run("monitor", "performance", "credit-risk@1")
    assert code == 4 and "no logged predictions" in err


def test_an_edited_batch_is_refused(run, logged: pd.DataFrame, tmp_path: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    assert ingest(run, "credit-risk", label_file(tmp_path / "labels.csv", logged))[0] == 0
    (batch,) = (home / LABELS_DIR).rglob("*.parquet")
    frame = pd.read_parquet(batch)
    frame["label"] = "1"
    frame.to_parquet(batch, index=False)
    code, _, err = run("monitor", "performance", "credit-risk@1")
    assert code != 0 and "edited after ingest" in err
    # a file no ingest recorded is ignored
    batch.unlink()
    code, _, err = run("monitor", "performance", "credit-risk@1")
    assert code != 0 and "is missing" in err


def test_client_ids_and_business_keys(run, credit, home: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with monkeypatch.context() as patch:
        rows = log_days(home, patch, make_credit_data(200, seed=4), 2, client=True)
    assert ingest(run, "credit-risk", label_file(tmp_path / "labels.csv", rows, id_column="client_id"))[0] == 0
    result = measure(run)
    assert result.overall.labelled == 200
    assert result.overall.realized["roc_auc"] == pytest.approx(skm.roc_auc_score(rows["default"], rows["score"]))
    code, _, err = ingest(run, "credit-risk", label_file(tmp_path / "k.csv", rows), "--key", "input.age")
    assert code == 5 and "keyed by 'request'" in err
