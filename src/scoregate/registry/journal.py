"""The prediction log's journal: what makes a decision durable before its response goes out.

Each server worker appends its decisions to its own journal, a sequence of append-only
segment files under ``<predictions>/.journal/``::

    <owner>.lock                  held (flock) by the live worker that owns the segments
    <owner>-00000001.journal      records: [payload length][segment number][crc32][payload] ...

The server writes the records of a loop turn with one ``write`` and, in ``sync``
durability, one ``fdatasync`` (group commit), and only then sends their responses. At
every flush the prediction log rotates to a new segment and compacts the old one's
rows into Parquet; the segment is retired only once those Parquet files and their
folders are synced. The Parquet files a segment yields are named after the segment, so
compacting it again (after a crash at any point of the first attempt) rewrites the same
files instead of adding rows twice.

Segments are preallocated (written with zeros up to ``SEGMENT_BYTES``) and recycled: a
compacted segment is renamed to the next number and reused. A sync then writes data into
blocks the file already owns, so ``fdatasync`` has no file size or block map to commit
(about a third cheaper here than appending). Every record carries its segment's number,
so the records a recycled file still holds from its previous use, like the zeros of a new
one, end its replay.

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

HEADER = struct.Struct("<III")  # payload length, segment number, crc32 of the payload
#: Bytes a segment is preallocated with: more than a worker's second of decisions.
SEGMENT_BYTES = 8 << 20
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
    """One request's rows as a record payload (``inputs``/``outputs``: JSON per row); the
    segment that takes it frames it (:meth:`Segment.write`)."""
    head = orjson.dumps(
        [timestamp, model, version, request_id, client_request_id, route, shadow, latency_ms, first_row]
    )
    if len(inputs) == 1:
        return b"".join((head[:-1], b",[", inputs[0], b"],[", outputs[0], b"]]"))
    return b"".join((head[:-1], b",[", b",".join(inputs), b"],[", b",".join(outputs), b"]]"))


def frame(payloads: list[bytes], number: int) -> bytes:
    """Payloads framed for the segment ``number``: length, number, CRC, payload."""
    pack, crc32, tag = HEADER.pack, zlib.crc32, number & 0xFFFFFFFF
    return b"".join(pack(len(p), tag, crc32(p)) + p for p in payloads)


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


def segment_number(path: Path) -> int:
    match = _SEGMENT.match(path.name)
    if match is None:
        raise ValueError(f"{path.name} is not a journal segment")
    return int(match["number"])


def read_segment(path: Path) -> tuple[list[Entry], int]:
    """The records of a segment, and how many bytes after them are damaged or cut short.

    The replay ends at zeros (the unused end of a preallocated segment), at a record of
    another segment number (what a recycled file held before), or at a record whose
    length or checksum is wrong (a write a crash cut short: it was never synced, so never
    answered); only the last counts as damaged."""
    data = path.read_bytes()
    number = segment_number(path) & 0xFFFFFFFF
    entries: list[Entry] = []
    offset, size = 0, len(data)
    dumps = orjson.dumps
    damaged = 0
    while offset + HEADER.size <= size:
        length, tag, crc = HEADER.unpack_from(data, offset)
        if length == 0 or tag != number:
            break
        start = offset + HEADER.size
        if length > MAX_PAYLOAD or start + length > size or zlib.crc32(data[start : start + length]) != crc:
            damaged = size - offset if start + length > size else length + HEADER.size
            break
        try:
            ts, model, version, request_id, client_id, route, shadow, latency, first, inputs, outputs = orjson.loads(
                data[start : start + length]
            )
        except (orjson.JSONDecodeError, ValueError):
            damaged = length + HEADER.size
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
    return entries, damaged


class Segment:
    """One journal file, preallocated, written at an offset."""

    __slots__ = ("fd", "number", "offset", "path")

    def __init__(self, path: Path, *, reuse: bool = False) -> None:
        self.path = path
        self.number = segment_number(path)
        self.offset = 0
        if reuse:  # a recycled file: its old records carry another number
            self.fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
            return
        self.fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        zeros = bytes(1 << 20)
        for _ in range(SEGMENT_BYTES // len(zeros)):
            os.write(self.fd, zeros)
        os.fsync(self.fd)

    @property
    def stem(self) -> str:
        return self.path.stem

    def write(self, payloads: list[bytes], *, sync: bool) -> None:
        data = memoryview(frame(payloads, self.number))
        while data:
            written = os.pwrite(self.fd, data, self.offset)
            self.offset += written
            data = data[written:]
        if sync:
            os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Journal:
    """One worker's journal: its lock, the segment being appended to, and a spare."""

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
        self._spare: Path | None = None  # a compacted segment, renamed to the next number, to reuse
        self.segment = self.new_segment()

    def _path(self, number: int) -> Path:
        return self.folder / f"{self.owner}-{number:08d}.journal"

    def new_segment(self) -> Segment:
        """The next segment (the spare if there is one), its directory entry durable."""
        spare, self._spare = self._spare, None
        if spare is not None:
            segment = Segment(spare, reuse=True)
        else:
            self._number += 1
            segment = Segment(self._path(self._number))
        fsync_dir(self.folder)
        return segment

    def retire(self, segment: Segment) -> None:
        """A segment whose rows are durable in Parquet: kept as the spare under the next number, or deleted."""
        segment.close()
        if self._spare is not None:
            segment.path.unlink(missing_ok=True)
            return
        self._number += 1
        spare = self._path(self._number)
        os.replace(segment.path, spare)  # its records keep their old number: they read as none
        self._spare = spare

    def close(self) -> None:
        """Close and remove the current segment (it must hold nothing uncompacted), the spare and the lock."""
        self.segment.close()
        self.segment.path.unlink(missing_ok=True)
        if self._spare is not None:
            self._spare.unlink(missing_ok=True)
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
    "SEGMENT_BYTES",
    "Entry",
    "Journal",
    "Segment",
    "claim",
    "encode_record",
    "frame",
    "read_segment",
    "remove_stale_locks",
    "segments_by_owner",
]
