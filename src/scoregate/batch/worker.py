"""A batch worker: one process that loads the version once and scores the chunks it is sent.

Started as ``python -m scoregate.batch.worker READ_FD WRITE_FD`` (a fresh interpreter,
never a fork: a parent that ran OpenMP code would hand a forked child a thread pool it
cannot use). It checks the artifact's digest before loading it, commits each chunk it
scores itself (:class:`~scoregate.batch.store.JobFolder`), and answers on its pipe.
It dies with its coordinator (``PR_SET_PDEATHSIG``), so a killed job leaves no process.

Messages, pickled over ``multiprocessing.connection``: in ``{"init": ...}``,
``("chunk", index, attempt)``, ``("stop",)``; out ``("ready", pid)``,
``("done", record_json)``, ``("error", index, message)``, ``("fatal", message)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from scoregate.batch.chunk import ChunkScorer
from scoregate.batch.plan import Manifest
from scoregate.batch.store import ChunkRecord, JobFolder
from scoregate.errors import IntegrityError

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: the kernel kills this process when the process that started it dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def limit_memory(megabytes: int | None) -> None:
    """Cap this process's data segment (heap and anonymous mappings): past it, allocations fail."""
    if megabytes:
        import resource

        limit = megabytes << 20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def check_artifact(path: Path, kind: str, blob: Path, digest: str) -> None:
    """The file about to be loaded is the registered one (a directory: its packed blob)."""
    target = path if kind == "file" else blob
    h = hashlib.sha256()
    with target.open("rb") as handle:
        while block := handle.read(1 << 20):
            h.update(block)
    if h.hexdigest() != digest:
        raise IntegrityError(
            f"artifact integrity check failed: {target} hashes to sha256:{h.hexdigest()}, "
            f"the version was registered as sha256:{digest}; it will not be loaded"
        )


def unpack_artifact(blob: bytes, manifest: Manifest, where: Path) -> Path:
    """The artifact as registered, from the blob's bytes sent to a Ray actor or a Spark
    executor (checked against its digest by the loader)."""
    (where / "blob").write_bytes(blob)
    if manifest.artifact_kind == "file":
        target = where / manifest.artifact_name
        target.write_bytes(blob)
        return target
    import tarfile

    target = where / "dir"
    with tarfile.open(where / "blob") as tar:
        tar.extractall(target, filter="data")
    return target


def load_chunk_scorer(init: dict[str, Any], manifest: Manifest) -> ChunkScorer:
    from scoregate.flavors import get_flavor
    from scoregate.schema import ModelSchema

    artifact = Path(init["artifact"])
    check_artifact(artifact, manifest.artifact_kind, Path(init["blob"]), manifest.artifact_digest)
    scorer = get_flavor(manifest.flavor).load(artifact)
    return ChunkScorer(scorer, ModelSchema.model_validate(manifest.input_schema), manifest.options.keep)


def serve(conn: Connection) -> None:
    init = conn.recv()["init"]
    sys.path[:0] = [p for p in init.get("sys_path", []) if p not in sys.path]
    limit_memory(init.get("memory_mb"))
    try:
        folder = JobFolder(Path(init["folder"]))
        manifest = folder.manifest()
        if init.get("threads"):
            from threadpoolctl import threadpool_limits

            threadpool_limits(int(init["threads"]))
        chunks = load_chunk_scorer(init, manifest)
    except Exception as exc:
        conn.send(("fatal", _one_line(exc)))
        return
    conn.send(("ready", os.getpid()))
    storage = init.get("storage") or {}
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the coordinator is gone
            return
        if message[0] == "stop":
            return
        _, index, attempt = message
        try:
            record = score_chunk(chunks, folder, manifest, index, attempt, storage)
        except Exception as exc:
            conn.send(("error", index, _one_line(exc)))
            continue
        conn.send(("done", record.model_dump_json()))


def score_chunk(
    scorer: ChunkScorer, folder: JobFolder, manifest: Manifest, index: int, attempt: int, storage: dict[str, Any]
) -> ChunkRecord:
    """Read, score and commit one chunk: what a worker of every engine does with it."""
    chunk = manifest.chunks[index]
    started = time.monotonic()
    scored = scorer.score(scorer.read(manifest.inputs[chunk.file], chunk, storage), chunk.first_row)
    return folder.commit(
        index,
        scored.outputs,
        scored.rejects,
        manifest.options.output_format,
        attempt=attempt,
        worker=os.getpid(),
        peak_rss_mb=peak_rss_mb(),
        cpu_s=round(sum(os.times()[:2]), 3),
        seconds=round(time.monotonic() - started, 3),
    )


def peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # kB on Linux


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    return f"{type(exc).__name__}: {message}"[:500] if not hasattr(exc, "message") else message[:500]


def main() -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    read_fd, write_fd = int(sys.argv[1]), int(sys.argv[2])
    conn_in = Connection(read_fd, writable=False)
    conn_out = Connection(write_fd, readable=False)
    serve(_Duplex(conn_in, conn_out))  # type: ignore[arg-type]


class _Duplex:
    """Two one-way pipes as one connection."""

    def __init__(self, incoming: Connection, outgoing: Connection) -> None:
        self.incoming = incoming
        self.outgoing = outgoing

    def recv(self) -> Any:
        return self.incoming.recv()

    def send(self, value: Any) -> None:
        self.outgoing.send(value)


if __name__ == "__main__":
    main()
