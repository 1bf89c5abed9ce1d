"""Where a version came from: its training data, its code and its environment."""

from __future__ import annotations

import importlib.metadata as metadata
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from scoregate.errors import InvalidInputError
from scoregate.registry.artifacts import sha256_file

READERS = {
    ".csv": pd.read_csv,
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
    ".json": pd.read_json,
    ".jsonl": lambda path: pd.read_json(path, lines=True),
}


def read_table(path: Path, *, what: str = "data file") -> pd.DataFrame:
    """Read a CSV, Parquet, JSON or JSON Lines file into a frame, or fail with one clear line."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise InvalidInputError(
            f"cannot read {what} {path}: unsupported extension {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(READERS)}"
        )
    if not path.is_file():
        raise InvalidInputError(f"cannot read {what} {path}: no such file")
    try:
        frame = reader(path)
    except Exception as exc:  # every reader raises its own family of errors
        raise InvalidInputError(f"cannot read {what} {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInputError(f"cannot read {what} {path}: it does not hold a table of rows")
    if frame.empty:
        raise InvalidInputError(f"{what} {path} has no rows")
    return frame


@dataclass(frozen=True)
class TrainingData:
    uri: str
    digest: str
    rows: int
    frame: pd.DataFrame


def describe_training_data(path: Path) -> TrainingData:
    """Read the training file and fingerprint all of it (full SHA-256, streamed)."""
    path = Path(path).expanduser()
    frame = read_table(path, what="training data")
    return TrainingData(uri=str(path.absolute()), digest=sha256_file(path), rows=len(frame), frame=frame)


def git_commit(directory: Path | None = None) -> tuple[str | None, bool | None]:
    """The commit of the caller's working directory and whether it has uncommitted changes."""
    cwd = Path(directory or Path.cwd())
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
        if head.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip())


def environment(packages: tuple[str, ...]) -> dict[str, Any]:
    """Python, platform, the flavor's packages and a full lock of what is installed."""
    installed = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            installed[_canonical(name)] = dist.version
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "os": platform.system(),
        "os_release": platform.release(),
        "machine": platform.machine(),
        "flavor_packages": {p: installed.get(_canonical(p)) for p in packages},
        "lock": dict(sorted(installed.items())),
    }


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")
