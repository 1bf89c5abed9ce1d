"""The bounds of the commands, and the rules for numbers that cross a boundary, one message each.

Services check their arguments with these (so the Python API refuses what the CLI
refuses), and the CLI attaches the same rules to its options (``cli.app.rule``), where the
message names the option as the user typed it.
"""

from __future__ import annotations

import math

from scoregate.errors import InvalidInputError

#: Seconds a model may take to load and answer when a command runs it (register, profile,
#: the start of a load test's server); every such command takes ``--timeout``.
DEFAULT_MODEL_TIMEOUT_S = 120.0
#: Seconds one profiled request may take before the model counts as hung.
DEFAULT_CALL_TIMEOUT_S = 30.0
#: Requests one profile may make, rows one request may carry (profile, loadtest).
MAX_PROFILED_REQUESTS = 100_000
MAX_ROWS_PER_REQUEST = 10_000
#: The longest timeout or interval any command takes, and the largest latency budget.
MAX_SECONDS = 7 * 24 * 3600.0
MAX_BUDGET_MS = 3600 * 1000.0
#: Rows one profile may build (requests times rows per request): what it holds in memory.
MAX_PROFILED_ROWS = 1_000_000
#: A load test's simulated users, target rate and length.
MAX_USERS = 1_000
MAX_RPS = 100_000.0
MAX_DURATION_S = 24 * 3600.0


def _shown(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def finite(name: str, value: float) -> float:
    """``value`` if it is a finite number (not nan, not ±inf)."""
    if not math.isfinite(value):
        raise InvalidInputError(f"invalid {name} {_shown(value)}: must be a finite number")
    return value


def positive(name: str, value: float, unit: str = "", at_most: float = math.inf) -> float:
    """``value`` if it is a finite number above 0 (and at most ``at_most``)."""
    if not (math.isfinite(value) and 0 < value <= at_most):
        of = f" of {unit}" if unit else ""
        most = f", at most {_shown(at_most)}" if math.isfinite(at_most) else ""
        raise InvalidInputError(f"invalid {name} {_shown(value)}: must be a positive, finite number{of}{most}")
    return value


def seconds(name: str, value: float) -> float:
    """A timeout or an interval: above 0 and at most a week (a bound that is no bound is refused)."""
    return positive(name, value, "seconds", MAX_SECONDS)


def milliseconds(name: str, value: float) -> float:
    """A latency budget: above 0 and at most an hour."""
    return positive(name, value, "ms", MAX_BUDGET_MS)


def at_least(name: str, value: int, low: int) -> int:
    """``value`` if it is at least ``low``."""
    if value < low:
        raise InvalidInputError(f"invalid {name} {_shown(value)}: must be at least {low}")
    return value


def at_most(name: str, value: float, high: float) -> float:
    """``value`` if it is at most ``high``."""
    if not value <= high:
        raise InvalidInputError(f"invalid {name} {_shown(value)}: must be at most {_shown(high)}")
    return value


def between(name: str, value: float, low: float, high: float, unit: str = "") -> float:
    """``value`` if ``low <= value <= high`` (so also not nan)."""
    if not (low <= value <= high):
        of = f" {unit}" if unit else ""
        raise InvalidInputError(f"invalid {name} {_shown(value)}: must be from {_shown(low)} to {_shown(high)}{of}")
    return value
