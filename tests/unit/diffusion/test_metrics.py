"""The queue-depth gauge the autoscaler reads follows the queue exactly: pushes, cancels and starts."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from adgen_diffusion.engine import DiffusionEngine
from adgen_diffusion.metrics import DiffusionMetrics
from adgen_diffusion.registry import ModelRegistry
from adgen_diffusion.worker import GpuWorker


class _Gate:
    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def hold(self, _progress: object, _cancel: threading.Event) -> bool:
        self.entered.set()
        return self.opened.wait(10)


def _idle(_progress: object, _cancel: threading.Event) -> None:
    return None


async def test_queue_depth_counts_waiting_jobs_by_model(tiny_registry: ModelRegistry, tiny_models_dir: Path) -> None:
    registry = CollectorRegistry()
    ids = [entry.id for entry in tiny_registry]
    engine = DiffusionEngine(tiny_registry, tiny_models_dir, "cpu", metrics=DiffusionMetrics(registry, ids))
    worker = GpuWorker(engine, queue_max=8, max_overtakes=4)

    def depth(model: str) -> float | None:
        return registry.get_sample_value("adgen_queue_depth", {"model": model})

    gate = _Gate()
    try:
        running = asyncio.ensure_future(worker.submit("flux2-klein-4b", gate.hold))
        assert await asyncio.to_thread(gate.entered.wait, 10)
        assert depth("flux2-klein-4b") == 0  # Running is not waiting.
        first = asyncio.ensure_future(worker.submit("z-image-turbo", _idle))
        second = asyncio.ensure_future(worker.submit("z-image-turbo", _idle))
        await asyncio.sleep(0)
        assert depth("z-image-turbo") == 2
        assert depth("qwen-image-edit-2511") == 0  # Every known model has a series, so a drained pool reads 0.
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert depth("z-image-turbo") == 1
        gate.opened.set()
        await asyncio.gather(running, first)
        assert depth("z-image-turbo") == 0
        assert registry.get_sample_value("adgen_queue_wait_seconds_count", {"model": "z-image-turbo"}) == 1
    finally:
        gate.opened.set()
        worker.close()
