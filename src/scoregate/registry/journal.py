"""The prediction log's journal: what makes a decision durable before its response goes out.

Each server worker appends its decisions to its own journal, a sequence of append-only
segment files under ``<predictions>/.journal/``::

    <owner>.lock                  held (flock) by the live worker that owns the segments
    <owner>-00000001.journal      records: [payload length][crc32][payload] ...

The server writes the records of a loop turn with one ``write`` and, in ``sync``
durability, one ``fdatasync`` (group commit), and only then sends their responses. At
every flush the prediction log rotates to a new segment and compacts the old one's
rows into Parquet; the segment is deleted only once those Parquet files and their
folders are synced. The Parquet files a segment yields are named after the segment, so
compacting it again (after a crash at any point of the first attempt) rewrites the same
files instead of adding rows twice.

A worker killed with ``kill -9`` leaves its lock released (the kernel drops flocks with
the process) and its segments behind; any other worker of the same log, or the next one
to start, claims them by taking the lock and compacts them. A record cut short by the
crash fails its length or checksum and ends the replay of its segment: it was never
synced, so it was never answered.

The payload is JSON built from the rows' already encoded JSON, so appending costs a few
byte joins and a CRC, not a second encoding:
``[timestamp, model, version, request_id, client_request_id, route, shadow, latency_ms,
first_row, [inputs...], [outputs...]]`` (a large request is logged in slices, each
numbering its rows from ``first_row``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from scoregate.files import fsync_dir, open_private, private_dir

log = logging.getLogger("scoregate.predictions")

HEADER = struct.Struct("<II")  # payload length, crc32 of the payload
#: The largest payload a reader accepts: a length beyond it is a torn or damaged header.
MAX_PAYLOAD = 1 << 30
JOURNAL_DIR = ".journal"
_SEGMENT = re.compile(r"^(?P<owner>[0-9a-zA-Z_]+)-(?P<number>\d{8})\.journal$")


def encode_record(
    timestamp: float,
    model: str,
    version: int,
    request_id: str,
    client_request_id: str | None,
    route: str,
    shadow: bool,
    latency_ms: float,
    first_row: int,
    inputs: list[bytes],
    outputs: list[bytes],
) -> bytes:
    """One request's rows as a framed journal record (``inputs``/``outputs``: JSON per row)."""
    head = orjson.dumps(
        [timestamp, model, version, request_id, client_request_id, route, shadow, latency_ms, first_row]
    )
    if len(inputs) == 1:
        payload = b"".join((head[:-1], b",[", inputs[0], b"],[", outputs[0], b"]]"))
    else:
        payload = b"".join((head[:-1], b",[", b",".join(inputs), b"],[", b",".join(outputs), b"]]"))
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True, slots=True)
class Entry:
    """A decoded journal record."""

    timestamp: float
    model: str
    version: int
    request_id: str
    client_request_id: str | None
    route: str
    shadow: bool
    latency_ms: float
    first_row: int
    inputs: list[bytes]
    outputs: list[bytes]


def read_segment(path: Path) -> tuple[list[Entry], int]:
    """The intact records of a segment, and how many trailing bytes were cut short or damaged."""
    data = path.read_bytes()
    entries: list[Entry] = []
    offset, size = 0, len(data)
    dumps = orjson.dumps
    while offset + HEADER.size <= size:
        length, crc = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        if length > MAX_PAYLOAD or start + length > size:
            break
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            break
        try:
            ts, model, version, request_id, client_id, route, shadow, latency, first, inputs, outputs = orjson.loads(
                payload
            )
        except (orjson.JSONDecodeError, ValueError):
            break
        entries.append(
            Entry(
                float(ts),
                str(model),
                int(version),
                str(request_id),
                client_id,
                str(route),
                bool(shadow),
                float(latency),
                int(first),
                [dumps(v) for v in inputs],
                [dumps(v) for v in outputs],
            )
        )
        offset = start + length
    return entries, size - offset


class Segment:
    """One journal file open for appending."""

    __slots__ = ("fd", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)

    @property
    def stem(self) -> str:
        return self.path.stem

    def write(self, data: bytes, *, sync: bool) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        if sync:
            os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Journal:
    """One worker's journal: its lock and the segment being appended to."""

    def __init__(self, folder: Path, owner: str) -> None:
        if not re.fullmatch(r"[0-9a-zA-Z_]+", owner):
            raise ValueError(f"journal owner {owner!r}: letters, digits and _ only")
        self.folder = Path(folder)
        self.owner = owner
        private_dir(self.folder)
        self._lock_path = self.folder / f"{owner}.lock"
        self._lock_fd = open_private(self._lock_path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._number = 0
        self.segment = self.new_segment()

    def new_segment(self) -> Segment:
        """A new, empty segment whose directory entry is durable (a synced record in it stays findable)."""
        self._number += 1
        segment = Segment(self.folder / f"{self.owner}-{self._number:08d}.journal")
        fsync_dir(self.folder)
        return segment

    def close(self) -> None:
        """Close and remove the current segment (it must hold nothing uncompacted) and the lock."""
        self.segment.close()
        self.segment.path.unlink(missing_ok=True)
        self._lock_path.unlink(missing_ok=True)
        os.close(self._lock_fd)


@contextlib.contextmanager
def claim(folder: Path, owner: str) -> Iterator[bool]:
    """Hold ``owner``'s lock if its worker is gone (True), else yield False at once."""
    path = folder / f"{owner}.lock"
    try:
        fd = open_private(path, os.O_RDWR | os.O_CREAT)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def segments_by_owner(folder: Path) -> dict[str, list[Path]]:
    """Segments in the journal folder, oldest first, grouped by the worker that wrote them."""
    found: dict[str, list[Path]] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        match = _SEGMENT.match(path.name)
        if match:
            found.setdefault(match["owner"], []).append(path)
    return found


def remove_stale_locks(folder: Path, owners_with_segments: set[str], own: str | None) -> None:
    """Delete lock files of dead workers that left no segments."""
    for path in folder.glob("*.lock"):
        owner = path.stem
        if owner == own or owner in owners_with_segments:
            continue
        with claim(folder, owner) as claimed:
            if claimed:
                path.unlink(missing_ok=True)


__all__ = [
    "JOURNAL_DIR",
    "Entry",
    "Journal",
    "Segment",
    "claim",
    "encode_record",
    "read_segment",
    "remove_stale_locks",
    "segments_by_owner",
]
