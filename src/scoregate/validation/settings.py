"""What one validation run is asked to do: one frozen settings object, checked once.

Built from CLI options or Python keywords (:meth:`ValidationSettings.from_keywords`) and
passed down whole, so no option is threaded through signatures and the report records
exactly the settings it ran with. Every value is checked here, before any work: a bad
one is refused with one line naming the setting and the rule.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from scoregate.errors import InvalidInputError


class TargetKind(StrEnum):
    """Where the cases go: the in-process scorer, a JSON endpoint or an Open Inference Protocol V2 one."""

    PYTHON = "python"
    HTTP = "http"
    V2 = "v2"


class ReferenceKind(StrEnum):
    """What every scored row is compared with.

    ``subprocess``: the same artifact loaded in a fresh process (catches what the target's
    process does to the scores: serving code, patches, caches). ``scorer``: a Python file
    the validator wrote independently of the model's code. ``onnx``: the scikit-learn model
    converted with skl2onnx and scored by onnxruntime, a second runtime. ``none``: no reference.
    """

    NONE = "none"
    SUBPROCESS = "subprocess"
    SCORER = "scorer"
    ONNX = "onnx"

    @property
    def independent(self) -> bool:
        """True for references that do not run the model's own code (their own tolerances apply)."""
        return self in (ReferenceKind.SCORER, ReferenceKind.ONNX)


#: Parity with the same artifact in another process: the same code on the same inputs,
#: so anything beyond float formatting noise is a difference.
DEFAULT_ATOL = 1e-6
DEFAULT_RTOL = 1e-6
#: Parity with an independent reference. ONNX Runtime computes in float32: on the demo's
#: 5,000 applicants (``benchmarks/independent_reference.py``) the largest differences from
#: scikit-learn were 1.2e-7 (logistic regression) and 3.1e-7 (gradient boosting) on a
#: probability, with relative ones up to 2e-6; 4e-3 on a ridge regression of incomes
#: near 50,000, which is 8e-8 relative. These bounds leave 40x or more on each (the worst
#: difference is 2.5% of atol + rtol*|reference|), and 1e-5 of a probability is far below
#: any decision. Random forests are not covered: their float32 split thresholds send 4%
#: of those rows down other branches (differences up to 0.06), which parity reports.
DEFAULT_INDEPENDENT_ATOL = 1e-5
DEFAULT_INDEPENDENT_RTOL = 1e-5
#: Generous: a normal run of the demo model takes seconds; this only bounds a hang.
DEFAULT_MAX_DURATION_S = 1800.0
#: The reference process gets this long to start and load (or convert) the model ...
REFERENCE_LOAD_S = 120.0
#: ... then this many per-case timeouts to score every compared row in one call.
REFERENCE_CALL_FACTOR = 3.0


