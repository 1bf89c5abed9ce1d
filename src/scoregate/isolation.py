"""Run a model's code in a worker process that can be stopped at a deadline.

A hanging model cannot be stopped from inside its own process: a thread cannot be killed,
and a model busy-looping in C holds the interpreter lock, so the caller could not even
report. So the commands that load and score a model on a user's behalf (``register``,
``profile``, the reference scores of ``loadtest``) call it through :func:`call`, which runs
one function in a worker process with a deadline. At the deadline the worker is asked to
stop (SIGUSR1: the function may hand back what it did so far, see :meth:`Progress.on_stop`),
then killed with its process group; nothing of the hang stays behind.

The worker is a fresh interpreter (``python -m scoregate.isolation``), never a fork: a
parent that has run OpenMP code (scikit-learn, XGBoost, LightGBM) would hand a forked
child a thread pool it cannot use, and the child would hang on its first parallel call.
Starting an interpreter and importing pandas and a framework costs about a second, ten
times a registration, so an idle worker is kept (one per process, for a few minutes) and
reused by the next call. Written by hand because what it must do on a deadline (a partial
result, then the whole process group killed) is the point: ``concurrent.futures`` cannot
stop a running call, and ``multiprocessing``'s spawn re-runs the caller's ``__main__``.

Wire format, both ways over dedicated pipes (the model's own prints go to stderr): a
request is ``length + pickle((target, payload, (sys.path, cwd, environ)))``; a reply is one kind byte,
``T`` (a progress tick) or ``R``/``E``/``S`` (result, error, stopped) followed by
``length + pickle``.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scoregate.errors import ModelTimeoutError, ScoregateError

#: An idle worker is reused for this long, then let go (the worker exits by itself a bit later).
IDLE_REUSE_S = 240.0
IDLE_EXIT_S = 300.0
#: After the stop signal, how long a worker may take to hand back its partial result.
STOP_GRACE_S = 2.0

_LENGTH = struct.Struct("<Q")


def call(
    target: str,
    payload: Any,
    *,
    timeout: float,
    stall: float | None = None,
    what: str = "the model",
) -> Any:
    """Run ``target`` (``"module:function"``, called as ``function(payload, progress)``) in a
    worker process and return its result, or raise what it raised.

    ``timeout`` bounds the whole call; ``stall``, when given, bounds the time between two
    :meth:`Progress.tick` calls once the first has come. Past either, the worker is stopped
    and :class:`ModelTimeoutError` says "``what`` did not answer within N s", carrying
    ``ticks`` (progress so far), ``partial`` (what ``on_stop`` handed back, or None),
    ``seconds`` (the bound that fired) and ``stalled``.
    """
    worker = _take_worker()
    try:
        value = worker.run(target, payload, timeout=timeout, stall=stall, what=what)
    except _Raised as raised:  # the function raised: the worker itself is fine
        _give_back(worker)
        raise raised.error from None
    except BaseException:  # a deadline, the worker died, or the caller was interrupted
        _discard(worker)
        raise
    _give_back(worker)
    return value


def child_environment() -> dict[str, str]:
    """This process's environment, for a ``python -m scoregate...`` child: with the folder this
    very package was imported from first on PYTHONPATH, wherever the caller found it."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


class Progress:
    """What a function running in the worker uses to report progress and partial results."""

    def __init__(self, reply_fd: int) -> None:
        self._fd = reply_fd
        self._on_stop: Callable[[], Any] | None = None

    def tick(self) -> None:
        """One step done (one request scored, the model loaded): resets the stall bound."""
        os.write(self._fd, b"T")

    def on_stop(self, handler: Callable[[], Any] | None) -> None:
        """``handler()`` runs when the caller's deadline stops this call; what it returns is
        handed to the caller as ``ModelTimeoutError.partial``. It runs in a signal handler,
        in the middle of whatever the model was doing: keep it to dumping state."""
        self._on_stop = handler


# ---------------------------------------------------------------------------------------------
# The caller's side
# ---------------------------------------------------------------------------------------------


