"""Prometheus metrics of the service (`GET /metrics`, text exposition format 0.0.4).

One registry per service (not the process-wide default), so tests can run several apps.
"""
from __future__ import annotations

from engine.optional import require

__all__ = ["Metrics", "ROUTES"]

# Routes reported by name; anything else (404s, scanners) is counted as "other", so a client
# cannot grow the label set.
ROUTES = ("/blur/", "/anonymize", "/health", "/metrics", "/")

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    def __init__(self):
        prom = require("prometheus_client", "the service needs prometheus-client: pip install 'sladd[service]'")
        self._prom = prom
        prom.disable_created_metrics()              # no *_created series: they only double the output
        self.registry = r = prom.CollectorRegistry(auto_describe=True)
        self.requests = prom.Counter("sladd_requests_total", "HTTP requests by route and status code",
                                     ["route", "status"], registry=r)
        self.latency = prom.Histogram("sladd_request_duration_seconds", "Time from the request to the last "
                                      "byte of the answer, by route", ["route"], buckets=_LATENCY, registry=r)
        self.stage = prom.Histogram("sladd_stage_duration_seconds", "Time per picture in each stage "
                                    "(queue: waiting for a frame slot and the model)", ["stage"],
                                    buckets=_LATENCY, registry=r)
        self.batch = prom.Histogram("sladd_batch_size", "Pictures per model call",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=r)
        self.images = prom.Counter("sladd_images_total", "Pictures answered, by outcome (lossless: only the "
                                   "touched blocks re-encoded or nothing changed; reencoded: the whole picture; "
                                   "rejected: bad input; failed: the service's fault; timeout)", ["outcome"],
                                   registry=r)
        self.detections = prom.Counter("sladd_detections_total", "Objects masked, by class", ["class"], registry=r)
        self.queue = prom.Gauge("sladd_requests_in_flight", "Requests admitted and not yet finished", registry=r)
        self.ready = prom.Gauge("sladd_ready", "1 once the models are loaded", registry=r)
        for outcome in ("lossless", "reencoded", "rejected", "failed", "timeout"):
            self.images.labels(outcome)

    def route(self, path: str) -> str:
        return path if path in ROUTES else "other"

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the exposition."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
