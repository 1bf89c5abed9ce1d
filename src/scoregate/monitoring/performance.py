"""Model performance: realized metrics once labels arrive, a label-free estimate before.

The pure core of performance monitoring (the join of the prediction log with its labels
is :mod:`scoregate.monitoring.outcomes`, the label store :mod:`scoregate.monitoring.labels`).

Realized metrics are scikit-learn's, on the labelled rows of each period (a period is
the UTC day or ISO week of the *prediction*, so a label that lands months later still
counts where its decision was made).

The estimate is confidence-based performance estimation (CBPE): an isotonic regression
fitted on reference scores and labels turns a score into the probability that the row
is positive; if that calibration still holds on current data (no concept drift; the
inputs may shift), the expected confusion matrix of a period is the sum of those
probabilities over its rows, and the expected ROC AUC is the AUC with every row counted
as a positive with weight p and a negative with weight 1 - p. The band is where the
realized figure would fall in 95 % of draws of labels from those probabilities.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import rankdata
from sklearn import metrics as skm
from sklearn.isotonic import IsotonicRegression

from scoregate.errors import InvalidInputError
from scoregate.monitoring.profile import Subject
from scoregate.schema import FeatureType, OutputField

RESULT_FORMAT = "scoregate-performance/1"
PROBA_PREFIX = "proba_"


class Task(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"


class Source(StrEnum):
    """Where a period's headline figure comes from."""

    REALIZED = "realized"  # enough of its predictions have labels
    ESTIMATED = "estimated"  # the label-free estimate
    NONE = "none"  # neither (no labels, no estimate)


#: Each metric's definition, printed by ``monitor performance`` and copied into docs/monitoring.md.
DEFINITIONS: dict[str, str] = {
    "roc_auc": "area under the ROC curve of the positive class's score (sklearn roc_auc_score; one-vs-rest "
    "macro average for several classes)",
    "accuracy": "share of labelled rows whose predicted class is the label (sklearn accuracy_score)",
    "precision": "of the rows predicted positive, the share that are (sklearn precision_score; macro average "
    "for several classes)",
    "recall": "of the positive rows, the share predicted positive (sklearn recall_score; macro for several classes)",
    "f1": "harmonic mean of precision and recall (sklearn f1_score; macro for several classes)",
    "log_loss": "mean negative log-likelihood of the label under the scores (sklearn log_loss)",
    "brier": "mean squared difference between the positive score and the 0/1 label (sklearn brier_score_loss)",
    "calibration_error": "expected calibration error: over 10 equal-width score bins, the row-weighted mean of "
    "|share positive - mean score|",
    "mae": "mean absolute error (sklearn mean_absolute_error)",
    "rmse": "root mean squared error (sklearn root_mean_squared_error)",
    "r2": "coefficient of determination (sklearn r2_score)",
    "matched_share": "share of the period's logged predictions that have a label",
    "label_lag": "time from a prediction to its label's observation (--at, else the ingest time)",
}
HEADLINE = {Task.BINARY: "roc_auc", Task.MULTICLASS: "accuracy", Task.REGRESSION: "rmse"}
ESTIMATED_METRICS = ("roc_auc", "accuracy", "precision", "recall", "f1")


class PerformanceSettings(BaseModel):
    """How performance is computed; recorded in every result."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: a period's figure is the realized one once this share of its predictions has labels
    complete_share: float = Field(0.95, gt=0, le=1)
    #: the threshold on the positive score when the log has no predicted class
    threshold: float = Field(0.5, gt=0, lt=1)
    bins: int = Field(10, ge=2, le=100)  # calibration error bins
    band_draws: int = Field(100, ge=10, le=10_000)  # label draws for the estimate's band
    band_rows: int = Field(5_000, ge=100, le=1_000_000)  # rows drawn from a larger period for the band
    #: the estimate recalibrates the scores (isotonic) only when that lowers the reference's
    #: calibration error by more than this; an isotonic map of already calibrated scores adds noise
    recalibrate_margin: float = Field(0.01, ge=0, le=1)
    #: bootstrap refits of the isotonic map, whose spread widens the band by the calibration's uncertainty
    calibration_refits: int = Field(20, ge=0, le=1_000)
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Target:
    """What a version predicts, read from its output schema."""

    task: Task
    classes: tuple[str, ...] = ()  # in the order of its score columns
    scores: tuple[str, ...] = ()  # the proba_<class> output columns
    prediction: str | None = None  # the predicted class / value column, when logged

    @property
    def positive(self) -> str | None:
        return self.classes[-1] if self.task is Task.BINARY else None


def target_of(outputs: Sequence[OutputField], ref: str) -> Target:
    """Classifier (``proba_<class>`` outputs) or regressor (a numeric ``prediction``), or the reason not."""
    scores = tuple(o.name for o in outputs if o.name.startswith(PROBA_PREFIX))
    names = {o.name: o for o in outputs}
    prediction = names.get("prediction")
    if len(scores) >= 2:
        classes = tuple(s[len(PROBA_PREFIX) :] for s in scores)
        task = Task.BINARY if len(scores) == 2 else Task.MULTICLASS
        return Target(task, classes, scores, prediction.name if prediction else None)
    if prediction is not None and prediction.type in (FeatureType.FLOAT, FeatureType.INT) and not scores:
        return Target(Task.REGRESSION, prediction="prediction")
    raise InvalidInputError(
        f"{ref} has no outputs performance can be measured on: expected proba_<class> scores (a classifier) "
        "or a numeric prediction (a regressor)"
    )


# -- results -----------------------------------------------------------------------------------------------


class Estimate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float | None
    low: float | None = None
    high: float | None = None


class Lag(BaseModel):
    """Label lag in days over a period's labelled rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    median_days: float
    p90_days: float
    max_days: float
    before_prediction: int = 0  # labels observed before their prediction was made


