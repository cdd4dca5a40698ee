"""Prometheus metrics of one server process, in a registry of its own."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_MODEL_ROUTE = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?(/ready|/infer)?$")
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, static_routes: set[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "modelpack_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelpack_request_duration_seconds",
            "HTTP request latency by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "modelpack_batch_size",
            "Rows per predict call.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.load_seconds = Gauge(
            "modelpack_model_load_seconds",
            "Time to load and warm the model.",
            registry=self.registry,
        )
        self._static = static_routes
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def route_of(self, path: str) -> str:
        if path in self._static:
            return path
        match = _MODEL_ROUTE.match(path)
        if match:
            return (
                "/v2/models/{name}"
                + ("/versions/{version}" if match.group(1) else "")
                + (match.group(2) or "")
            )
        return "unmatched"  # never the raw path: it would grow the label set without bound

    def observe(self, path: str, status: int, seconds: float) -> None:
        key = (path, status)
        children = self._children.get(key)
        if children is None:
            route, code = self.route_of(path), str(status)
            children = (self.requests.labels(route, code), self.latency.labels(route, code))
            if len(self._children) < 10_000:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def watch_placement(self, placed: Callable[[], Mapping[str, int] | None]) -> None:
        """Count requests by where their predict ran, read from the model at each scrape."""
        self.registry.register(_PlacementCollector(placed))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(scope["path"], status, time.perf_counter() - start)


class _PlacementCollector(Collector):
    def __init__(self, placed: Callable[[], Mapping[str, int] | None]) -> None:
        self._placed = placed

    def describe(self) -> list[Metric]:
        return [self._family({})]

    def collect(self) -> Iterable[Metric]:
        yield self._family(self._placed() or {})

    @staticmethod
    def _family(placed: Mapping[str, int]) -> Metric:
        family = CounterMetricFamily(
            "modelpack_predict_requests",
            "Requests by where their predict ran: on the event loop (quick models), in a worker "
            "thread, or through the batcher.",
            labels=["place"],
        )
        for place, count in placed.items():
            family.add_metric([place], count)
        return family
