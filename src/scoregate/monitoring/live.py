"""Live monitoring windows: what the scoring server counted, per version, per tumbling window.

A worker counts the rows it scores into one :class:`Window` per model version, over the
reference profile's bins with the same :class:`~scoregate.monitoring.counts.Accumulator`
that batch monitoring uses, so the figures of the same rows are the same both ways. A
window is ``length`` seconds of wall-clock time aligned on multiples of it (a 300 s
window starts at 12:00, 12:05, ...); when it ends the worker writes it to a file of its
own (atomically: a temporary file, fsync, rename), so a crash loses at most the window
being counted, and workers never write the same file.

The files are the history: :func:`read_windows` returns a version's windows, those of
every worker that ended in the same span merged, oldest first; :func:`figures` compares
the merged windows of a span with the reference profile through
:func:`~scoregate.monitoring.drift.compare`, the function behind ``monitor drift``.

Layout: ``FOLDER/<model>/<version>/<start>-<length>-<worker>.json``, ``start`` the
window's start in epoch seconds. A file holds canonical JSON (``scoregate-window/1``):
the version, the profile digest its bins come from, the counts of inputs and outputs,
and the data-quality counts the drift result does not hold (values refused by the
schema's validity rules, per feature).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import orjson

from scoregate.errors import InvalidInputError
from scoregate.monitoring.counts import Accumulator, Kind
from scoregate.monitoring.drift import CurrentData, DriftResult, DriftSettings, compare
from scoregate.monitoring.profile import ReferenceProfile, Role

WINDOW_FORMAT = "scoregate-window/1"
_NAME = re.compile(r"^(\d{1,12})-(\d{1,9})-([0-9A-Za-z_]{1,64})\.json$")


class Quality(StrEnum):
    """The data-quality counts of a feature, each a share of the window's rows."""

    MISSING = "missing"  # null or NaN
    OUT_OF_RANGE = "out_of_range"  # below the reference minimum or above its maximum
    UNSEEN_CATEGORY = "unseen_category"  # not among the profile's levels
    INVALID = "invalid"  # +-inf in a numeric feature
    REFUSED = "refused"  # broke a validity rule of the schema: the request was refused


