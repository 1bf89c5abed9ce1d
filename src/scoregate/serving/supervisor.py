"""Worker processes for ``scoregate serve --workers N``, each with its own listening socket.

uvicorn's supervisor binds one socket and every worker accepts from it. The kernel then
hands a burst of new connections to whichever worker wakes first, and keeps them there:
with wrk's 32 connections one worker of two took 82% of the load. Here each worker
binds its own socket to the same port with ``SO_REUSEPORT``, and the kernel spreads
incoming connections across the sockets by a hash of their addresses. (Written by hand
because uvicorn's supervisor cannot give each worker its own socket; it reuses uvicorn's
``Server`` for everything else.)

The supervisor keeps a bound, never listening socket on the port (it reserves the port
and resolves port 0, and receives no connections), restarts a worker that dies (a
``kill -9``, an out-of-memory kill) and stops when one fails at startup, since every
restart would fail the same way. SIGTERM or SIGINT stop every worker gracefully; one
still running ``graceful_timeout`` + 10 seconds later is killed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
from typing import Any

log = logging.getLogger("scoregate.serving")

STARTUP_FAILURE = 3  # uvicorn's exit code for a worker that could not start
_spawn = multiprocessing.get_context("spawn")


def reuse_port_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(payload: dict[str, Any], host: str, port: int, log_level: str) -> None:
    from scoregate.serving.runner import serve_worker

    os.umask(0o077)
    serve_worker(payload, host, port, log_level, reuse_port_socket(host, port))


class Supervisor:
    def __init__(
        self, payload: dict[str, Any], host: str, port: int, workers: int, log_level: str, graceful_timeout: float
    ) -> None:
        self.payload = payload
        self.host = host
        self.port = port
        self.workers = workers
        self.log_level = log_level
        self.graceful_timeout = graceful_timeout
        self._stop = threading.Event()
        self.failed = False

    def _start(self) -> Any:
        process = _spawn.Process(
            target=_worker, args=(self.payload, self.host, self.port, self.log_level), name="scoregate-worker"
        )
        process.start()
        return process

    def run(self) -> None:
        reserved = reuse_port_socket(self.host, self.port)  # bound, never listening: no connection comes here
        self.port = reserved.getsockname()[1]
        previous = {sig: signal.signal(sig, lambda *_: self._stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        processes = [self._start() for _ in range(self.workers)]
        log.info(
            "scoregate running on http://%s:%d with %d workers (parent process %d)",
            self.host,
            self.port,
            self.workers,
            os.getpid(),
        )
        try:
            while not self._stop.wait(0.5):
                for i, process in enumerate(processes):
                    if process.is_alive():
                        continue
                    process.join()
                    _forget(process.pid)
                    if process.exitcode == STARTUP_FAILURE:
                        log.error("worker %d could not start; stopping", process.pid)
                        self.failed = True
                        self._stop.set()
                        break
                    log.warning("worker %d died (exit code %s); starting another", process.pid, process.exitcode)
                    processes[i] = self._start()
        finally:
            for process in processes:
                if process.is_alive():
                    os.kill(process.pid, signal.SIGTERM)
            for process in processes:
                process.join(self.graceful_timeout + 10)
                if process.is_alive():
                    log.error("worker %d did not stop in time; killing it", process.pid)
                    process.kill()
                    process.join()
            reserved.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.failed:
            raise SystemExit(STARTUP_FAILURE)


def _forget(pid: int | None) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics."""
    if pid is None or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


__all__ = ["Supervisor", "reuse_port_socket"]
