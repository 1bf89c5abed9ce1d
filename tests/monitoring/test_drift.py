"""Drift verdicts: what is flagged, what is not, and false alarms over simulated days."""

from __future__ import annotations

import numpy as np
import pytest

from scoregate.monitoring.counts import Accumulator
from scoregate.monitoring.drift import CurrentData, DriftSettings, compare
from scoregate.monitoring.profile import Role
from scoregate.monitoring.statistics import STATISTICS_VERSION, Statistic
from scoregate.schema import FeatureType
from tests.monitoring.helpers import counts_of, drift_of, normal_features, profile_of

ROWS = 100_000


@pytest.fixture(scope="module")
def reference():  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(100)
    data = normal_features(rng, ROWS)
    data["purpose"] = rng.choice(["car", "home", "education", "other"], ROWS, p=[0.4, 0.3, 0.2, 0.1])
    data["age"] = rng.integers(18, 80, ROWS).astype(float)
    return profile_of(data, {"purpose": FeatureType.CATEGORY, "age": FeatureType.INT})


def current(rng: np.random.Generator, rows: int, shifts: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    data = normal_features(rng, rows)
    for name, shift in (shifts or {}).items():
        data[name] = data[name] + shift
    data["purpose"] = rng.choice(["car", "home", "education", "other"], rows, p=[0.4, 0.3, 0.2, 0.1])
    data["age"] = rng.integers(18, 80, rows).astype(float)
    return data


def test_default_flags_a_half_sd_shift_in_one_feature_and_nothing_else(reference) -> None:  # type: ignore[no-untyped-def]
    result = drift_of(reference, current(np.random.default_rng(1), ROWS, {"f07": 0.5}))
    assert [c.name for c in result.drifted] == ["f07"]
    f07 = next(c for c in result.columns if c.name == "f07")
    assert f07.statistic is Statistic.PSI and f07.value > 0.2 and f07.threshold == 0.1
    assert all(c.value < 0.01 for c in result.columns if c.name != "f07")


def test_default_does_not_flag_a_tenth_of_an_sd(reference) -> None:  # type: ignore[no-untyped-def]
    result = drift_of(reference, current(np.random.default_rng(2), ROWS, {"f03": 0.1}))
    assert result.drifted == []  # material shifts only: PSI about 0.01, far under 0.1


def test_calibrated_flags_a_tenth_of_an_sd_too_and_nothing_else(reference) -> None:  # type: ignore[no-untyped-def]
    result = drift_of(reference, current(np.random.default_rng(3), ROWS, {"f03": 0.1, "f11": 0.5}), calibrated=True)
    assert sorted(c.name for c in result.drifted) == ["f03", "f11"]
    f03 = next(c for c in result.columns if c.name == "f03")
    assert f03.calibration is not None and f03.calibration.chunks == 20 and f03.calibration.replicates == 1000
    assert f03.value > f03.calibration.critical_value


def test_thirty_days_without_drift_raise_at_most_one_alert(reference) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(30)
    for calibrated in (False, True):
        alerts = 0
        for day in range(30):
            rows = int(rng.integers(300, 30_000))  # quiet and busy days, under and over 1,000 rows
            result = drift_of(reference, current(rng, rows), calibrated=calibrated, seed=day)
            alerts += bool(result.drifted)
        assert alerts <= 1, f"calibrated={calibrated}: {alerts} alerts in 30 days"


def test_many_small_windows_rarely_alert(reference) -> None:  # type: ignore[no-untyped-def]
    """Small windows are where a threshold alone would fail: the test's alpha holds them."""
    rng = np.random.default_rng(31)
    alerts = sum(bool(drift_of(reference, current(rng, 400)).drifted) for _ in range(100))
    assert alerts <= 3  # alpha = 0.01 per comparison: about one expected in 100


def test_small_samples_are_judged_by_ks_and_tiny_ones_not_at_all(reference) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(4)
    small = drift_of(reference, current(rng, 500, {"f00": 1.0}))
    f00 = next(c for c in small.columns if c.name == "f00")
    assert f00.statistic is Statistic.KS and f00.drifted
    purpose = next(c for c in small.columns if c.name == "purpose")
    assert purpose.statistic is Statistic.JENSEN_SHANNON
    tiny = drift_of(reference, current(rng, 50, {"f00": 3.0}))
    assert all(c.drifted is None and "too few" in c.note for c in tiny.columns)


def test_every_statistic_is_recorded_with_its_definition(reference) -> None:  # type: ignore[no-untyped-def]
    result = drift_of(reference, current(np.random.default_rng(5), 5_000))
    f00 = next(c for c in result.columns if c.name == "f00")
    numeric = {"psi", "ks", "wasserstein", "wasserstein_normed", "jensen_shannon", "hellinger", "chi_square"}
    assert numeric | {"cramers_v", "linf"} == set(f00.statistics)
    purpose = next(c for c in result.columns if c.name == "purpose")
    assert "ks" not in purpose.statistics and "psi" in purpose.statistics
    assert {d.id for d in result.definitions} == {Statistic(k) for k in f00.statistics}
    assert result.statistics_version == STATISTICS_VERSION and result.settings.alpha == 0.01
    assert result.profile_digest == reference.digest()
    assert result.canonical_json() == type(result).model_validate_json(result.canonical_json()).canonical_json()


def test_quality_figures(reference) -> None:  # type: ignore[no-untyped-def]
    data = current(np.random.default_rng(6), 10_000)
    data["f01"][:1_000] = np.nan
    data["f02"][:500] = 50.0  # far above the reference maximum
    data["purpose"][:200] = "crypto"
    result = drift_of(reference, data)
    by_name = {c.name: c for c in result.columns}
    assert by_name["f01"].quality.null_share_current == pytest.approx(0.1)
    assert by_name["f02"].quality.above_range_share == pytest.approx(0.05)
    assert by_name["purpose"].quality.other_share_current == pytest.approx(0.02)
    assert by_name["f02"].quality.mean_current == pytest.approx(np.nanmean(data["f02"]))


def test_batch_and_row_by_row_counting_give_the_same_figures(reference) -> None:  # type: ignore[no-untyped-def]
    data = current(np.random.default_rng(7), 3_000, {"f05": 0.3})
    batch = counts_of(reference, data)
    live = reference.accumulator(Role.INPUT)
    for start in range(0, 3_000, 25):
        live.update({name: values[start : start + 25].tolist() for name, values in data.items()})
    merged = Accumulator.from_json(live.to_json())
    at = CurrentData(source="file", rows=3_000)
    one = compare(reference, batch, current=at, now=None)
    for other in (live, merged):
        two = compare(reference, other, current=at)
        for a, b in zip(one.columns, two.columns, strict=True):
            assert a.drifted == b.drifted and a.p_value == b.p_value
            for key, value in a.statistics.items():
                if key.startswith("wasserstein"):  # per-bin float sums: equal to rounding
                    assert b.statistics[key] == pytest.approx(value, rel=1e-12)
                else:
                    assert b.statistics[key] == value, key


def test_a_chosen_statistic_decides(reference) -> None:  # type: ignore[no-untyped-def]
    result = drift_of(reference, current(np.random.default_rng(8), 5_000, {"f00": 0.2}), statistic="wasserstein_normed")
    f00 = next(c for c in result.columns if c.name == "f00")
    assert f00.statistic is Statistic.WASSERSTEIN_NORMED and f00.drifted  # W1 of 0.2 sd over its 0.1 threshold
    purpose = next(c for c in result.columns if c.name == "purpose")
    assert purpose.statistic is Statistic.PSI  # W1 is not defined for categories: the default stands
    with pytest.raises(ValueError, match="test statistic, not an effect size"):
        DriftSettings(statistic="chi_square")


def test_calibration_needs_chunks() -> None:
    rng = np.random.default_rng(9)
    small = profile_of({"x": rng.normal(size=3_000)})
    result = drift_of(small, {"x": rng.normal(size=3_000)}, calibrated=True)
    assert result.columns[0].drifted is None and "chunks" in result.columns[0].note


def test_calibration_null_matches_fresh_undrifted_samples() -> None:
    """The calibrated null must be as wide as the real one: comparing chunks with a reference
    that still contains them would make it about 40 % too narrow here, and alarms too frequent."""
    rng = np.random.default_rng(12)
    profile = profile_of({"x": rng.normal(size=20_000)})  # 20 chunks of 1,000 rows
    fresh = []
    for _ in range(300):
        result = drift_of(profile, {"x": rng.normal(size=5_000)})
        fresh.append(result.columns[0].statistics["psi"])
    calibrated = drift_of(profile, {"x": rng.normal(size=5_000)}, calibrated=True, replicates=2_000)
    calibration = calibrated.columns[0].calibration
    assert calibration is not None and calibration.resampled == 0
    # never narrower than the real null (the self-including version gives 0.5-0.7x), at most a bit wider
    assert 0.8 <= calibration.null_mean / np.mean(fresh) <= 1.5
    assert 0.8 <= calibration.null_std / np.std(fresh) <= 1.5
