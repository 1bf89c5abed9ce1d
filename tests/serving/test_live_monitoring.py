"""Live monitoring in the server: counters and gauges after real requests, worker merge,
restarts, failures that never fail scoring, bounded labels, and the same figures as batch."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from scoregate.errors import InvalidInputError
from scoregate.flavors import load_scorer
from scoregate.monitoring import live
from scoregate.monitoring.counts import Accumulator
from scoregate.monitoring.profile import (
    ReferenceProfile,
    Role,
    Subject,
    build_profile,
    column_of,
    input_columns,
    output_kind,
)
from scoregate.schema import Feature, FeatureType, ModelSchema
from scoregate.serving import InMemorySource, create_app
from tests.serving.conftest import FEATURES, Served, register_credit, run, sample_rows, training_frame, wait_for

OUTPUT_TYPES = {"prediction": FeatureType.INT, "proba_0": FeatureType.FLOAT, "proba_1": FeatureType.FLOAT}


def open_schema(schema: ModelSchema) -> ModelSchema:
    """The credit schema without ranges or levels: out-of-range values and new levels are scored."""
    features = [
        Feature(name=f.name, type=FeatureType.STRING, nullable=True)
        if f.type is FeatureType.CATEGORY
        else f.model_copy(update={"minimum": None, "maximum": None, "nullable": True})
        for f in schema.features
    ]
    return ModelSchema(features=features, target=schema.target)


def profile_for(scorer: Any, schema: ModelSchema, name: str, version: int) -> ReferenceProfile:
    frame = training_frame(0)[FEATURES].reset_index(drop=True)
    outputs = scorer.predict(frame).reset_index(drop=True)
    table = pa.Table.from_pandas(pd.concat([frame, outputs], axis=1), preserve_index=False)
    columns = [(c, t, Role.INPUT) for c, t in input_columns(schema)]
    columns += [(column_of(n, t, output_kind(t)), t, Role.OUTPUT) for n, t in OUTPUT_TYPES.items()]
    subject = Subject(model=name, version=version, artifact_digest="0" * 64, schema_digest=schema.digest())
    return build_profile(columns, lambda: table.to_batches(), subject=subject)


@pytest.fixture(scope="module")
def tolerant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A credit model that scores missing values and new levels (gradient boosting, ordinal codes)."""
    import joblib
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    frame = training_frame(0)
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    prep = ColumnTransformer([("num", "passthrough", FEATURES[:3]), ("cat", encoder, ["segment"])])
    model = Pipeline([("prep", prep), ("clf", HistGradientBoostingClassifier(max_iter=20))])
    model.fit(frame[FEATURES], frame["default"])
    path = tmp_path_factory.mktemp("tolerant") / "model.joblib"
    joblib.dump(model, path)
    return path


@pytest.fixture
def monitored(tolerant: Path, schema: ModelSchema) -> tuple[InMemorySource, ReferenceProfile]:
    """credit@1 (open schema: no ranges, any text, nulls) with a reference profile; credit@2 without one."""
    relaxed = open_schema(schema)
    # the profile bins segment as a category, though the open schema lets any text through
    profiled = ModelSchema(features=[*relaxed.features[:3], schema.features[3]], target=schema.target)
    src = InMemorySource()
    scorer = load_scorer("sklearn", tolerant)
    src.add("credit", 1, scorer, relaxed)
    src.add("credit", 2, load_scorer("sklearn", tolerant), relaxed)
    src.set_alias("credit", "production", 1)
    src.set_alias("credit", "challenger", 2)
    profile = profile_for(scorer, profiled, "credit", 1)
    src.set_profile("credit", 1, profile)
    return src, profile


def app_of(source: Any, folder: Path, **options: Any) -> Served:
    options.setdefault("monitoring_window", 1)
    return Served(create_app(source, monitoring_dir=folder, poll_interval=0.05, **options))


_SAMPLE = re.compile(r"^([a-z_]+)\{([^}]*)\} (\S+)$")


