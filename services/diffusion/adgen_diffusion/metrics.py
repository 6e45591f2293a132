"""The diffusion service's Prometheus metrics: the queue, residency, loads and unloads, steps and device memory.

Names follow the anchors (Triton's pending count and GPU memory, vLLM's queue time): `adgen_queue_depth` is what
the fleet's autoscaler reads. The engine and the GPU worker report here; nothing here knows of gRPC.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adgen_diffusion.memory import DeviceMemory

# Seconds a job waits or a model takes to load: from an instant to a cold 10-minute load.
WAIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
STEP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16)
ENCODE_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


class DiffusionMetrics:
    """Every diffusion metric, registered in one server's registry."""

    def __init__(self, registry: CollectorRegistry, model_ids: Iterable[str] = ()) -> None:
        self.registry = registry
        self._model_ids = tuple(model_ids)
        self.queue_depth = Gauge(
            "adgen_queue_depth", "Jobs waiting for the GPU, by the model they need.", ("model",), registry=registry
        )
        self.queue_wait = Histogram(
            "adgen_queue_wait_seconds",
            "How long jobs waited before the GPU took them.",
            ("model",),
            buckets=WAIT_BUCKETS_S,
            registry=registry,
        )
        self.loaded = Gauge(
            "adgen_model_loaded", "1 for the resident model, 0 otherwise.", ("model",), registry=registry
        )
        self.load_duration = Histogram(
            "adgen_model_load_duration_seconds",
            "Model loads by phase: unloading the previous model, then loading the weights under the plan.",
            ("model", "phase"),
            buckets=WAIT_BUCKETS_S,
            registry=registry,
        )
        self.unload_duration = Histogram(
            "adgen_model_unload_duration_seconds",
            "Unloads, verification included.",
            ("model",),
            buckets=WAIT_BUCKETS_S,
            registry=registry,
        )
        self.switches = Counter("adgen_model_switches", "Times a job made another model resident.", registry=registry)
        self.step_duration = Histogram(
            "adgen_denoise_step_seconds",
            "Time per denoising step.",
            ("model",),
            buckets=STEP_BUCKETS_S,
            registry=registry,
        )
        self.batch_images = Histogram(
            "adgen_batch_images",
            "Images per pipeline call (image_count and coalesced jobs run batched); the count is the calls.",
            ("model",),
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.encode_duration = Histogram(
            "adgen_encode_seconds",
            "Encoding one job's output files, on the encode threads (off the GPU worker).",
            ("format",),
            buckets=ENCODE_BUCKETS_S,
            registry=registry,
        )
        self.unload_failures = Counter(
            "adgen_unload_verification_failures",
            "Unloads whose memory did not come back (the service goes NOT_SERVING).",
            ("model",),
            registry=registry,
        )
        self.unload_leftover = Gauge(
            "adgen_unload_leftover_device_bytes",
            "Device bytes above the baseline after the last unload (0 when verified free).",
            registry=registry,
        )
        self._device_used = Gauge("adgen_device_memory_used_bytes", "Device memory allocated.", registry=registry)
        self._device_total = Gauge("adgen_device_memory_total_bytes", "Device memory in total.", registry=registry)
        for model_id in self._model_ids:
            self.queue_depth.labels(model_id).set(0)
            self.loaded.labels(model_id).set(0)

    def read_device_memory(self, read: Callable[[], DeviceMemory]) -> None:
        """Reads device memory at each scrape, so the figures are never stale."""
        self._device_used.set_function(lambda: float(read().allocated))
        self._device_total.set_function(lambda: float(read().total))

    def set_queue(self, waiting_models: Iterable[str | None]) -> None:
        """The queue as it is now: every known model's count, zeros included, so a drained pool reads 0."""
        counts = Tally(model or "" for model in waiting_models)
        for model_id in {*self._model_ids, *counts}:
            self.queue_depth.labels(model_id).set(counts.get(model_id, 0))

    def set_resident(self, model_id: str | None) -> None:
        for known in {*self._model_ids, *([model_id] if model_id else [])}:
            self.loaded.labels(known).set(1 if known == model_id else 0)
