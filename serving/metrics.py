"""Prometheus metrics of one app: request counts, latency histograms, served model versions.

Each app gets its own `CollectorRegistry` (several apps may share a process, as in tests).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "MetricsMiddleware", "ServiceMetrics"]

# Milliseconds matter here: the engine's budget for a score lookup is a few of them.
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class ServiceMetrics:
    """The service's collectors, registered on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nudge_scoring_requests_total",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nudge_scoring_request_duration_seconds",
            "HTTP request latency by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.scores = Counter(
            "nudge_scoring_scores_total",
            "Scores returned by model; known=false are population priors.",
            ["model", "known"],
            registry=self.registry,
        )
        self.feature_latency = Histogram(
            "nudge_scoring_feature_read_seconds",
            "Online feature store read latency (one read per request).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_version = Gauge(
            "nudge_scoring_model_version",
            "Registered version being served, per model (0: none).",
            ["model"],
            registry=self.registry,
        )
        self.model_swaps = Counter(
            "nudge_scoring_model_swaps_total",
            "Model versions swapped in, per model.",
            ["model"],
            registry=self.registry,
        )
        self.load_failures = Counter(
            "nudge_scoring_model_load_failures_total",
            "Model versions that failed to load, per model.",
            ["model"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request by its route template (not
    the raw path, which would carry customer ids into label values)."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_and_record(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status["code"])).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - started)