def samples(text: str, family: str) -> dict[frozenset[tuple[str, str]], float]:
    out = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match[1] == family:
            labels = frozenset(tuple(p.split("=", 1)) for p in re.findall(r'\w+="[^"]*"', match[2]))
            out[frozenset((k, v.strip('"')) for k, v in labels)] = float(match[3])
    return out


def value(text: str, family: str, **labels: str) -> float | None:
    wanted = set(labels.items())
    found = [v for k, v in samples(text, family).items() if wanted <= set(k)]
    assert len(found) <= 1, found
    return found[0] if found else None


async def metrics(served: Served) -> str:
    return (await served.client.get("/metrics")).text


async def wait_metric(served: Served, family: str, predicate: Any = None, timeout: float = 30, **labels: str) -> str:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = await metrics(served)
        found = value(text, family, **labels)
        if found is not None and (predicate is None or predicate(found)):
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {family}{labels} after {timeout}s:\n{text[-3000:]}")


def in_range_rows(n: int, seed: int, debt_factor: float = 1.0, shifted: int = 0) -> list[dict[str, Any]]:
    """Rows inside the inferred schema's ranges (the first ``shifted`` with debt times ``debt_factor``)."""
    rows = sample_rows(n, seed)
    for i, r in enumerate(rows):
        r["income"] = min(max(r["income"], 10.06), 199.47)
        r["debt"] = min(max(r["debt"] * (debt_factor if i < shifted else 1.0), 0.49), 99.95)
    return rows


def shifted_rows(n: int, seed: int = 3) -> list[dict[str, Any]]:
    rows = sample_rows(n, seed)
    for r in rows:
        r["income"] = r["income"] + 150.0  # past the reference maximum for most rows
    return rows


# -- counters and gauges after real requests ---------------------------------------------------


def test_drift_and_quality_gauges_after_requests(monitored: Any, tmp_path: Path) -> None:
    source, _ = monitored

    async def go() -> None:
        async with app_of(source, tmp_path / "live") as s:
            rows = shifted_rows(300)
            rows[0]["segment"] = "crypto"  # a level the reference never saw
            rows[1]["debt"] = None  # missing
            for start in range(0, 300, 50):
                r = await s.client.post("/models/credit@1/predict", json={"rows": rows[start : start + 50]})
                assert r.status_code == 200, r.text
            # credit@2 has no profile: scored, not monitored
            assert (await s.client.post("/models/credit@2/predict", json={"rows": rows[:5]})).status_code == 200
            text = await wait_metric(
                s, "scoregate_monitoring_window_rows", lambda v: v == 300, model="credit", version="1", window="24h"
            )
            psi = value(text, "scoregate_feature_drift", feature="income", statistic="psi", window="15m")
            assert psi is not None and psi > 1.0  # shifted far past the reference
            age = value(text, "scoregate_feature_drift", feature="age", statistic="psi", window="15m")
            assert age is not None and age < 0.25  # same distribution
            assert value(text, "scoregate_feature_drift", feature="income", statistic="ks", window="24h") > 0.5
            # categorical features have no KS gauge
            assert value(text, "scoregate_feature_drift", feature="segment", statistic="ks", window="15m") is None
            ratio = "scoregate_feature_quality_ratio"
            assert value(text, ratio, feature="segment", kind="unseen_category", window="15m") == pytest.approx(1 / 300)
            assert value(text, ratio, feature="debt", kind="missing", window="15m") == pytest.approx(1 / 300)
            assert value(text, ratio, feature="income", kind="out_of_range", window="15m") > 0.5
            assert value(text, ratio, feature="age", kind="out_of_range", window="15m") == 0.0
            out = value(text, "scoregate_output_drift", output="proba_1", statistic="psi", window="15m")
            assert out is not None and not math.isnan(out)
            assert not [k for k in samples(text, "scoregate_feature_drift") if ("version", "2") in k]
            assert value(text, "scoregate_monitoring_errors_total", stage="count") == 0.0

    run(go())
    files = live.list_windows(tmp_path / "live", "credit", 1)
    assert files and sum(w.rows for w in live.read_windows(tmp_path / "live", "credit", 1)) == 300


