"""``scoregate serve``: run the scoring server on uvicorn, one or several worker processes.

With ``workers > 1`` uvicorn's supervisor binds the socket once and spawns the
workers, which share it; each worker builds its own app (from the options passed in
the ``SCOREGATE_SERVE_OPTIONS`` environment variable), loads the models once and
polls the registry for alias changes on its own. Prometheus metrics are aggregated
across workers through ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary folder unless
set). SIGTERM/SIGINT: stop accepting, let in-flight requests finish (up to
``graceful_timeout`` seconds), drain the scoring threads, flush the prediction log.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from scoregate.serving.app import DEFAULT_MAX_BODY, DEFAULT_MAX_QUEUED, ScoringApp, create_app
from scoregate.serving.source import ModelSource, RegistrySource
from scoregate.serving.state import DEFAULT_DIRECT_BELOW

OPTIONS_ENV = "SCOREGATE_SERVE_OPTIONS"
log = logging.getLogger("scoregate.serving")


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _source_factory(options: dict[str, Any]) -> Any:
    from scoregate.config import Settings

    settings = Settings(**options["settings"])
    target = options.get("source")
    if target:
        factory = _import(target)
        return lambda: factory(settings)
    return lambda: RegistrySource.open(settings)


def build_from_options(options: dict[str, Any]) -> ScoringApp:
    if options.get("switch_interval"):
        # the scoring threads run Python between their nogil sections; a short switch
        # interval keeps the event loop from waiting the default 5 ms for the GIL
        sys.setswitchinterval(float(options["switch_interval"]))
    predictions_dir = None
    if options.get("log_predictions", True):
        predictions_dir = Path(options["settings"]["home"]) / "predictions"
    return create_app(
        _source_factory(options),
        predictions_dir=predictions_dir,
        models=options.get("models"),
        max_body_bytes=options.get("max_body_bytes", DEFAULT_MAX_BODY),
        max_queued_requests=options.get("max_queued_requests", DEFAULT_MAX_QUEUED),
        max_batch_rows=options.get("max_batch_rows", 256),
        poll_interval=options.get("poll_interval", 0.5),
        log_flush_interval=options.get("log_flush_interval", 1.0),
        scorer_threads=options.get("scorer_threads"),
        scoring=options.get("scoring", "thread"),
        direct_below=options.get("direct_below", DEFAULT_DIRECT_BELOW),
    )


def app_from_env() -> ScoringApp:
    """uvicorn factory for worker processes (``scoregate.serving.runner:app_from_env``)."""
    return build_from_options(json.loads(os.environ[OPTIONS_ENV]))


def run(
    settings: Any,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    models: list[str] | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    max_batch_rows: int = 256,
    max_queued_requests: int = DEFAULT_MAX_QUEUED,
    poll_interval: float = 0.5,
    log_predictions: bool = True,
    log_flush_interval: float = 1.0,
    scorer_threads: int | None = 1,
    switch_interval: float | None = 0.001,
    scoring: str = "thread",
    direct_below: float = DEFAULT_DIRECT_BELOW,
    graceful_timeout: float = 30.0,
    log_level: str = "info",
    source: str | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM.

    ``models``: refs to serve (``name``, ``name@3``, ``name@alias``); default every aliased
    version. ``source``: ``"module:function"`` building a :class:`ModelSource` from the
    settings instead of the registry (embedding, tests).
    """
    import uvicorn

    options = {
        "settings": settings.model_dump(mode="json"),
        "models": list(models) if models else None,
        "max_body_bytes": int(max_body_bytes),
        "max_batch_rows": int(max_batch_rows),
        "max_queued_requests": int(max_queued_requests),
        "poll_interval": float(poll_interval),
        "log_predictions": bool(log_predictions),
        "log_flush_interval": float(log_flush_interval),
        "scorer_threads": scorer_threads,
        "switch_interval": switch_interval,
        "scoring": scoring,
        "direct_below": float(direct_below),
        "source": source,
    }
    common: dict[str, Any] = {
        "host": host,
        "port": int(port),
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "proxy_headers": False,  # a middleware layer per request; put a proxy's headers to use explicitly
        "server_header": False,
        "log_level": log_level,
        "timeout_graceful_shutdown": graceful_timeout,
        "timeout_keep_alive": 30,
        "backlog": 4096,
    }
    if workers <= 1:
        uvicorn.run(build_from_options(options), **common)
        return
    made_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        made_dir = tempfile.mkdtemp(prefix="scoregate-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made_dir
    os.environ[OPTIONS_ENV] = json.dumps(options)
    try:
        uvicorn.run("scoregate.serving.runner:app_from_env", factory=True, workers=int(workers), **common)
    finally:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


__all__ = ["ModelSource", "app_from_env", "build_from_options", "run"]