class _Worker:
    def __init__(self) -> None:
        request_read, self._requests = os.pipe()
        self._replies, reply_write = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scoregate.isolation", str(request_read), str(reply_write)],
                pass_fds=(request_read, reply_write),
                stdin=subprocess.DEVNULL,
                env=child_environment(),
                start_new_session=True,  # its own process group: a kill takes the model's children too
            )
        except OSError as exc:
            for fd in (self._requests, self._replies):
                os.close(fd)
            raise ScoregateError(f"cannot start a worker process for the model: {exc}") from None
        finally:
            os.close(request_read)
            os.close(reply_write)
        self._buffer = bytearray()
        self.last_used = time.monotonic()
        self.closed = False

    def run(self, target: str, payload: Any, *, timeout: float, stall: float | None, what: str) -> Any:
        context = (list(sys.path), os.getcwd(), dict(os.environ))
        request = pickle.dumps((target, payload, context), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            _write_all(self._requests, _LENGTH.pack(len(request)) + request)
        except BrokenPipeError:
            raise ScoregateError(f"the process running {what} exited with code {self.proc.wait()}") from None
        started = time.monotonic()
        ticks = 0
        last_tick: float | None = None
        while True:
            limit = started + timeout
            stalled = False
            if stall is not None and last_tick is not None and last_tick + stall < limit:
                limit, stalled = last_tick + stall, True
            remaining = limit - time.monotonic()
            if remaining <= 0:
                bound = stall if stalled else timeout
                partial = self._stop()
                raise ModelTimeoutError(
                    f"{what} did not answer within {bound:g} s",
                    ticks=ticks,
                    partial=partial,
                    seconds=float(bound),
                    stalled=stalled,
                )
            frame = self._next_frame(remaining)
            if frame is None:
                continue
            kind, value = frame
            if kind == b"T":
                ticks += 1
                last_tick = time.monotonic()
            elif kind == b"R":
                self.last_used = time.monotonic()
                return value
            elif kind == b"E":
                self.last_used = time.monotonic()
                raise _Raised(_rebuild(value, what))
            else:  # EOF, or a stop this side did not ask for
                code = self.proc.wait()
                raise ScoregateError(f"the process running {what} exited with code {code}")

    def _next_frame(self, wait: float) -> tuple[bytes, Any] | None:
        """The next reply frame, None when ``wait`` passes first; ``(b"", None)`` at EOF."""
        deadline = time.monotonic() + wait
        while True:
            frame = self._parse()
            if frame is not None:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self._replies], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                return b"", None
            self._buffer += chunk

    def _parse(self) -> tuple[bytes, Any] | None:
        buffer = self._buffer
        if not buffer:
            return None
        kind = bytes(buffer[:1])
        if kind == b"T":
            del buffer[:1]
            return kind, None
        if len(buffer) < 1 + _LENGTH.size:
            return None
        (size,) = _LENGTH.unpack_from(buffer, 1)
        end = 1 + _LENGTH.size + size
        if len(buffer) < end:
            return None
        body = bytes(buffer[1 + _LENGTH.size : end])
        del buffer[:end]
        try:
            return kind, pickle.loads(body)
        except Exception as exc:  # a value of a class only the model's process knows
            return b"E", {"pickle": None, "type": type(exc).__name__, "message": f"unreadable reply: {exc}"}

    def _stop(self) -> Any:
        """Ask the worker for its partial result, then kill its process group."""
        partial = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + STOP_GRACE_S
        while (remaining := deadline - time.monotonic()) > 0:
            frame = self._next_frame(remaining)
            if frame is None or frame[0] in (b"", b"S"):
                partial = frame[1] if frame is not None and frame[0] == b"S" else None
                break
        self.close(kill=True)
        return partial

    def close(self, *, kill: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in (self._requests, self._replies):
            with contextlib.suppress(OSError):
                os.close(fd)
        if kill:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    @property
    def reusable(self) -> bool:
        return (
            not self.closed
            and self.proc.poll() is None
            and time.monotonic() - self.last_used < IDLE_REUSE_S
            and not self._buffer
        )


_lock = threading.Lock()
_idle: list[_Worker] = []
_busy: set[_Worker] = set()


def _take_worker() -> _Worker:
    with _lock:
        while _idle:
            worker = _idle.pop()
            if worker.reusable:
                _busy.add(worker)
                return worker
            worker.close(kill=True)
    worker = _Worker()
    with _lock:
        _busy.add(worker)
    return worker


def _discard(worker: _Worker) -> None:
    with _lock:
        _busy.discard(worker)
    worker.close(kill=True)


def _give_back(worker: _Worker) -> None:
    """Keep one idle worker for the next call; let any other go."""
    with _lock:
        _busy.discard(worker)
        if not _idle and worker.reusable:
            _idle.append(worker)
            return
    worker.close()


def _discard_all() -> None:
    with _lock:
        workers = [*_idle, *_busy]
        _idle.clear()
        _busy.clear()
    for worker in workers:
        worker.close(kill=True)


def _forget_workers() -> None:
    """In a child forked from this process: the workers are the parent's; let go of them
    (close this copy of their pipes) without stopping them."""
    global _lock
    _lock = threading.Lock()
    for worker in [*_idle, *_busy]:
        worker.closed = True
        for fd in (worker._requests, worker._replies):
            with contextlib.suppress(OSError):
                os.close(fd)
    _idle.clear()
    _busy.clear()


atexit.register(_discard_all)
os.register_at_fork(after_in_child=_forget_workers)


class _Raised(Exception):
    """Carries what the function raised in the worker, to tell it from the worker failing."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _rebuild(error: dict[str, Any], what: str) -> BaseException:
    if error.get("pickle") is not None:
        with contextlib.suppress(Exception):
            exc = pickle.loads(error["pickle"])
            if isinstance(exc, Exception):
                return exc
    return ScoregateError(f"{what} failed: {error['type']}: {error['message']}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# ---------------------------------------------------------------------------------------------
# The worker's side
# ---------------------------------------------------------------------------------------------


class _Replies:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.progress: Progress | None = None

    def send(self, kind: bytes, value: Any) -> None:
        body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        _write_all(self.fd, kind + _LENGTH.pack(len(body)) + body)

    def error(self, exc: BaseException) -> None:
        try:
            pickled: bytes | None = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(pickled)  # a class the caller may not know fails here, not there
        except Exception:
            pickled = None
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        self.send(b"E", {"pickle": pickled, "type": type(exc).__name__, "message": message})


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = os.read(fd, size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def _serve(request_fd: int, reply_fd: int) -> None:
    os.dup2(2, 1)  # the model's prints go to stderr, never into the replies
    replies = _Replies(reply_fd)
    original_path = list(sys.path)

    def stopped(signum: int, frame: Any) -> None:
        partial = None
        progress = replies.progress
        if progress is not None and progress._on_stop is not None:
            with contextlib.suppress(BaseException):
                partial = progress._on_stop()
        with contextlib.suppress(BaseException):
            replies.send(b"S", partial)
        os._exit(0)

    signal.signal(signal.SIGUSR1, stopped)
    parent = os.getppid()
    _watch_parent(parent)
    while True:
        readable, _, _ = select.select([request_fd], [], [], IDLE_EXIT_S)
        if not readable:
            return
        header = _read_exact(request_fd, _LENGTH.size)
        if header is None:
            return
        body = _read_exact(request_fd, _LENGTH.unpack(header)[0])
        if body is None:
            return
        target, payload, (path, cwd, environ) = pickle.loads(body)
        # the caller's view of the world, as if the call ran there: what it could import, where it was
        sys.path[:] = list(dict.fromkeys([*path, *original_path]))
        os.environ.clear()
        os.environ.update(environ)
        with contextlib.suppress(OSError):
            os.chdir(cwd)
        replies.progress = Progress(reply_fd)
        try:
            module, _, name = target.partition(":")
            function = getattr(importlib.import_module(module), name)
            value = function(payload, replies.progress)
        except BaseException as exc:  # SystemExit or KeyboardInterrupt from the model's code too
            replies.progress = None
            replies.error(exc)
        else:
            replies.progress = None
            replies.send(b"R", value)


def _watch_parent(parent: int) -> None:
    """Exit when the caller is gone (killed while the model hung), rather than run on."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="scoregate-parent-watch", daemon=True).start()


if __name__ == "__main__":  # pragma: no cover - exercised through call()
    _serve(int(sys.argv[1]), int(sys.argv[2]))
