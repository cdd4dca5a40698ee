"""Prometheus metrics of one server process, in a registry of its own."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_MODEL_ROUTE = re.compile(r"^/v2/models/([^/]+)(/versions/[^/]+)?(/ready|/infer)?$")
# The many-models server's other routes that name a model, and the route each is counted under.
_NAMED_ROUTES = tuple(
    (re.compile("^" + route.replace("{name}", "([^/]+)") + "$"), route)
    for route in (
        "/invocations/{name}",
        "/v2/repository/models/{name}/load",
        "/v2/repository/models/{name}/unload",
        "/models/{name}",
        "/models/{name}/invoke",
    )
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServerMetrics:
    """One model's server: its series carry no model label (as they always have).

    ``MultiModelMetrics`` is the many-models server's: a ``model`` label on every series that is
    about one model.
    """

    content_type = CONTENT_TYPE_LATEST
    _model_labels: tuple[str, ...] = ()

    def __init__(self, static_routes: set[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        per_model = list(self._model_labels)
        self.requests = Counter(
            "modelpack_requests",
            "HTTP requests by route and status.",
            ["route", "status", *per_model],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelpack_request_duration_seconds",
            "HTTP request latency by route and status.",
            ["route", "status", *per_model],
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "modelpack_batch_size",
            "Rows per predict call.",
            per_model,
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.load_seconds = Gauge(
            "modelpack_model_load_seconds",
            "Time to load and warm the model.",
            per_model,
            registry=self.registry,
        )
        self._static = static_routes
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def labels_of(self, path: str) -> tuple[str, ...]:
        """The route (and, for many models, the model) a path's request is counted under."""
        if path in self._static:
            return (path,)
        match = _MODEL_ROUTE.match(path)
        if match:
            return (
                "/v2/models/{name}"
                + ("/versions/{version}" if match.group(2) else "")
                + (match.group(3) or ""),
            )
        return ("unmatched",)  # never the raw path: it would grow the label set without bound

    def observe(self, path: str, status: int, seconds: float) -> None:
        key = (path, status)
        children = self._children.get(key)
        if children is None:
            route, *model = self.labels_of(path)
            labels = (route, str(status), *model)
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            # A path naming a model not known yet (it may be loaded later) is not cached.
            unknown = "" in model and "{name}" in route
            if len(self._children) < 10_000 and not unknown:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def watch_placement(self, placed: Callable[[], Mapping[str, int] | None]) -> None:
        """Count requests by where their predict ran, read from the model at each scrape."""
        self.registry.register(_PlacementCollector(placed))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MultiModelMetrics(ServerMetrics):
    """The many-models server's metrics: a ``model`` label on every per-model series (empty on
    the server's own routes, and on a name the server does not know: a client's typo must not
    grow the label set)."""

    _model_labels = ("model",)

    def __init__(self, static_routes: set[str], known: Callable[[str], bool]) -> None:
        super().__init__(static_routes)
        self._known = known

    def labels_of(self, path: str) -> tuple[str, ...]:
        if path in self._static:
            return (path, "")
        (route,) = super().labels_of(path)
        match = _MODEL_ROUTE.match(path)
        name = match.group(1) if match else None
        for pattern, named in _NAMED_ROUTES if match is None else ():
            found = pattern.match(path)
            if found:
                route, name = named, found.group(1)
                break
        return (route, name if name is not None and self._known(name) else "")

    def watch_models(
        self,
        placed: Callable[[], Mapping[str, Mapping[str, int]]],
        ready: Callable[[], Mapping[str, bool]],
    ) -> None:
        """Per model, read at each scrape: where its predicts ran, and whether it is ready."""
        self.registry.register(_ModelsCollector(placed, ready))


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
        family = _PlacementCollector.family(["place"])
        for place, count in placed.items():
            family.add_metric([place], count)
        return family

    @staticmethod
    def family(labels: list[str]) -> CounterMetricFamily:
        return CounterMetricFamily(
            "modelpack_predict_requests",
            "Requests by where their predict ran: on the event loop (quick models), in a worker "
            "thread, or through the batcher.",
            labels=labels,
        )


class _ModelsCollector(Collector):
    def __init__(
        self,
        placed: Callable[[], Mapping[str, Mapping[str, int]]],
        ready: Callable[[], Mapping[str, bool]],
    ) -> None:
        self._placed = placed
        self._ready = ready

    def describe(self) -> list[Metric]:
        return list(self._families({}, {}))

    def collect(self) -> Iterable[Metric]:
        return self._families(self._placed(), self._ready())

    @staticmethod
    def _families(
        placed: Mapping[str, Mapping[str, int]], ready: Mapping[str, bool]
    ) -> Iterable[Metric]:
        family = _PlacementCollector.family(["model", "place"])
        for model, places in placed.items():
            for place, count in places.items():
                family.add_metric([model, place], count)
        readiness = GaugeMetricFamily(
            "modelpack_model_ready",
            "1 while the model is loaded and answering, else 0 (not loaded, loading, failed).",
            labels=["model"],
        )
        for model, is_ready in ready.items():
            readiness.add_metric([model], 1.0 if is_ready else 0.0)
        return [family, readiness]