def test_refused_rows_are_counted_per_feature(artifacts: dict[str, Path], schema: ModelSchema, tmp_path: Path) -> None:
    """With the strict schema a new level or an out-of-range value is refused (422): counted as refused."""
    source = InMemorySource()
    scorer = load_scorer("sklearn", artifacts["v1"])
    source.add("credit", 1, scorer, schema)
    source.set_alias("credit", "production", 1)
    source.set_profile("credit", 1, profile_for(scorer, schema, "credit", 1))

    async def go() -> None:
        async with app_of(source, tmp_path / "live") as s:
            good = sample_rows(9)
            assert (await s.client.post("/models/credit/predict", json={"rows": good})).status_code == 200
            bad = sample_rows(1)
            bad[0]["segment"] = "crypto"
            assert (await s.client.post("/models/credit/predict", json={"rows": bad})).status_code == 422
            text = await wait_metric(
                s,
                "scoregate_feature_quality_ratio",
                lambda v: v > 0,
                feature="segment",
                kind="refused",
                window="15m",
            )
            assert value(text, "scoregate_feature_quality_ratio", feature="segment", kind="refused", window="15m") == (
                pytest.approx(1 / 10)
            )
            assert value(text, "scoregate_feature_quality_ratio", feature="income", kind="refused", window="15m") == 0.0

    run(go())


# -- the same figures as batch monitoring ---------------------------------------------------------


def test_live_figures_equal_monitor_drift_on_the_same_rows(artifacts: dict[str, Path], tmp_path: Path) -> None:
    from scoregate.monitoring import service
    from scoregate.serving.source import RegistrySource

    registry = register_credit(tmp_path / "home", artifacts)
    service.record_reference(registry, "credit@1", artifacts["train"])
    rows = in_range_rows(700, seed=11, debt_factor=1.4, shifted=350)  # some drift in debt

    async def go() -> None:
        async with app_of(RegistrySource(registry), tmp_path / "live") as s:
            for start in range(0, len(rows), 100):
                r = await s.client.post("/models/credit@1/predict", json={"rows": rows[start : start + 100]})
                assert r.status_code == 200, r.text
            await wait_metric(
                s, "scoregate_monitoring_window_rows", lambda v: v == 700, model="credit", version="1", window="24h"
            )

    run(go())
    current = tmp_path / "current.parquet"
    pd.DataFrame(rows).to_parquet(current, index=False)
    batch = service.drift_file(registry, "credit@1", current, record=False).result
    stored = service.store.bound_reference(registry, registry.resolve("credit@1"))
    window = live.combine(live.read_windows(tmp_path / "live", "credit", 1))
    assert window is not None and window.rows == 700
    online = live.figures(stored.profile, window, profile_digest=stored.digest)
    assert online.profile_digest == batch.profile_digest
    by_name = {(c.role, c.name): c for c in batch.columns}
    assert {(c.role, c.name) for c in online.columns} == set(by_name)
    for column in online.columns:
        other = by_name[(column.role, column.name)]
        assert column.current_count == other.current_count
        assert column.statistic == other.statistic and column.drifted == other.drifted
        for key, figure in column.statistics.items():
            expected = other.statistics[key]
            if key.startswith("wasserstein"):  # bin means: float sums in another order, equal to rounding
                assert figure == pytest.approx(expected, rel=1e-9, abs=1e-12), (column.name, key)
            else:
                assert figure == expected, (column.name, key)
        assert column.p_value == other.p_value
    registry.close()


# -- several workers -------------------------------------------------------------------------------


