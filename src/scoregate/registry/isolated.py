"""Loading and scoring a registered model where a hang can be stopped.

Registration loads the artifact with its flavor and scores a sample of its training data:
the model accepts its own schema, and what it returns gives the output schema. ``scoregate
predict`` loads a version and scores a file. All of it runs the model's code, so it runs in
the model worker (:mod:`scoregate.isolation`) under the command's timeout: a model that hangs
is stopped, registration stores nothing, and the caller's process is left as it was (no
stuck thread, no half-imported module). The registry needs nothing of the loaded scorer
afterwards but these answers, so it never loads the model in its own process for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from scoregate import isolation
from scoregate.errors import FlavorError, ModelTimeoutError, ScoregateError

#: Training rows scored at registration.
SAMPLE_ROWS = 100


@dataclass(frozen=True)
class Trial:
    """What the worker found: the flavor that scored (an MLflow model delegates to the one
    inside it), the outputs for the sample (None when there was no sample) and the input
    columns whose unknown category levels the model takes (:meth:`Scorer.accepts_unseen`)."""

    scorer_flavor: str
    outputs: pd.DataFrame | None
    accepts_unseen: frozenset[str] = frozenset()
    #: what the loaded artifact needs beyond its flavor's packages (``Scorer.packages``)
    packages: tuple[str, ...] = ()


def try_artifact(flavor: str, artifact: Path, sample: pd.DataFrame | None, *, timeout: float) -> Trial:
    """Load ``artifact`` with ``flavor`` and score ``sample``, within ``timeout`` seconds."""
    payload = {"flavor": flavor, "artifact": str(Path(artifact).resolve()), "sample": sample}
    try:
        trial: Trial = isolation.call(
            "scoregate.registry.isolated:_trial", payload, timeout=timeout, what=f"the {flavor} model"
        )
    except ModelTimeoutError as exc:
        rows = len(sample) if sample is not None else 0
        doing = "load" if exc.ticks == 0 else f"score {rows} rows of its training data"
        raise ModelTimeoutError(
            f"the {flavor} model did not {doing} within {exc.seconds:g} s: registration refused, nothing stored",
            seconds=exc.seconds,
            ticks=exc.ticks,
        ) from None
    if trial.outputs is not None and sample is not None and len(trial.outputs) != len(sample):
        raise FlavorError(f"the {flavor} model returned {len(trial.outputs)} rows for {len(sample)}")
    return trial


def _trial(payload: dict[str, Any], progress: isolation.Progress) -> Trial:
    """In the worker: load, tick, score."""
    from scoregate.flavors import get_flavor
    from scoregate.flavors._outputs import one_line

    flavor = payload["flavor"]
    scorer = get_flavor(flavor).load(Path(payload["artifact"]))
    progress.tick()
    try:
        tolerant = frozenset(scorer.accepts_unseen())
    except Exception:  # introspection of an odd object: the categories stay closed
        tolerant = frozenset()
    sample = payload["sample"]
    if sample is None:
        return Trial(scorer.flavor, None, tolerant, tuple(scorer.packages))
    try:
        outputs = scorer.predict(sample)
    except ScoregateError:
        raise
    except Exception as exc:
        raise FlavorError(f"the {flavor} model could not score rows of its training data: {one_line(exc)}") from None
    return Trial(scorer.flavor, outputs, tolerant, tuple(scorer.packages))


def predict(registry: Any, version: Any, frame: pd.DataFrame, *, timeout: float) -> pd.DataFrame:
    """Score ``frame`` (already validated against the schema) with ``version``, within ``timeout`` s."""
    artifact = registry.artifacts.materialize(version.artifact_digest, version.artifact_kind, version.artifact_name)
    payload = {"flavor": version.flavor, "artifact": str(artifact), "frame": frame}
    try:
        return isolation.call("scoregate.registry.isolated:_predict", payload, timeout=timeout, what=version.ref)
    except ModelTimeoutError as exc:
        doing = "load" if exc.ticks == 0 else f"score {len(frame)} rows"
        raise ModelTimeoutError(
            f"{version.ref} did not {doing} within {exc.seconds:g} s; it was stopped", seconds=exc.seconds
        ) from None


def _predict(payload: dict[str, Any], progress: isolation.Progress) -> pd.DataFrame:
    from scoregate.flavors import get_flavor

    scorer = get_flavor(payload["flavor"]).load(Path(payload["artifact"]))
    progress.tick()
    return scorer.predict(payload["frame"])