class PeriodPerformance(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start: dt.date | None  # None: the whole window
    end: dt.date | None
    predictions: int
    labelled: int
    matched_share: float
    lag: Lag | None = None
    realized: dict[str, float | None] = Field(default_factory=dict)
    estimated: dict[str, Estimate] = Field(default_factory=dict)
    source: Source = Source.NONE
    #: the headline metric's figure: realized when complete enough, else estimated
    figure: float | None = None


class Calibration(BaseModel):
    """The reference the estimate is calibrated on, and how calibrated it is there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str
    sha256: str | None
    rows: int
    positives: int
    error_raw: float  # calibration error of the model's own scores on the reference
    error_calibrated: float  # of the isotonic-calibrated scores, cross-fitted (two folds)
    recalibrated: bool  # whether the estimate uses the isotonic map (else the scores as they are)


class LabelsUsed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str | None = None
    batches: list[str] = Field(default_factory=list)  # the label batches' digests, oldest first
    stored: int = 0  # distinct labelled ids of the model
    matched: int = 0  # of them, matched to a prediction of this version in the window


class PerformanceResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = RESULT_FORMAT
    subject: Subject
    task: Task
    classes: list[str] = Field(default_factory=list)
    positive_class: str | None = None
    headline: str
    by: Period
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    computed_at: dt.datetime
    settings: PerformanceSettings
    labels: LabelsUsed
    overall: PeriodPerformance
    periods: list[PeriodPerformance]
    calibration: Calibration | None = None
    definitions: dict[str, str]
    notes: list[str] = Field(default_factory=list)

    def canonical_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)

    def to_json(self) -> str:
        return self.canonical_json().decode()

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json()).hexdigest()


# -- realized metrics ----------------------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def calibration_error(y: np.ndarray, score: np.ndarray, bins: int) -> float:
    """Expected calibration error over ``bins`` equal-width bins (the binning of sklearn's
    ``calibration_curve(strategy="uniform")``, weighted by the rows in each bin)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    ids = np.searchsorted(edges[1:-1], score)
    total = np.bincount(ids, minlength=bins)
    positives = np.bincount(ids, weights=y, minlength=bins)
    scores = np.bincount(ids, weights=score, minlength=bins)
    used = total > 0
    return float(np.abs(positives[used] - scores[used]).sum() / max(len(y), 1))


def predicted_binary(target: Target, score: np.ndarray, predicted: np.ndarray | None, threshold: float) -> np.ndarray:
    if predicted is not None:
        return (predicted == target.positive).astype(np.int8)
    return (score >= threshold).astype(np.int8)


def realized(
    target: Target,
    labels: np.ndarray,
    scores: np.ndarray | None,
    predicted: np.ndarray | None,
    settings: PerformanceSettings,
) -> dict[str, float | None]:
    """The task's metrics on labelled rows: ``labels`` (class names / values), ``scores``
    (n, classes) for a classifier, ``predicted`` the logged predictions (classes or values)."""
    if not len(labels):
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if target.task is Task.REGRESSION:
            y, p = labels.astype(np.float64), predicted.astype(np.float64)  # type: ignore[union-attr]
            return {
                "mae": float(skm.mean_absolute_error(y, p)),
                "rmse": float(skm.root_mean_squared_error(y, p)),
                "r2": _finite(skm.r2_score(y, p)) if len(y) > 1 else None,
            }
        assert scores is not None
        if target.task is Task.BINARY:
            y = (labels == target.positive).astype(np.int8)
            score = scores[:, 1]
            yhat = predicted_binary(target, score, predicted, settings.threshold)
            both = 0 < y.sum() < len(y)
            precision, recall, f1, _ = skm.precision_recall_fscore_support(
                y, yhat, average="binary", labels=[0, 1], zero_division=np.nan
            )
            return {
                "roc_auc": float(skm.roc_auc_score(y, score)) if both else None,
                "accuracy": float(skm.accuracy_score(y, yhat)),
                "precision": _finite(precision),
                "recall": _finite(recall),
                "f1": _finite(f1),
                "log_loss": float(skm.log_loss(y, np.clip(score, 0.0, 1.0), labels=[0, 1])),
                "brier": float(skm.brier_score_loss(y, np.clip(score, 0.0, 1.0), pos_label=1)),
                "calibration_error": calibration_error(y, np.clip(score, 0.0, 1.0), settings.bins),
            }
        classes = list(target.classes)
        proba = np.clip(scores, 0.0, None)
        proba = proba / np.where(proba.sum(axis=1, keepdims=True) > 0, proba.sum(axis=1, keepdims=True), 1.0)
        yhat = predicted if predicted is not None else np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
        present = set(np.unique(labels).tolist())
        precision, recall, f1, _ = skm.precision_recall_fscore_support(
            labels, yhat, labels=classes, average="macro", zero_division=np.nan
        )
        return {
            "roc_auc": float(skm.roc_auc_score(labels, proba, multi_class="ovr", labels=classes))
            if present == set(classes)
            else None,
            "accuracy": float(skm.accuracy_score(labels, yhat)),
            "precision": _finite(precision),
            "recall": _finite(recall),
            "f1": _finite(f1),
            "log_loss": float(skm.log_loss(labels, proba, labels=classes)),
        }


# -- the label-free estimate (CBPE) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibrator:
    """Map from the positive score to P(positive): isotonic, fitted on reference labels, when the
    scores need it; else the scores themselves."""

    model: IsotonicRegression
    calibration: Calibration
    #: the same map refitted on bootstrap resamples of the reference: the band's calibration part
    refits: tuple[IsotonicRegression, ...] = ()

    def __call__(self, score: np.ndarray, model: IsotonicRegression | None = None) -> np.ndarray:
        score = np.asarray(score, dtype=np.float64)
        if not self.calibration.recalibrated:
            return np.clip(score, 0.0, 1.0)
        return np.clip((model or self.model).predict(score), 0.0, 1.0)


def fit_calibrator(
    score: np.ndarray, positive: np.ndarray, *, uri: str, sha256: str | None, settings: PerformanceSettings
) -> Calibrator:
    """Fit on the reference; the calibration error is measured cross-fitted (fit on one half,
    measured on the other), so it says how well the map generalizes, not how well it memorized."""
    score = np.asarray(score, dtype=np.float64)
    y = np.asarray(positive, dtype=np.int8)
    if len(y) < 20 or not 0 < y.sum() < len(y):
        raise InvalidInputError(
            f"the reference {uri} needs at least 20 labelled rows with both classes to calibrate the estimate "
            f"(it has {len(y)} rows, {int(y.sum())} positive)"
        )
    fold = np.random.default_rng(settings.seed).permutation(len(y)) % 2
    crossed = np.empty(len(y))
    for k in (0, 1):
        part = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score[fold != k], y[fold != k])
        crossed[fold == k] = part.predict(score[fold == k])
    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, y)
    raw = calibration_error(y, np.clip(score, 0, 1), settings.bins)
    calibrated = calibration_error(y, crossed, settings.bins)
    calibration = Calibration(
        uri=uri,
        sha256=sha256,
        rows=len(y),
        positives=int(y.sum()),
        error_raw=raw,
        error_calibrated=calibrated,
        recalibrated=bool(raw - calibrated > settings.recalibrate_margin),
    )
    refits = []
    if calibration.recalibrated:
        rng = np.random.default_rng([settings.seed, 1])
        for _ in range(settings.calibration_refits):
            drawn = rng.integers(0, len(y), len(y))
            refit = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            refits.append(refit.fit(score[drawn], y[drawn]))
    return Calibrator(model, calibration, tuple(refits))


