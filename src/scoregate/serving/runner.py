"""``scoregate serve``: run the scoring server on uvicorn, one or several worker processes.

With one worker the server runs in this process. With more, :mod:`.supervisor` starts
them, each with its own listening socket on the same port (``SO_REUSEPORT``), so the
kernel spreads connections across workers; each worker builds its own app from the
options, loads the models once and polls the registry for alias changes on its own.
Prometheus metrics are aggregated across workers through ``PROMETHEUS_MULTIPROC_DIR``
(a fresh temporary folder unless set). SIGTERM/SIGINT: stop accepting, let in-flight
requests finish (up to ``graceful_timeout`` seconds), drain the scoring threads, flush
the prediction log.

The server process creates its files with umask 077 (owner only), on top of the
explicit 0600/0700 modes of the prediction log and the registry.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from scoregate.serving.app import ScoringApp, create_app
from scoregate.serving.options import ServeOptions
from scoregate.serving.source import ModelSource, RegistrySource

log = logging.getLogger("scoregate.serving")

#: Defaults of ``run`` that differ from :class:`ServeOptions` (which suits an embedded app):
#: one OpenMP thread per scorer (the workers are the parallelism) and a 1 ms switch interval.
RUN_DEFAULTS: dict[str, Any] = {"scorer_threads": 1, "switch_interval": 0.001}


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _source_factory(payload: dict[str, Any]) -> Any:
    from scoregate.config import Settings

    settings = Settings(**payload["settings"])
    target = payload.get("source")
    if target:
        factory = _import(target)
        return lambda: factory(settings)
    return lambda: RegistrySource.open(settings)


def build_app(payload: dict[str, Any]) -> ScoringApp:
    """The app of one worker, from what :func:`run` hands it (settings, source, options)."""
    options = ServeOptions(**payload["options"])
    if options.switch_interval:
        # the scoring threads run Python between their nogil sections; a short switch
        # interval keeps the event loop from waiting the default 5 ms for the GIL
        sys.setswitchinterval(options.switch_interval)
    home = Path(payload["settings"]["home"])
    predictions_dir = home / "predictions" if options.log_predictions else None
    monitoring_dir = None
    if options.monitoring:
        from scoregate.monitoring.live import live_folder

        monitoring_dir = live_folder(home)
    return create_app(
        _source_factory(payload), predictions_dir=predictions_dir, monitoring_dir=monitoring_dir, options=options
    )


def uvicorn_config(app: Any, host: str, port: int, options: ServeOptions, log_level: str) -> Any:
    import uvicorn

    from scoregate.serving.protocol import ScoringProtocol

    return uvicorn.Config(
        app,
        host=host,
        port=int(port),
        loop="uvloop",
        http=ScoringProtocol,
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # a middleware layer per request; put a proxy's headers to use explicitly
        server_header=False,
        log_level=log_level,
        timeout_graceful_shutdown=options.graceful_timeout,
        timeout_keep_alive=options.keep_alive_timeout,  # type: ignore[arg-type]
        backlog=4096,
    )


def serve_worker(payload: dict[str, Any], host: str, port: int, log_level: str, sock: socket.socket | None) -> None:
    """Run one worker until SIGTERM/SIGINT (``sock``: its own listening socket, or None to bind)."""
    import uvicorn

    from scoregate.memory import fixed_mmap_threshold

    fixed_mmap_threshold()
    app = build_app(payload)
    server = uvicorn.Server(uvicorn_config(app, host, port, app.options, log_level))
    server.run(sockets=[sock] if sock is not None else None)
    if not server.started:
        sys.exit(3)  # uvicorn's startup failure: the reason was logged in one line


def run(
    settings: Any,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    models: list[str] | None = None,
    *,
    source: str | None = None,
    log_level: str = "info",
    options: ServeOptions | None = None,
    **values: Any,
) -> None:
    """Serve until SIGINT/SIGTERM.

    ``models``: refs to serve (``name``, ``name@3``, ``name@alias``); default every aliased
    version. ``source``: ``"module:function"`` building a :class:`ModelSource` from the
    settings instead of the registry (embedding, tests). The rest are
    :class:`ServeOptions` fields (or ``options`` itself).
    """
    merged = {**RUN_DEFAULTS, **(options.model_dump() if options is not None else {}), **values}
    if models:
        merged["models"] = list(models)
    opts = ServeOptions.parse(**merged)
    os.umask(0o077)
    payload = {"settings": settings.model_dump(mode="json"), "source": source, "options": opts.model_dump(mode="json")}
    if workers <= 1:
        serve_worker(payload, host, port, log_level, None)
        return
    from scoregate.serving.supervisor import Supervisor

    made_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        made_dir = tempfile.mkdtemp(prefix="scoregate-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made_dir
    try:
        Supervisor(payload, host, port, int(workers), log_level, opts.graceful_timeout).run()
    finally:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


__all__ = ["ModelSource", "build_app", "run", "serve_worker"]
