"""The service's Prometheus metrics (served as text on GET /metrics by each ingress replica)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
PROMPT_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the classic text format generate_latest writes


class ServiceMetrics:
    """Request latency (by endpoint and status), per-stage latency, prompts per request, requests in flight
    (the ingress queue depth), errors by kind, image-cache lookups by stage and result."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "clipsam_request_seconds",
            "Wall time of HTTP requests at the ingress.",
            ("endpoint", "status"),
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "clipsam_stage_seconds",
            "Time per pipeline stage, as measured in the stage replicas.",
            ("stage",),
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.prompts = Histogram(
            "clipsam_prompts_per_request",
            "Prompts given to SAM2 per segment request.",
            buckets=PROMPT_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "clipsam_requests_in_flight", "Requests inside the ingress (queue depth).", registry=self.registry
        )
        self.errors = Counter(
            "clipsam_errors", "Refused or failed requests by kind.", ("kind",), registry=self.registry
        )
        self.cache = Counter(
            "clipsam_image_cache_lookups",
            "Image-cache lookups of the encoder stages.",
            ("stage", "result"),
            registry=self.registry,
        )

    def observe_stages(self, timings_ms: dict) -> None:
        for stage, milliseconds in timings_ms.items():
            if stage != "total":
                self.stage_seconds.labels(stage).observe(milliseconds / 1000.0)

    def observe_cache(self, stage: str, hit: bool | None) -> None:
        if hit is not None:
            self.cache.labels(stage, "hit" if hit else "miss").inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
