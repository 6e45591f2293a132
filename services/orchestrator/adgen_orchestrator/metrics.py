"""The orchestrator's Prometheus metrics: where an ad's time goes, stage by stage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Histogram

STAGE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class StageMetrics:
    """`adgen_stage_duration_seconds{rpc, stage}`: copy (the copywriter), generate / edit (one diffusion job,
    queue included), deliver (resize, overlay, label, encode)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._duration = Histogram(
            "adgen_stage_duration_seconds",
            "Time of each stage of an ad, by the public call it served.",
            ("rpc", "stage"),
            buckets=STAGE_BUCKETS_S,
            registry=registry,
        )

    @contextmanager
    def timed(self, rpc: str, stage: str) -> Iterator[None]:
        """Times the block as one `stage` of `rpc`, whether it ends well or not."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self._duration.labels(rpc, stage).observe(time.perf_counter() - started)
