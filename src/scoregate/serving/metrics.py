"""Prometheus metrics for the server, cheap on the hot path (label children cached).

With several worker processes set ``PROMETHEUS_MULTIPROC_DIR`` before the workers
start (``serving.run`` does it); ``/metrics`` then aggregates every worker's values.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "scoregate_requests",
            "Scoring requests by model, version, protocol and status code.",
            ["model", "version", "protocol", "code"],
            registry=r,
        )
        self.errors = Counter(
            "scoregate_request_errors",
            "Failed requests by model, version and error code.",
            ["model", "version", "error"],
            registry=r,
        )
        self.latency = Histogram(
            "scoregate_request_latency_seconds",
            "Time from request received to response ready.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "scoregate_batch_size_rows",
            "Rows per framework call (adaptive batching).",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.rows = Counter(
            "scoregate_rows_scored", "Rows scored, primary and shadow.", ["model", "version", "shadow"], registry=r
        )
        self.shadow_dropped = Counter(
            "scoregate_shadow_dropped",
            "Shadow copies dropped because the challenger was behind.",
            ["model", "version"],
            registry=r,
        )
        self.swaps = Counter("scoregate_model_swaps", "Hot swaps of the served model set.", registry=r)
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
