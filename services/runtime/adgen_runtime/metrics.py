"""Prometheus metrics: one registry per server, the per-call metrics every service has, and `/metrics`.

Each server owns its `CollectorRegistry` (never prometheus-client's process-global default), so two services
in one process, as in the tests, keep their numbers apart.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

_LOGGER = logging.getLogger(__name__)

# Seconds, from a 5 ms health check to a 10-minute cold load and generation.
CALL_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class CallMetrics:
    """`adgen_requests_total` and `adgen_request_duration_seconds`, by full method name and status code."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._calls = Counter(
            "adgen_requests", "Calls served, by method and how they ended.", ("method", "code"), registry=registry
        )
        self._duration = Histogram(
            "adgen_request_duration_seconds",
            "How long calls took, from the first byte to their status, by method and code.",
            ("method", "code"),
            buckets=CALL_BUCKETS_S,
            registry=registry,
        )

    def observe(self, method: str, code: str, duration_s: float) -> None:
        """Counts one finished call; `code` is the status name, CANCELLED or DEADLINE_EXCEEDED included."""
        self._calls.labels(method, code).inc()
        self._duration.labels(method, code).observe(duration_s)


@dataclass
class MetricsEndpoint:
    """A started `/metrics` HTTP server (prometheus-client's, on its own thread) and the port it bound."""

    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsEndpoint:
    """Serves `registry` in the Prometheus text format on `host:port` (0 picks a free port)."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    bound = int(server.server_address[1])
    _LOGGER.info("metrics on http://%s:%d/metrics", host, bound)
    return MetricsEndpoint(bound, server, thread)
