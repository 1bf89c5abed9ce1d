"""Prometheus metrics for the server, cheap on the hot path (label children cached).

With several worker processes set ``PROMETHEUS_MULTIPROC_DIR`` before the workers
start (``serving.run`` does it); ``/metrics`` then aggregates every worker's values.

Counters and histograms are updated per request. Gauges (requests in flight, queue
depth per model version, whether a version is loaded, the process's memory, CPU and
open files) are set from plain counters by :meth:`Metrics.refresh`, once a second and
on every scrape, so the hot path pays nothing for them.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
COMMIT_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
_PROCESS_GAUGES = {
    "process_resident_memory_bytes": "resident_memory_bytes",
    "process_virtual_memory_bytes": "virtual_memory_bytes",
    "process_cpu_seconds": "cpu_seconds",
    "process_open_fds": "open_fds",
    "process_start_time_seconds": "start_time_seconds",
}


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
            "Failed requests by model, version and error code (model and version empty before routing).",
            ["model", "version", "error"],
            registry=r,
        )
        self.latency = Histogram(
            "scoregate_request_latency_seconds",
            "Time from request received to response ready, failed requests included.",
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
        self.input_flags = Counter(
            "scoregate_input_flags",
            "Scored values outside the training data's observed profile, by feature and kind "
            "(below_observed, above_observed, unseen_category); the labels are bounded by the schema.",
            ["model", "version", "feature", "kind"],
            registry=r,
        )
        self.swaps = Counter("scoregate_model_swaps", "Hot swaps of the served model set.", registry=r)
        self.log_commit = Histogram(
            "scoregate_log_commit_seconds",
            "Time to make one group of decisions durable in the prediction log's journal.",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.log_errors = Counter(
            "scoregate_log_write_errors", "Journal writes that failed (their requests got 503).", registry=r
        )
        self.in_flight = Gauge(
            "scoregate_requests_in_flight",
            "Requests received and not yet answered.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_depth = Gauge(
            "scoregate_queue_depth",
            "Requests (and slices of large requests) waiting for a model version's scorer.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.loaded = Gauge(
            "scoregate_model_loaded",
            "1 when the version is loaded and served, 0 when it was wanted but could not be loaded.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemin",
        )
        # live monitoring (:mod:`.monitoring`): every worker computes the same figures from the
        # windows all of them wrote, so the most recent value of any worker is the figure
        self.feature_drift = Gauge(
            "scoregate_feature_drift",
            "Drift of an input feature over the closed live windows of a span against the reference profile.",
            ["model", "version", "feature", "statistic", "window"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.output_drift = Gauge(
            "scoregate_output_drift",
            "Drift of a model output over the closed live windows of a span against the reference profile.",
            ["model", "version", "output", "statistic", "window"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.quality_ratio = Gauge(
            "scoregate_feature_quality_ratio",
            "Share of a span's rows (scored or refused) that were missing, out of the reference range, an "
            "unseen category, infinite, or refused by a validity rule, per input feature.",
            ["model", "version", "feature", "kind", "window"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.monitoring_rows = Gauge(
            "scoregate_monitoring_window_rows",
            "Rows scored in the closed live windows of a span (every worker).",
            ["model", "version", "window"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.monitoring_errors = Counter(
            "scoregate_monitoring_errors",
            "Failures of live monitoring by stage (profile, count, persist, figures); scoring went on.",
            ["stage"],
            registry=r,
        )
        self.monitoring_dropped = Counter(
            "scoregate_monitoring_dropped_rows",
            "Scored rows live monitoring dropped because its queue was full.",
            registry=r,
        )
        self.process = {
            name: Gauge(
                f"scoregate_{name}", f"The worker's {key.replace('_', ' ')}.", registry=r, multiprocess_mode="all"
            )
            for name, key in _PROCESS_GAUGES.items()
        }
        self._process_source = ProcessCollector(registry=None)
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def refresh(self, in_flight: int, queues: dict[tuple[str, str], int], loaded: dict[tuple[str, str], bool]) -> None:
        """Set the gauges from the server's own counts (see the module docstring)."""
        self.in_flight.set(in_flight)
        for (model, version), depth in queues.items():
            self.child(self.queue_depth, model, version).set(depth)
        for (model, version), ok in loaded.items():
            self.child(self.loaded, model, version).set(1 if ok else 0)
        for family in self._process_source.collect():
            gauge = self.process.get(family.name.removesuffix("_total"))
            if gauge is not None and family.samples:
                gauge.set(family.samples[0].value)

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