def test_workers_windows_are_merged(monitored: Any, tmp_path: Path) -> None:
    """Two workers (apps) share the folder: each exports the figures of both workers' rows."""
    source, profile = monitored
    folder = tmp_path / "live"
    rows = shifted_rows(400, seed=5)

    async def go() -> None:
        async with app_of(source, folder) as a, app_of(source, folder) as b:
            for start in range(0, 400, 100):
                target = a if start % 200 == 0 else b
                assert (
                    await target.client.post("/models/credit@1/predict", json={"rows": rows[start : start + 100]})
                ).status_code == 200
            for s in (a, b):
                await wait_metric(
                    s, "scoregate_monitoring_window_rows", lambda v: v == 400, model="credit", version="1", window="24h"
                )
            texts = [await metrics(s) for s in (a, b)]
            figures = [
                value(t, "scoregate_feature_drift", feature="income", statistic="psi", window="15m") for t in texts
            ]
            assert figures[0] == figures[1]

    run(go())
    workers = {f.worker for f in live.list_windows(folder, "credit", 1)}
    assert len(workers) == 2
    window = live.combine(live.read_windows(folder, "credit", 1))
    expected = profile.accumulator(Role.INPUT)
    expected.update(pa.Table.from_pylist(rows))
    for name, column in expected.columns.items():
        assert window.inputs[name].counts.tolist() == column.counts.tolist()
        assert window.inputs[name].nulls == column.nulls


# -- restarts --------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _monitor(source: Any, folder: Path, clock: Clock) -> Any:
    from scoregate.serving.metrics import Metrics
    from scoregate.serving.monitoring import LiveMonitor
    from scoregate.serving.options import ServeOptions

    return LiveMonitor(folder, Metrics(), ServeOptions(monitoring_window=60), "w1", lambda: source, clock=clock)


class _Version:
    name, version = "credit", 1


def _outputs(scorer: Any, rows: list[dict[str, Any]]) -> Any:
    from scoregate.serving.batcher import Outputs

    frame = scorer.predict(pd.DataFrame(rows)[FEATURES])
    return Outputs(list(frame.columns), ["f8"] * len(frame.columns), [frame[c].tolist() for c in frame.columns])


def test_a_crash_loses_at_most_the_open_window(monitored: Any, tmp_path: Path) -> None:
    source, _ = monitored
    scorer = source.load("credit", 1)[1]
    folder = tmp_path / "live"
    clock = Clock(6000.0)  # a window boundary (windows of 60 s)
    first = _monitor(source, folder, clock)
    rows = sample_rows(30)
    first.observe(_Version, rows[:20], _outputs(scorer, rows[:20]))
    first.run_once()
    clock.now = 6061.0  # the first window ended
    first.observe(_Version, rows[20:], _outputs(scorer, rows[20:]))
    first.run_once()
    # killed here (no stop): the open window with 10 rows is lost, the closed one was written
    kept = live.read_windows(folder, "credit", 1)
    assert [(w.start, w.rows) for w in kept] == [(6000, 20)]
    second = _monitor(source, folder, clock)  # the restarted worker writes its own files
    second.observe(_Version, rows[:5], _outputs(scorer, rows[:5]))
    second.stop()  # a graceful stop writes the open window
    windows = live.read_windows(folder, "credit", 1)
    assert [(w.start, w.rows) for w in windows] == [(6000, 20), (6060, 5)]
    assert len({f.worker for f in live.list_windows(folder, "credit", 1)}) == 2


def test_damaged_window_files_are_skipped(monitored: Any, tmp_path: Path) -> None:
    source, _ = monitored
    scorer = source.load("credit", 1)[1]
    folder = tmp_path / "live"
    clock = Clock(6000.0)
    monitor = _monitor(source, folder, clock)
    rows = sample_rows(10)
    monitor.observe(_Version, rows, _outputs(scorer, rows))
    monitor.stop()
    where = live.version_folder(folder, "credit", 1)
    (real,) = live.list_windows(folder, "credit", 1)
    edited = json.loads(real.path.read_bytes())  # same version and digest, other bins
    column = next(c for c in edited["inputs"]["columns"] if c["name"] == "income")
    column["edges"] = [e * 2 for e in column["edges"]]
    (where / "6000-60-editor.json").write_text(json.dumps(edited))
    (where / "6060-60-intruder.json").write_text('{"format": "scoregate-window/1", "model": "credit"')
    (where / "6120-60-other.json").write_bytes(b"\x00" * 10)
    (where / "notes.txt").write_text("hello")
    assert [(w.start, w.rows) for w in live.read_windows(folder, "credit", 1)] == [(6000, 10)]
    _, profile = monitored
    assert not live.Window.from_json((where / "6000-60-editor.json").read_bytes()).matches(profile)
    (kept,) = live.read_windows(folder, "credit", 1, profile=profile)
    assert kept.workers != ["editor"] and kept.matches(profile) and kept.rows == 10
    with pytest.raises(InvalidInputError):
        live.version_folder(folder, "../etc", 1)


