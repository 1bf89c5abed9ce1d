"""Alerts from recorded drift results: firing and resolving as audit events and signed webhooks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from scoregate.errors import InvalidInputError
from scoregate.governance.audit import iter_events, verify
from scoregate.governance.service import Governance
from scoregate.governance.webhooks import SIGNATURE_HEADER, deliver_pending, verify_signature
from scoregate.monitoring import alerting, service
from scoregate.monitoring.alerts import Observations, Transition, WindowRecord, evaluate, replay
from scoregate.monitoring.drift import DriftSettings
from scoregate.monitoring.rules import DEFAULT_MONITORING_POLICY, AlertKind, MonitoringPolicy
from scoregate.registry import Registry
from tests.conftest import make_credit_data
from tests.monitoring.helpers import drift_of, normal_features, profile_of

SECRET = "alert-secret-alert-secret"


def _current(tmp_path: Path, seed: int, shift: float = 0.0, rows: int = 400) -> Path:
    frame = make_credit_data(rows, seed=seed)
    frame["income"] = frame["income"] + shift
    path = tmp_path / f"current-{seed}-{shift:g}.parquet"
    frame.to_parquet(path, index=False)
    return path


@pytest.fixture
def watched(registry: Registry, good, credit_files: dict[str, Path]) -> Registry:  # type: ignore[no-untyped-def]
    service.record_reference(registry, "credit-risk@1", credit_files["train"], score=False)
    return registry


def test_an_alert_fires_and_resolves_with_an_audit_event_and_a_signed_webhook(
    watched: Registry, tmp_path: Path
) -> None:
    registry = watched
    Governance(registry).add_webhook("http://127.0.0.1:9/hooks", SECRET, ["monitor.alert.*"])
    changes = []
    for seed in (10, 11):  # two shifted results in a row: the default high tier fires on the second
        service.drift_file(registry, "credit-risk@1", _current(tmp_path, seed, shift=12_000), score=False)
        changes.append(alerting.evaluate_version(registry, "credit-risk@1"))
    assert changes[0] == []
    assert [(c.kind, c.transition) for c in changes[1]] == [(AlertKind.DRIFT, Transition.FIRE)]
    assert "income" in changes[1][0].verdict.details[0]
    status = alerting.status(registry, "credit-risk@1")
    assert [a.kind for a in status.open_alerts] == [AlertKind.DRIFT]
    assert alerting.evaluate_version(registry, "credit-risk@1") == []  # an open alert does not fire again

    for seed in (12, 13):
        service.drift_file(registry, "credit-risk@1", _current(tmp_path, seed), score=False)
        last = alerting.evaluate_version(registry, "credit-risk@1")
    assert [(c.kind, c.transition) for c in last] == [(AlertKind.DRIFT, Transition.RESOLVE)]
    assert alerting.status(registry, "credit-risk@1").open_alerts == []

    with registry.reading() as session:
        fired = list(iter_events(session, subject="credit-risk@1", action=alerting.FIRE_ACTION))
        resolved = list(iter_events(session, subject="credit-risk@1", action=alerting.RESOLVE_ACTION))
        assert verify(session).ok
    assert len(fired) == len(resolved) == 1
    assert fired[0].after["evidence"] and fired[0].after["kind"] == "drift"

    posted: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        return httpx.Response(200)

    with httpx.Client(transport=httpx.MockTransport(receive)) as client:
        report = deliver_pending(registry.engine, client=client)
    assert report.delivered == 2
    bodies = [orjson.loads(r.content) for r in posted]
    assert [b["action"] for b in bodies] == [alerting.FIRE_ACTION, alerting.RESOLVE_ACTION]
    for request in posted:
        assert verify_signature(SECRET, request.content, request.headers[SIGNATURE_HEADER])
        assert not verify_signature("another-secret-entirely", request.content, request.headers[SIGNATURE_HEADER])


def test_alerts_ignore_a_result_edited_in_the_artifact_store(watched: Registry, tmp_path: Path) -> None:
    """The evaluation reads results back from the store, re-hashed: an edited blob is refused."""
    from scoregate.errors import IntegrityError

    run = service.drift_file(watched, "credit-risk@1", _current(tmp_path, 20), score=False)
    blob = next(p for p in Path(watched.settings.home).rglob(run.digest[:2] + "*") if p.is_file())
    blob.write_bytes(blob.read_bytes().replace(b'"drifted":false', b'"drifted":true'))
    with pytest.raises(IntegrityError):
        alerting.evaluate_version(watched, "credit-risk@1")


def test_thirty_days_of_undrifted_windows_raise_at_most_one_alert_per_model() -> None:
    """30 simulated days, nothing drifting: a batch comparison a day (real results) and 24 hourly
    live windows a day, whose binned counts are drawn from the reference's own proportions (the
    sampling distribution of a window under no drift), scored with the same statistic functions."""
    from scoregate.monitoring import statistics as st

    rng = np.random.default_rng(7)
    profile = profile_of(normal_features(rng, 20_000, features=20))
    rules = MonitoringPolicy.parse(DEFAULT_MONITORING_POLICY).rules_for("m@1", "high")
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    hours, rows = 30 * 24, 500
    figures: dict[tuple[str, str], np.ndarray] = {}
    for column in profile.columns:
        fine = np.asarray(column.counts, dtype=float)
        drawn = rng.multinomial(rows, fine / fine.sum(), size=hours)
        mapping = column.coarse_map()
        coarse = np.stack([drawn[:, mapping == k].sum(axis=1) for k in range(mapping.max() + 1)], axis=1)
        ref_coarse = np.array([fine[mapping == k].sum() for k in range(mapping.max() + 1)])
        figures[(column.name, "psi")] = st.psi(ref_coarse, coarse)
        figures[(column.name, "jensen_shannon")] = st.jensen_shannon(ref_coarse, coarse)
        figures[(column.name, "ks")] = st.ks(fine, drawn)
    windows = [
        WindowRecord(
            end=start + dt.timedelta(hours=h + 1),
            window="1h",
            rows=rows,
            feature_drift={key: float(values[h]) for key, values in figures.items()},
            quality_ratio={(c.name, "missing"): 0.0 for c in profile.columns},
        )
        for h in range(hours)
    ]
    drift = [(f"day{d}", drift_of(profile, normal_features(rng, 2_000, features=20))) for d in range(30)]
    history = [  # an evaluation every hour, reading the newest records as the registry's does
        Observations(drift=drift[max(0, h // 24 - 9) : h // 24 + 1], windows=windows[max(0, h - 9) : h + 1])
        for h in range(hours)
    ]
    assert max(v[0] for k, v in figures.items() if k[1] == "psi") > 0  # the windows do vary
    fired = [c for c in replay(history, rules) if c.transition is Transition.FIRE]
    assert len(fired) <= 1, fired


def test_a_real_shift_in_live_windows_fires_after_consecutive_windows() -> None:
    rules = MonitoringPolicy.parse(DEFAULT_MONITORING_POLICY).rules_for("m@1", "high")
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def window(i: int, psi: float) -> WindowRecord:
        return WindowRecord(end=start + dt.timedelta(hours=i), window="1h", rows=500, feature_drift={("x", "psi"): psi})

    calm, shifted = [window(i, 0.02) for i in range(5)], [window(5 + i, 0.4) for i in range(3)]
    assert evaluate(Observations(windows=calm + shifted[:2]), rules, set()) == []
    (change,) = evaluate(Observations(windows=calm + shifted), rules, set())
    assert (change.kind, change.transition) == (AlertKind.LIVE_DRIFT, Transition.FIRE)
    assert change.verdict.details == ("x (input): psi 0.4000",)


def test_monitoring_policy_changes_are_audited_and_versioned(watched: Registry) -> None:
    assert alerting.policy_in_force(watched).version == 0
    stricter = DEFAULT_MONITORING_POLICY.replace("consecutive: 2              #", "consecutive: 1              #")
    changed = alerting.set_policy(watched, stricter, reason="page on the first drifted result")
    assert changed.version == 1 and alerting.policy_in_force(watched).document == stricter
    assert alerting.set_policy(watched, stricter, reason="again").version == 1  # the same document: no change
    with watched.reading() as session:
        (event,) = iter_events(session, subject=alerting.POLICY_SUBJECT)
    assert event.reason == "page on the first drifted result" and event.after["version"] == 1
    with pytest.raises(InvalidInputError, match="needs a reason"):
        alerting.set_policy(watched, DEFAULT_MONITORING_POLICY, reason=" ")
    assert alerting.rules_for(watched, watched.resolve("credit-risk@1"))[0].drift.consecutive == 1


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("tiers: [", "monitoring policy is not valid YAML"),
        ("- a\n- b\n", "the document must be a YAML mapping"),
        ("tiers: {}\n", "at tiers: "),
        ("tiers: {high: {drift: {min_effect: -1}}}\n", "at tiers.high.drift.min_effect: "),
        ("tiers: {high: {drift: {consecutiv: 2}}}\n", "at tiers.high.drift.consecutiv: Extra inputs"),
        ("tiers: {high: {live: {window: soon}}}\n", "at tiers.high.live.window: 'soon' is not a duration"),
        ("tiers: {high: {live: {feature_drift: {chi_square: 3}}}}\n", "'chi_square' is not an effect-size"),
        ("tiers: {high: {}}\ndefault_tier: gold\n", "default_tier 'gold' is not a tier"),
        ("tiers: {high: {}}\nversions: {credit-risk: {drift: {}}}\n", "versions.credit-risk: expected NAME@VERSION"),
        ("tiers: {high: {}}\nversions: {m@1: {alerts: {}}}\n", "versions.m@1.alerts: not a section"),
        ("tiers: {high: {}}\nversions: {m@1: {drift: {min_effect: x}}}\n", "versions.m@1.drift.min_effect: "),
    ],
)
def test_a_bad_monitoring_policy_is_refused_in_one_line(document: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[")) as caught:
        MonitoringPolicy.parse(document)
    assert "\n" not in caught.value.message


def test_a_version_override_wins_over_its_tier() -> None:
    policy = MonitoringPolicy.parse(
        DEFAULT_MONITORING_POLICY.replace("versions: {}", 'versions: {"m@3": {drift: {min_effect: 0.3}}}')
    )
    assert policy.rules_for("m@3", "high").drift.min_effect == 0.3
    assert policy.rules_for("m@3", "high").drift.consecutive == 2
    assert policy.rules_for("m@2", "high").drift.min_effect == 0.1
    assert policy.rules_for("m@2", "unknown-tier") == policy.tiers["high"]


def test_a_drift_of_too_few_rows_is_not_judged(watched: Registry, tmp_path: Path) -> None:
    for seed in (30, 31):
        service.drift_file(watched, "credit-risk@1", _current(tmp_path, seed, 12_000, rows=50), score=False)
    assert alerting.evaluate_version(watched, "credit-risk@1") == []


def test_neither_another_reference_nor_a_lax_alpha_resolves_an_alert(watched: Registry, tmp_path: Path) -> None:
    """A hostile user records results meant to look clean: against the current data as its own
    reference, and with an alpha no p-value can reach. Neither counts; the alert stays open."""
    for seed in (40, 41):
        service.drift_file(watched, "credit-risk@1", _current(tmp_path, seed, shift=12_000), score=False)
    (fired,) = alerting.evaluate_version(watched, "credit-risk@1")
    assert fired.transition is Transition.FIRE
    for seed in (42, 43):
        shifted = _current(tmp_path, seed, shift=12_000)
        service.drift_file(watched, "credit-risk@1", shifted, reference=shifted, score=False)
        service.drift_file(watched, "credit-risk@1", shifted, settings=DriftSettings(alpha=1e-300), score=False)
    assert alerting.evaluate_version(watched, "credit-risk@1") == []
    assert [a.kind for a in alerting.status(watched, "credit-risk@1").open_alerts] == [AlertKind.DRIFT]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_racing_evaluations_fire_one_alert(
    backend: str, tmp_path: Path, credit_files: dict[str, Path], request: pytest.FixtureRequest
) -> None:
    import threading

    from scoregate.config import Settings

    home = tmp_path / "home"
    settings = (
        Settings(home=home)
        if backend == "sqlite"
        else Settings(home=home, database_url=request.getfixturevalue("postgres_url"))
    )
    registry = Registry(settings)
    registry.register(
        "credit-risk", credit_files["model"], flavor="sklearn", train_data=credit_files["train"], target="default"
    )
    service.record_reference(registry, "credit-risk@1", credit_files["train"], score=False)
    for seed in (50, 51):
        service.drift_file(registry, "credit-risk@1", _current(tmp_path, seed, shift=12_000), score=False)
    barrier = threading.Barrier(4)
    fired: list[int] = []

    def evaluate_once() -> None:
        own = Registry(settings)
        try:
            barrier.wait()
            fired.append(len(alerting.evaluate_version(own, "credit-risk@1")))
        finally:
            own.close()

    threads = [threading.Thread(target=evaluate_once) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(fired) == [0, 0, 0, 1]
    with registry.reading() as session:
        assert len(list(iter_events(session, subject="credit-risk@1", action=alerting.FIRE_ACTION))) == 1
    registry.close()


def test_performance_results_fire_and_resolve_by_the_policy_bounds() -> None:
    from scoregate.monitoring.alerts import PerformanceRecord

    policy = MonitoringPolicy.parse(
        DEFAULT_MONITORING_POLICY.replace("minimum: {}", "minimum: {roc_auc: 0.7}").replace(
            "maximum: {}", "maximum: {brier: 0.2}"
        )
    )
    rules = policy.rules_for("m@1", "high")
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def result(day: int, auc: float, brier: float) -> PerformanceRecord:
        return PerformanceRecord(start + dt.timedelta(days=day), 5_000, {"roc_auc": auc, "brier": brier}, f"p{day}")

    good, bad = result(0, 0.8, 0.1), result(1, 0.65, 0.25)
    (fired,) = evaluate(Observations(performance=[good, bad]), rules, set())
    assert (fired.kind, fired.transition) == (AlertKind.PERFORMANCE, Transition.FIRE)
    assert fired.verdict.details == ("roc_auc 0.6500 < 0.7", "brier 0.2500 > 0.2") and fired.verdict.evidence == "p1"
    (resolved,) = evaluate(Observations(performance=[good, bad, result(2, 0.75, 0.15)]), rules, {AlertKind.PERFORMANCE})
    assert resolved.transition is Transition.RESOLVE
    unwatched = PerformanceRecord(start, 10, {"accuracy": 0.1})
    assert evaluate(Observations(performance=[unwatched]), rules, set()) == []  # no bound on it: not judged


def test_quality_alert_from_a_recorded_result_with_nulls(watched: Registry, tmp_path: Path) -> None:
    frames = []
    for seed in (60, 61):
        frame = make_credit_data(400, seed=seed)
        frame.loc[frame.index[:120], "age"] = None  # 30 % nulls where the reference had none
        path = tmp_path / f"nulls-{seed}.parquet"
        frame.to_parquet(path, index=False)
        frames.append(path)
        service.drift_file(watched, "credit-risk@1", path, score=False)
    changes = alerting.evaluate_version(watched, "credit-risk@1")
    quality = [c for c in changes if c.kind is AlertKind.QUALITY]
    assert quality and quality[0].transition is Transition.FIRE
    assert any(d.startswith("age: nulls 30.0%") for d in quality[0].verdict.details)


def test_persisted_live_windows_fire_a_live_alert(watched: Registry) -> None:
    """Windows written the way the server writes them, read back through the live reader."""
    import pyarrow as pa

    from scoregate.monitoring import live, store
    from scoregate.monitoring.profile import Role

    version = watched.resolve("credit-risk@1")
    bound = store.bound_reference(watched, version)
    folder = live.live_folder(Path(watched.settings.home))
    start = 1_800_000_000
    names = [c.name for c in bound.profile.role(Role.INPUT)]
    for i in range(6):
        frame = make_credit_data(400, seed=70 + i)
        if i >= 3:  # the last three windows are shifted
            frame["income"] = frame["income"] + 12_000
        window = live.Window.empty(bound.profile, bound.digest, start + 300 * i, 300, "w1")
        window.inputs.update(pa.RecordBatch.from_pandas(frame[names], preserve_index=False))
        live.write_window(folder, window, "w1")
        if i == 4:
            assert alerting.evaluate_version(watched, "credit-risk@1") == []  # two shifted windows: not yet
    changes = alerting.evaluate_version(watched, "credit-risk@1")
    assert [(c.kind, c.transition) for c in changes] == [(AlertKind.LIVE_DRIFT, Transition.FIRE)]
    assert any(d.startswith("income (input): psi") for d in changes[0].verdict.details)
