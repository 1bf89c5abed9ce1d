"""The performance core: realized metrics are sklearn's; the label-free estimate tracks the realized AUC."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from scoregate.errors import InvalidInputError
from scoregate.monitoring.performance import (
    PerformanceSettings,
    Period,
    Target,
    Task,
    calibration_error,
    estimate,
    fit_calibrator,
    period_starts,
    realized,
    target_of,
)
from scoregate.schema import FeatureType, OutputField

SETTINGS = PerformanceSettings()
BINARY = Target(Task.BINARY, ("0", "1"), ("proba_0", "proba_1"), "prediction")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _population(rng: np.random.Generator, n: int, mean: float, std: float) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a calibrated model (the true P(y=1|x)) and labels drawn from them."""
    x = rng.normal(mean, std, n)
    p = _sigmoid(1.6 * x - 0.4)
    return p, (rng.random(n) < p).astype(np.int8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_estimate_is_within_001_of_the_realized_auc_under_covariate_shift(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref_score, ref_y = _population(rng, 20_000, 0.0, 1.0)
    calibrator = fit_calibrator(ref_score, ref_y, uri="reference", sha256=None, settings=SETTINGS)
    assert calibrator.calibration.error_calibrated < 0.02 and calibrator.calibration.error_raw < 0.02
    assert not calibrator.calibration.recalibrated  # calibrated scores are used as they are
    for mean, std in ((0.8, 0.6), (-0.7, 1.4)):  # the inputs shift; P(y|x) does not
        score, y = _population(rng, 50_000, mean, std)
        decisions = (score >= 0.5).astype(np.int8)
        est = estimate(calibrator, score, decisions, SETTINGS, seed=seed)
        real_auc = skm.roc_auc_score(y, score)
        assert abs(est["roc_auc"].value - real_auc) < 0.01
        assert abs(skm.roc_auc_score(ref_y, ref_score) - real_auc) > 0.02  # the shift did move the AUC
        assert abs(est["accuracy"].value - skm.accuracy_score(y, decisions)) < 0.01
        assert abs(est["f1"].value - skm.f1_score(y, decisions)) < 0.02
        for key in ("roc_auc", "accuracy"):
            band = est[key]
            assert band.low < band.value < band.high and band.high - band.low < 0.05


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_the_calibrator_repairs_an_overconfident_model(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=20_000)
    y = (rng.random(len(x)) < _sigmoid(x)).astype(np.int8)
    overconfident = _sigmoid(3 * x)
    calibrator = fit_calibrator(overconfident, y, uri="reference", sha256=None, settings=SETTINGS)
    assert calibrator.calibration.error_raw > 0.08
    assert calibrator.calibration.error_calibrated < 0.02 and calibrator.calibration.recalibrated
    x2 = rng.normal(0.5, 1.0, 20_000)
    y2 = (rng.random(len(x2)) < _sigmoid(x2)).astype(np.int8)
    score2 = _sigmoid(3 * x2)
    est = estimate(calibrator, score2, (score2 >= 0.5).astype(np.int8), SETTINGS)
    realized_auc = skm.roc_auc_score(y2, score2)
    # the isotonic map fitted on 20,000 rows errs by up to about 0.01 in AUC itself
    assert abs(est["roc_auc"].value - realized_auc) < 0.02
    assert est["roc_auc"].high - est["roc_auc"].low > 0.015  # the band includes the calibration's spread


def test_a_reference_too_small_or_of_one_class_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="both classes"):
        fit_calibrator(np.linspace(0, 1, 100), np.ones(100), uri="ref.csv", sha256=None, settings=SETTINGS)
    with pytest.raises(InvalidInputError, match="at least 20"):
        fit_calibrator(np.linspace(0, 1, 10), np.arange(10) % 2, uri="ref.csv", sha256=None, settings=SETTINGS)


def test_realized_metrics_for_each_task_are_sklearns() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=500)
    pred = y + rng.normal(scale=0.5, size=500)
    regression = realized(Target(Task.REGRESSION, prediction="prediction"), y, None, pred, SETTINGS)
    assert regression == pytest.approx(
        {
            "mae": skm.mean_absolute_error(y, pred),
            "rmse": skm.root_mean_squared_error(y, pred),
            "r2": skm.r2_score(y, pred),
        }
    )
    classes = ("a", "b", "c")
    proba = rng.dirichlet([1, 1, 1], size=600)
    labels = np.asarray(classes, dtype=object)[rng.integers(0, 3, 600)]
    predicted = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    target = Target(Task.MULTICLASS, classes, tuple(f"proba_{c}" for c in classes), "prediction")
    multi = realized(target, labels, proba, predicted, SETTINGS)
    assert multi["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert multi["f1"] == pytest.approx(skm.f1_score(labels, predicted, average="macro"))
    assert multi["log_loss"] == pytest.approx(skm.log_loss(labels, proba, labels=list(classes)))
    assert multi["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, proba, multi_class="ovr"))
    # one class only: no AUC, the rest still defined
    one = realized(BINARY, np.asarray(["1"] * 5, dtype=object), np.full((5, 2), 0.5), None, SETTINGS)
    assert one["roc_auc"] is None and one["accuracy"] == 1.0


def test_calibration_error_is_the_weighted_gap_per_bin() -> None:
    y = np.array([0, 0, 1, 1])
    score = np.array([0.05, 0.15, 0.95, 0.65])
    # bins [0, .1): 0 vs .05; [.1, .2): 0 vs .15; [.9, 1]: 1 vs .95; [.6, .7): 1 vs .65
    assert calibration_error(y, score, 10) == pytest.approx((0.05 + 0.15 + 0.05 + 0.35) / 4)


def test_periods_are_utc_days_and_monday_weeks() -> None:
    import datetime as dt

    stamps = [dt.datetime(2026, 3, d, h, tzinfo=dt.UTC) for d, h in ((1, 23), (2, 0), (8, 12), (9, 1))]
    micros = np.array([int(s.timestamp() * 1e6) for s in stamps])
    epoch = dt.date(1970, 1, 1)
    days = [epoch + dt.timedelta(days=int(d)) for d in period_starts(micros, Period.DAY)]
    weeks = [epoch + dt.timedelta(days=int(d)) for d in period_starts(micros, Period.WEEK)]
    assert days == [dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 8), dt.date(2026, 3, 9)]
    assert weeks == [dt.date(2026, 2, 23), dt.date(2026, 3, 2), dt.date(2026, 3, 2), dt.date(2026, 3, 9)]
    assert all(w.weekday() == 0 for w in weeks)


def test_the_task_is_read_from_the_outputs() -> None:
    def outputs(*names: str) -> list[OutputField]:
        return [OutputField(name=n, type=FeatureType.FLOAT) for n in names]

    assert target_of(outputs("prediction", "proba_no", "proba_yes"), "m@1").positive == "yes"
    assert target_of(outputs("prediction", "proba_a", "proba_b", "proba_c"), "m@1").task is Task.MULTICLASS
    assert target_of(outputs("prediction"), "m@1").task is Task.REGRESSION
    with pytest.raises(InvalidInputError, match="no outputs performance can be measured on"):
        target_of([OutputField(name="prediction", type=FeatureType.STRING)], "m@1")


def test_the_bands_vectorized_metrics_are_sklearns() -> None:
    from scipy.stats import rankdata

    from scoregate.monitoring.performance import _sampled

    rng = np.random.default_rng(3)
    score = np.round(rng.random(400), 2)  # ties
    yhat = (score >= 0.5).astype(np.float64)
    y = (rng.random((5, 400)) < score).astype(np.float64)
    got = _sampled(y, yhat, rankdata(score))
    for i in range(5):
        assert got["roc_auc"][i] == pytest.approx(skm.roc_auc_score(y[i], score), abs=1e-12)
        assert got["accuracy"][i] == pytest.approx(skm.accuracy_score(y[i], yhat), abs=1e-12)
        assert got["precision"][i] == pytest.approx(skm.precision_score(y[i], yhat), abs=1e-12)
        assert got["recall"][i] == pytest.approx(skm.recall_score(y[i], yhat), abs=1e-12)
        assert got["f1"][i] == pytest.approx(skm.f1_score(y[i], yhat), abs=1e-12)