# -- faults ------------------------------------------------------------------------------------------


def test_a_monitoring_failure_never_fails_scoring(monitored: Any, tmp_path: Path, monkeypatch: Any) -> None:
    source, _ = monitored

    def broken(self: Any, data: Any, **_: Any) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(Accumulator, "update", broken)

    async def go() -> None:
        async with app_of(source, tmp_path / "live") as s:
            for _ in range(3):
                r = await s.client.post("/models/credit@1/predict", json={"rows": sample_rows(5)})
                assert r.status_code == 200
                assert len(r.json()["predictions"]) == 5
            await wait_metric(s, "scoregate_monitoring_errors_total", lambda v: v >= 1, stage="count")

    run(go())


def test_unwritable_folder_is_counted_and_scoring_goes_on(monitored: Any, tmp_path: Path) -> None:
    source, _ = monitored
    blocked = tmp_path / "live"
    blocked.write_text("a file where the folder should be")

    async def go() -> None:
        async with app_of(source, blocked) as s:
            r = await s.client.post("/models/credit@1/predict", json={"rows": sample_rows(5)})
            assert r.status_code == 200
            await wait_metric(s, "scoregate_monitoring_errors_total", lambda v: v >= 1, stage="persist", timeout=10)
            assert (await s.client.post("/models/credit@1/predict", json={"rows": sample_rows(2)})).status_code == 200

    run(go())


def test_a_failing_profile_source_is_counted(monitored: Any, tmp_path: Path) -> None:
    source, _ = monitored

    def broken(name: str, version: int) -> Any:
        raise OSError("registry down")

    source.reference_profile = broken  # type: ignore[method-assign]

    async def go() -> None:
        async with app_of(source, tmp_path / "live") as s:
            assert (await s.client.post("/models/credit@1/predict", json={"rows": sample_rows(3)})).status_code == 200
            await wait_metric(s, "scoregate_monitoring_errors_total", lambda v: v >= 1, stage="profile")

    run(go())


# -- bounds and the off switch --------------------------------------------------------------------------


def test_labels_are_bounded(monitored: Any, tmp_path: Path) -> None:
    source, profile = monitored
    source.set_profile(
        "credit", 2, profile.model_copy(update={"subject": profile.subject.model_copy(update={"version": 2})})
    )

    async def go() -> None:
        async with app_of(source, tmp_path / "live", monitoring_max_features=2, monitoring_max_versions=1) as s:
            for ref in ("credit@1", "credit@2"):
                assert (
                    await s.client.post(f"/models/{ref}/predict", json={"rows": sample_rows(20)})
                ).status_code == 200
            text = await wait_metric(s, "scoregate_monitoring_window_rows", lambda v: v > 0, window="15m")
            found = samples(text, "scoregate_feature_drift")
            assert {dict(k)["feature"] for k in found} == {"income", "debt"}
            assert {dict(k)["version"] for k in found} == {"1"}
            outputs = {dict(k)["output"] for k in samples(text, "scoregate_output_drift")}
            assert outputs == {"prediction", "proba_0"}

    run(go())


def test_monitoring_can_be_turned_off(monitored: Any, tmp_path: Path) -> None:
    source, _ = monitored
    app = create_app(source, monitoring_dir=tmp_path / "live", monitoring=False)
    assert app.monitor is None

    async def go() -> None:
        async with Served(app) as s:
            assert (await s.client.post("/models/credit@1/predict", json={"rows": sample_rows(3)})).status_code == 200
            assert not samples(await metrics(s), "scoregate_feature_drift")

    run(go())
    assert not (tmp_path / "live").exists()