def _expected(p: np.ndarray, yhat: np.ndarray, score: np.ndarray) -> dict[str, float | None]:
    """Expected metrics when row i is positive with probability p[i]."""
    tp = float(np.sum(p * yhat))
    fp = float(np.sum((1 - p) * yhat))
    fn = float(np.sum(p * (1 - yhat)))
    tn = float(np.sum((1 - p) * (1 - yhat)))
    n = len(p)
    # the expected AUC: every row a positive of weight p and a negative of weight 1 - p (sklearn does the sums)
    weights = np.concatenate([p, 1 - p])
    auc = None
    if weights[:n].sum() > 0 and weights[n:].sum() > 0:
        auc = float(
            skm.roc_auc_score(
                np.concatenate([np.ones(n), np.zeros(n)]), np.concatenate([score, score]), sample_weight=weights
            )
        )
    return {
        "roc_auc": auc,
        "accuracy": (tp + tn) / n,
        "precision": tp / (tp + fp) if tp + fp > 0 else None,
        "recall": tp / (tp + fn) if tp + fn > 0 else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else None,
    }


def _sampled(y: np.ndarray, yhat: np.ndarray, ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Realized metrics of many draws of labels at once (``y`` is draws x rows), for the band.

    Written out rather than sklearn's per draw because it is the same few sums for every
    draw, done as matrix products (a hundred sklearn calls cost a second a period); the
    AUC is the Mann-Whitney statistic over the scores' mid-ranks (ties count a half), which
    is what ``roc_auc_score`` computes (the core tests check the two agree).
    """
    positives = y.sum(axis=1).astype(np.float64)
    negatives = y.shape[1] - positives
    predicted = float(yhat.sum())
    hits = (y @ yhat).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        correct = hits + (negatives - (predicted - hits))
        return {
            "accuracy": correct / y.shape[1],
            "precision": hits / predicted if predicted else np.full(len(y), np.nan),
            "recall": hits / positives,
            "f1": 2 * hits / (positives + predicted),
            "roc_auc": ((y @ ranks) - positives * (positives + 1) / 2) / (positives * negatives),
        }


def estimate(
    calibrator: Calibrator,
    score: np.ndarray,
    predicted: np.ndarray,
    settings: PerformanceSettings,
    *,
    seed: int = 0,
) -> dict[str, Estimate]:
    """CBPE for one period's rows: ``score`` the positive score, ``predicted`` 0/1 decisions."""
    if not len(score):
        return {}
    p = calibrator(score)
    yhat = np.asarray(predicted, dtype=np.int8)
    values = _expected(p, yhat, np.asarray(score, dtype=np.float64))
    # The band: draw labels from p (on at most band_rows rows), take the spread of the realized
    # figures, and scale it to the period's size (the spread falls as 1/sqrt(rows)); add the
    # spread of the estimate over bootstrap refits of the calibration, which does not fall.
    rng = np.random.default_rng([settings.seed, abs(seed)])
    n = len(p)
    pick = rng.choice(n, settings.band_rows, replace=False) if n > settings.band_rows else np.arange(n)
    scale = np.sqrt(len(pick) / n)
    ps, hs, ss = p[pick], yhat[pick], np.asarray(score, dtype=np.float64)[pick]
    labels = (rng.random((settings.band_draws, len(ps))) < ps).astype(np.float64)
    draws = _sampled(labels, hs.astype(np.float64), rankdata(ss))
    refitted: dict[str, list[float]] = {k: [] for k in ESTIMATED_METRICS}
    for model in calibrator.refits:
        for k, v in _expected(calibrator(ss, model), hs, ss).items():
            refitted[k].append(np.nan if v is None else v)
    out = {}
    for key in ESTIMATED_METRICS:
        value = values[key]
        sample = np.asarray(draws[key])
        sample = sample[np.isfinite(sample)]
        if value is None or len(sample) < settings.band_draws // 2:
            out[key] = Estimate(value=value)
            continue
        spread = np.asarray(refitted[key])
        spread = spread[np.isfinite(spread)]
        calibration_var = float(np.var(spread)) if len(spread) > 1 else 0.0
        half = 1.96 * float(np.sqrt((np.std(sample) * scale) ** 2 + calibration_var))
        out[key] = Estimate(value=value, low=max(0.0, value - half), high=min(1.0, value + half))
    return out


# -- periods ------------------------------------------------------------------------------------------------


def period_starts(timestamps_us: np.ndarray, by: Period) -> np.ndarray:
    """The UTC day, or the Monday of the ISO week, of each timestamp (microseconds since the epoch)."""
    days = (np.asarray(timestamps_us, dtype=np.int64) // 86_400_000_000).astype(np.int64)
    if by is Period.WEEK:
        days = days - (days + 3) % 7  # 1970-01-01 was a Thursday
    return days


def day_to_date(day: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(day))


def lag_of(prediction_us: np.ndarray, label_us: np.ndarray) -> Lag | None:
    if not len(prediction_us):
        return None
    days = (np.asarray(label_us, dtype=np.int64) - np.asarray(prediction_us, dtype=np.int64)) / 86_400e6
    return Lag(
        median_days=round(float(np.median(days)), 4),
        p90_days=round(float(np.quantile(days, 0.9)), 4),
        max_days=round(float(days.max()), 4),
        before_prediction=int(np.sum(days < 0)),
    )