@dataclass(frozen=True)
class ValidationSettings:
    """Every knob of a validation run; see the README's validation section for each."""

    target: TargetKind = TargetKind.PYTHON
    reference: ReferenceKind = ReferenceKind.SUBPROCESS
    #: the validator's scorer file, for ``reference=scorer``
    reference_scorer: Path | None = None
    #: golden file of inputs and expected outputs (compared in addition to the reference)
    golden: Path | None = None
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    independent_atol: float = DEFAULT_INDEPENDENT_ATOL
    independent_rtol: float = DEFAULT_INDEPENDENT_RTOL
    #: seconds one call of the target may take before it counts as hung
    timeout_s: float = 10.0
    #: seconds the whole run may take; what is left unrun is reported as not run
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    #: per-case latency budget; None: the version's own (resolved before the run)
    latency_budget_ms: float | None = None
    #: repeated calls over which memory growth is measured (after a warm-up)
    memory_calls: int = 20
    #: RSS growth over those calls above which the memory check fails
    memory_limit_mb: float = 50.0
    seed: int = 0
    #: reference rows sampled into the ``reference:sample`` case
    reference_rows: int = 100

    def __post_init__(self) -> None:
        _coerce(self, "target", TargetKind)
        _coerce(self, "reference", ReferenceKind)
        for name in ("reference_scorer", "golden"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        for name in ("atol", "rtol", "independent_atol", "independent_rtol"):
            _number(name, getattr(self, name), minimum=0.0)
        for absolute, relative in (("atol", "rtol"), ("independent_atol", "independent_rtol")):
            if getattr(self, absolute) == 0 and getattr(self, relative) == 0:
                raise InvalidInputError(
                    f"invalid {absolute}/{relative}: both are 0; a float comparison needs a tolerance "
                    "(give a tiny one, e.g. 1e-12, for near-exact)"
                )
        for name in ("timeout_s", "max_duration_s", "memory_limit_mb"):
            _number(name, getattr(self, name), positive=True)
        if self.latency_budget_ms is not None:
            _number("latency_budget_ms", self.latency_budget_ms, positive=True)
        _integer("memory_calls", self.memory_calls, minimum=2)
        _integer("reference_rows", self.reference_rows, minimum=1)
        _integer("seed", self.seed, minimum=0)
        if self.reference is ReferenceKind.SCORER and self.reference_scorer is None:
            raise InvalidInputError("invalid reference 'scorer': give the scorer file (--reference-scorer FILE)")
        if self.reference_scorer is not None and self.reference is not ReferenceKind.SCORER:
            raise InvalidInputError(
                f"invalid reference_scorer: a scorer file is used with reference 'scorer', not {self.reference.value!r}"
            )

    @classmethod
    def from_keywords(cls, **keywords: Any) -> ValidationSettings:
        """Settings from Python keywords; ``timeout`` is accepted for ``timeout_s`` (the older name)."""
        if "timeout" in keywords:
            keywords["timeout_s"] = keywords.pop("timeout")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(keywords) - names)
        if unknown:
            raise InvalidInputError(f"unknown validation setting(s): {', '.join(unknown)}")
        return cls(**keywords)

    def resolved(self, *, target: TargetKind, latency_budget_ms: float) -> ValidationSettings:
        """These settings with what the run learns before it starts: the target and the version's budget."""
        budget = self.latency_budget_ms if self.latency_budget_ms is not None else latency_budget_ms
        return dataclasses.replace(self, target=target, latency_budget_ms=budget)

    def tolerance(self, reference: ReferenceKind) -> tuple[float, float]:
        """(atol, rtol) for comparing with ``reference``: an independent one has its own."""
        if reference.independent:
            return self.independent_atol, self.independent_rtol
        return self.atol, self.rtol


def _coerce(settings: ValidationSettings, name: str, kind: type[StrEnum]) -> None:
    value = getattr(settings, name)
    try:
        object.__setattr__(settings, name, kind(value))
    except ValueError:
        choices = ", ".join(k.value for k in kind)  # type: ignore[attr-defined]
        raise InvalidInputError(f"invalid {name} {value!r}: use {choices}") from None


def _number(name: str, value: Any, *, minimum: float | None = None, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(f"invalid {name} {value!r}: must be a finite number")
    if positive and value <= 0:
        raise InvalidInputError(f"invalid {name} {value!r}: must be greater than 0")
    if minimum is not None and value < minimum:
        raise InvalidInputError(f"invalid {name} {value!r}: must be at least {minimum:g}")


def _integer(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"invalid {name} {value!r}: must be a whole number")
    if value < minimum:
        raise InvalidInputError(f"invalid {name} {value!r}: must be at least {minimum}")


class Clock:
    """The run's wall-clock bound: how long is left, and the timeout a call may have within it."""

    def __init__(self, max_duration_s: float) -> None:
        self.max_duration_s = max_duration_s
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return max(0.0, self.max_duration_s - self.elapsed())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def bound(self, timeout: float) -> float:
        """``timeout``, cut to what the run has left."""
        return min(timeout, self.remaining())

    def stop_reason(self) -> str:
        return f"the run reached its bound of {self.max_duration_s:g} s (max_duration_s)"


__all__ = ["Clock", "ReferenceKind", "TargetKind", "ValidationSettings"]