def test_serve_has_a_no_monitoring_option() -> None:
    from typer.testing import CliRunner

    from scoregate.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert "--no-monitoring" in result.output


def test_queue_is_bounded(monitored: Any, tmp_path: Path, monkeypatch: Any) -> None:
    from scoregate.serving import monitoring

    source, _ = monitored
    monkeypatch.setattr(monitoring, "MAX_PENDING_ROWS", 10)
    monitor = _monitor(source, tmp_path / "live", Clock(6000.0))
    rows = sample_rows(4)
    for _ in range(5):
        monitor.observe(_Version, rows, object())
    assert monitor.pending() == 2  # 8 rows queued; the next 4 would pass the bound
    assert monitor._dropped._value.get() == 12


def test_counting_is_the_same_as_arrow_batches(monitored: Any) -> None:
    """The rows-to-columns path of the server counts exactly as an Arrow batch of the same rows."""
    from scoregate.serving.monitoring import _columns

    _, profile = monitored
    rows = sample_rows(500, seed=2)
    rows[3]["debt"] = None
    rows[4]["income"] = float("inf")
    rows[5].pop("age")
    names = [c.name for c in profile.role(Role.INPUT)]
    served = profile.accumulator(Role.INPUT)
    import operator

    served.update(_columns(names, rows, operator.itemgetter(*names)))
    batch = profile.accumulator(Role.INPUT)
    batch.update(
        pa.Table.from_pylist(
            rows, schema=pa.schema([(n, pa.float64() if n != "segment" else pa.string()) for n in names])
        )
    )
    for name in names:
        assert served[name].to_dict() == batch[name].to_dict(), name
    assert np.isfinite(served["income"].maximum)


# -- real worker processes ---------------------------------------------------------------------------


def test_worker_processes_merge_and_a_killed_worker_loses_at_most_its_open_window(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """`serve --workers 2`: both workers' windows are merged into one figure at /metrics; kill -9 of
    the server loses at most the open window (the closed ones stay on disk)."""
    import os
    import signal
    import subprocess
    import sys

    import httpx

    from scoregate.monitoring import service
    from tests.serving.conftest import free_port

    home = tmp_path / "home"
    registry = register_credit(home, artifacts)
    service.record_reference(registry, "credit@1", artifacts["train"])
    registry.close()
    port = free_port()
    code = (
        "from scoregate.config import Settings; from scoregate.serving import run; "
        f"run(Settings(home={str(home)!r}), '127.0.0.1', {port}, workers=2, log_level='warning', "
        "monitoring_window=1, log_predictions=False)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/v2/health/ready").status_code == 200, what="the server")
        rows = in_range_rows(400, seed=21)
        for start in range(0, 400, 10):  # a connection each: the kernel spreads them over both workers
            with httpx.Client() as client:
                r = client.post(f"{url}/models/credit@1/predict", json={"rows": rows[start : start + 10]})
                assert r.status_code == 200, r.text

        def merged() -> bool:
            text = httpx.get(f"{url}/metrics").text
            return value(text, "scoregate_monitoring_window_rows", model="credit", version="1", window="24h") == 400

        wait_for(merged, timeout=60, what="the merged window rows")
        folder = live.live_folder(home)
        assert len({f.worker for f in live.list_windows(folder, "credit", 1)}) == 2
        text = httpx.get(f"{url}/metrics").text
        assert value(text, "scoregate_feature_drift", feature="income", statistic="psi", window="24h") is not None
        # rows in the open window, then kill -9: those may be lost, the closed windows are not
        with httpx.Client() as client:
            assert client.post(f"{url}/models/credit@1/predict", json={"rows": rows[:10]}).status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    kept = sum(w.rows for w in live.read_windows(live.live_folder(home), "credit", 1))
    assert 400 <= kept <= 410