def window_start(now: float, length: int) -> int:
    return int(now // length) * length


@dataclass
class Window:
    """One version's counts over ``[start, start + length)`` from one worker (or several, merged)."""

    model: str
    version: int
    profile_digest: str
    start: int
    length: int
    inputs: Accumulator
    outputs: Accumulator | None
    refused: dict[str, int] = field(default_factory=dict)  # feature -> values refused by a validity rule
    refused_rows: int = 0
    workers: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls, profile: ReferenceProfile, digest: str, start: int, length: int, worker: str) -> Window:
        subject = profile.subject
        if subject is None:
            raise InvalidInputError("a reference profile without its version cannot be monitored live")
        outputs = profile.accumulator(Role.OUTPUT) if profile.role(Role.OUTPUT) else None
        return cls(
            model=subject.model,
            version=subject.version,
            profile_digest=digest,
            start=start,
            length=length,
            inputs=profile.accumulator(Role.INPUT),
            outputs=outputs,
            workers=[worker],
        )

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def rows(self) -> int:
        return self.inputs.rows

    @property
    def seen(self) -> int:
        """Rows scored or refused: the denominator of the quality shares."""
        return self.inputs.rows + self.refused_rows

    def matches(self, profile: ReferenceProfile) -> bool:
        """Whether this window was counted over ``profile``'s bins (a file may have been edited)."""
        outputs = profile.accumulator(Role.OUTPUT).bins if profile.role(Role.OUTPUT) else None
        return self.inputs.bins == profile.accumulator(Role.INPUT).bins and (
            (self.outputs.bins if self.outputs is not None else None) == outputs
        )

    def merge(self, other: Window) -> Window:
        if (other.model, other.version, other.profile_digest) != (self.model, self.version, self.profile_digest):
            raise InvalidInputError("cannot merge windows of different versions or profiles")
        if self.inputs.bins != other.inputs.bins or (self.outputs is None) != (other.outputs is None):
            raise InvalidInputError("cannot merge windows binned differently")
        self.inputs.merge(other.inputs)
        if self.outputs is not None and other.outputs is not None:
            self.outputs.merge(other.outputs)
        for name, n in other.refused.items():
            self.refused[name] = self.refused.get(name, 0) + n
        self.refused_rows += other.refused_rows
        self.start = min(self.start, other.start)
        self.length = max(self.end, other.end) - self.start
        self.workers = sorted({*self.workers, *other.workers})
        return self

    def quality(self, profile: ReferenceProfile) -> dict[str, dict[Quality, float | None]]:
        """Per input feature, the share of the window's rows in each quality kind."""
        out: dict[str, dict[Quality, float | None]] = {}
        seen = self.seen
        for column in profile.role(Role.INPUT):
            counted = self.inputs.columns[column.name]
            shares: dict[Quality, float | None] = {
                Quality.MISSING: _share(counted.nulls, seen),
                Quality.REFUSED: _share(self.refused.get(column.name, 0), seen),
            }
            if column.kind is Kind.NUMERIC and len(column.edges) >= 2:
                # the first fine bin lies below the reference minimum, the last above its maximum
                shares[Quality.OUT_OF_RANGE] = _share(int(counted.counts[0] + counted.counts[-1]), seen)
                shares[Quality.INVALID] = _share(counted.invalid, seen)
            elif column.kind is Kind.CATEGORICAL:
                shares[Quality.UNSEEN_CATEGORY] = _share(int(counted.counts[-1]), seen)
            out[column.name] = shares
        return out

    # -- files -----------------------------------------------------------------------------------

    def to_json(self) -> bytes:
        document = {
            "format": WINDOW_FORMAT,
            "model": self.model,
            "version": self.version,
            "profile_digest": self.profile_digest,
            "start": self.start,
            "length": self.length,
            "workers": self.workers,
            "inputs": self.inputs.to_dict(),
            "outputs": self.outputs.to_dict() if self.outputs is not None else None,
            "refused": self.refused,
            "refused_rows": self.refused_rows,
        }
        return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, text: bytes) -> Window:
        try:
            data = orjson.loads(text)
            if not isinstance(data, dict) or data.get("format") != WINDOW_FORMAT:
                raise ValueError(f"not a {WINDOW_FORMAT} document")
            outputs = data.get("outputs")
            window = cls(
                model=str(data["model"]),
                version=int(data["version"]),
                profile_digest=str(data["profile_digest"]),
                start=int(data["start"]),
                length=int(data["length"]),
                inputs=Accumulator.from_dict(data["inputs"]),
                outputs=Accumulator.from_dict(outputs) if outputs is not None else None,
                refused={str(k): int(v) for k, v in dict(data.get("refused", {})).items()},
                refused_rows=int(data.get("refused_rows", 0)),
                workers=[str(w) for w in data.get("workers", [])],
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"invalid window document: {exc}") from None
        if window.length <= 0 or window.refused_rows < 0 or any(v < 0 for v in window.refused.values()):
            raise InvalidInputError("invalid window document: negative length or counts")
        return window


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# -- the folder ---------------------------------------------------------------------------------


def live_folder(home: Path) -> Path:
    """Where a registry home's servers write their live windows."""
    return Path(home) / "monitoring" / "live"


def version_folder(folder: Path, model: str, version: int) -> Path:
    if not model or "/" in model or "\\" in model or model in (".", "..") or "\x00" in model:
        raise InvalidInputError(f"invalid model name {model[:80]!r} for a live window folder")
    return Path(folder) / model / str(int(version))


