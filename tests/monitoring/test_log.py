"""``monitor drift --from-log``: the prediction log as current data, read in batches."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from scoregate.config import Settings
from scoregate.monitoring.drift import DriftResult
from scoregate.monitoring.logsource import parse_between, parse_since
from scoregate.registry import Registry
from scoregate.registry.predictions import PredictionLog
from scoregate.serving.batcher import Outputs
from tests.conftest import make_credit_data


def log_rows(home: Path, frame: pd.DataFrame, *, version: int = 1, per_request: int = 10) -> None:
    """Log ``frame``'s rows as the server would: scored by the version, a request at a time."""
    registry = Registry(Settings(home=home))
    try:
        model = registry.load(f"credit-risk@{version}")
    finally:
        registry.close()
    log = PredictionLog(home / "predictions")
    records = frame.drop(columns="default").to_dict(orient="records")
    for start in range(0, len(records), per_request):
        rows = records[start : start + per_request]
        # the scorer itself: the server would refuse the shifted incomes (above the training maximum)
        scored = model.scorer.predict(pd.DataFrame(rows))
        kinds = [scored[c].dtype.str[1:] for c in scored]
        outputs = Outputs(list(scored.columns), kinds, [scored[c].tolist() for c in scored])
        log.append("credit-risk", version, f"req-{start}", rows, outputs, 1.0)
    log.flush()


def test_the_log_and_a_file_give_the_same_figures(run, credit, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("monitor", "reference", "credit-risk@1", credit["train"])[0] == 0
    frame = pd.read_parquet(credit["shifted"])
    log_rows(home, frame)
    from_log, from_file = tmp_path / "log.json", tmp_path / "file.json"
    code, out, err = run("monitor", "drift", "credit-risk@1", "--from-log", "--since", "1h", "-o", from_log)
    assert code == 0, err
    assert "1 of 7 judged columns drifted (income); 3,000 current rows" in out
    assert run("monitor", "drift", "credit-risk@1", "--current", credit["shifted"], "-o", from_file)[0] == 0
    logged, filed = (DriftResult.model_validate_json(p.read_bytes()) for p in (from_log, from_file))
    assert logged.current.source == "log" and logged.current.since is not None
    for a, b in zip(logged.columns, filed.columns, strict=True):
        assert (a.name, a.current_count, a.drifted) == (b.name, b.current_count, b.drifted)
        for key, value in a.statistics.items():
            assert b.statistics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (a.name, key)
    code, out, _ = run("monitor", "history", "credit-risk@1", "--json")
    assert '"source": "log"' in out


def test_an_empty_window_and_no_log(run, credit, home: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("monitor", "reference", "credit-risk@1", credit["train"])[0] == 0
    code, _, err = run("monitor", "drift", "credit-risk@1", "--from-log")
    assert code == 4 and "no logged predictions" in err and len(err.strip().splitlines()) == 1
    log_rows(home, make_credit_data(200, seed=5))
    code, _, err = run("monitor", "drift", "credit-risk@1", "--from-log", "--between", "2020-01-01", "2020-01-02")
    assert code == 4 and "in the window" in err
    assert run("monitor", "drift", "credit-risk@1", "--from-log", "--between", "2020-01-01", "2099-01-01")[0] == 0


def test_window_parsing() -> None:
    now = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
    assert parse_since("15m", now) == now - dt.timedelta(minutes=15)
    assert parse_since(" 7d", now) == now - dt.timedelta(days=7)
    assert parse_since("2w", now) == now - dt.timedelta(weeks=2)
    for bad in ("", "h", "-1h", "1.5h", "10y", "1e3s", "01h"):
        with pytest.raises(ValueError, match="invalid --since"):
            parse_since(bad, now)
    start, end = parse_between("2026-11-25", "2026-11-25T13:00+01:00")
    assert start == dt.datetime(2026, 11, 25, tzinfo=dt.UTC) and end == dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
