"""Prometheus metrics, correct with one worker process or several.

With several workers, each process writes its values to files under
``PROMETHEUS_MULTIPROC_DIR`` (``python -m app`` sets it up) and ``/metrics`` aggregates
them, whichever worker answers. prometheus-client chooses its file-backed values when it
is imported, so that variable must be set before this module is first imported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ENCODE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
_MAX_CACHED_LABELS = 256

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """Every metric the service exports, registered in the app's own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.http_requests = Counter(
            "http_requests_total", "HTTP requests by route and status.", ["method", "route", "status"], registry=reg
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Time from request start to the end of the response.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.inputs = Counter("embedding_inputs_total", "Inputs (texts or token arrays) embedded.", registry=reg)
        self.tokens = Counter(
            "embedding_tokens_total", "Tokens embedded, counted by the model's tokenizer.", registry=reg
        )
        self.batch_inputs = Histogram(
            "embedding_batch_inputs", "Inputs per encoder batch.", buckets=BATCH_BUCKETS, registry=reg
        )
        self.queue_inputs = Gauge(
            "embedding_queue_inputs", "Inputs waiting for the encoder.", multiprocess_mode="livesum", registry=reg
        )
        self.encode_seconds = Histogram(
            "embedding_encode_seconds",
            "Time to tokenize and encode one batch.",
            buckets=ENCODE_BUCKETS,
            registry=reg,
        )
        self.rejected = Counter(
            "embedding_rejected_requests_total", "Embedding requests refused, by reason.", ["reason"], registry=reg
        )
        # Labelled children by (method, route, status): ``labels()`` takes a lock and builds a key per call.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one HTTP request and its duration (``route`` is a template: bounded label values)."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.http_requests.labels(method, route, str(status)), self.http_duration.labels(method, route))
            if len(self._request_children) < _MAX_CACHED_LABELS:
                self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text format, aggregated over all worker processes in multiprocess mode."""
        if multiprocess_enabled():
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def process_exiting(self) -> None:
        """Drop this process's live gauges from the aggregate."""
        if multiprocess_enabled():
            prometheus_multiprocess.mark_process_dead(os.getpid())


class HTTPMetricsMiddleware:
    """Counts requests and times them by route template (never the raw path: bounded label values)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(scope.get("method", ""), template, status, time.perf_counter() - start)