def write_window(folder: Path, window: Window, worker: str) -> Path:
    """Write ``window`` atomically as this worker's file for its start; returns the path."""
    target = version_folder(folder, window.model, window.version)
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = target / f"{window.start}-{window.length}-{worker}.json"
    handle, temporary = tempfile.mkstemp(dir=target, prefix=".window-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(window.to_json())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _sync_folder(target)
    return path


def _sync_folder(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class WindowFile:
    path: Path
    start: int
    length: int
    worker: str

    @property
    def end(self) -> int:
        return self.start + self.length


def list_windows(folder: Path, model: str, version: int) -> list[WindowFile]:
    """The window files of a version, oldest first (stray names are ignored)."""
    where = version_folder(folder, model, version)
    try:
        entries = list(os.scandir(where))
    except OSError:
        return []
    found = []
    for entry in entries:
        match = _NAME.match(entry.name)
        if match:
            found.append(WindowFile(Path(entry.path), int(match[1]), int(match[2]), match[3]))
    return sorted(found, key=lambda f: (f.start, f.worker))


def _epoch(value: dt.datetime | float | None) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def read_windows(
    folder: Path,
    model: str,
    version: int,
    *,
    since: dt.datetime | float | None = None,
    until: dt.datetime | float | None = None,
    profile_digest: str | None = None,
    profile: ReferenceProfile | None = None,
) -> list[Window]:
    """A version's windows that started at or after ``since`` and ended by ``until``, one per
    start (the workers' files merged), oldest first. Unreadable files are skipped (a window
    being written is a temporary file until it is whole); with ``profile``, so are windows
    not counted over its bins (an edited file), and only its windows are kept."""
    low, high = _epoch(since), _epoch(until)
    if profile is not None:
        profile_digest = profile_digest or profile.digest()
    merged: dict[int, Window] = {}
    for entry in list_windows(folder, model, version):
        if (low is not None and entry.start < low) or (high is not None and entry.end > high):
            continue
        try:
            window = Window.from_json(entry.path.read_bytes())
        except (OSError, InvalidInputError):
            continue
        if profile_digest is not None and window.profile_digest != profile_digest:
            continue
        if profile is not None and not window.matches(profile):
            continue
        held = merged.get(entry.start)
        if held is None:
            merged[entry.start] = window
        elif held.profile_digest == window.profile_digest:
            with contextlib.suppress(InvalidInputError):  # a hand-edited file binned otherwise: left out
                held.merge(window)
    return [merged[k] for k in sorted(merged)]


def combine(windows: Iterable[Window]) -> Window | None:
    """Every window merged into one (a span), or None for no window."""
    total: Window | None = None
    for window in windows:
        if total is None:
            total = Window.from_json(window.to_json())  # a copy: the caller's windows stay as they were
        else:
            total.merge(window)
    return total


def figures(
    profile: ReferenceProfile,
    window: Window,
    *,
    settings: DriftSettings | None = None,
    profile_digest: str | None = None,
) -> DriftResult:
    """The drift result of a (combined) window against ``profile``: ``monitor drift``'s computation."""
    current = CurrentData(
        source="live",
        rows=window.rows,
        since=dt.datetime.fromtimestamp(window.start, dt.UTC),
        until=dt.datetime.fromtimestamp(window.end, dt.UTC),
    )
    return compare(
        profile,
        window.inputs,
        window.outputs,
        current=current,
        settings=settings,
        profile_digest=profile_digest or window.profile_digest,
    )


def prune(folder: Path, model: str, version: int, older_than: float) -> int:
    """Delete the version's window files that ended before ``older_than`` (epoch seconds)."""
    removed = 0
    for entry in list_windows(folder, model, version):
        if entry.end < older_than:
            with contextlib.suppress(OSError):
                entry.path.unlink()
                removed += 1
    return removed


def worker_name(text: str) -> str:
    """A worker id safe in a file name."""
    cleaned = re.sub(r"[^0-9A-Za-z_]", "_", text)[:64]
    return cleaned or "worker"
