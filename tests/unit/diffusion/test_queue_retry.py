"""A full GPU queue's RetryInfo follows the queue's ETA and is jittered, so turned-away callers spread out."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator

import pytest

from adgen_diffusion.engine import DiffusionEngine
from adgen_diffusion.errors import QueueFullError
from adgen_diffusion.worker import GpuWorker

STEP_S = 1.0
RUNNING_STEPS = 8  # Assumed half done: 4 s left.
WAITING_STEPS = 4  # 4 s each.


class _Gate:
    """Holds the GPU thread until opened."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def hold(self, _progress: object, _cancel: threading.Event) -> bool:
        self.entered.set()
        return self.opened.wait(10)


@pytest.fixture
async def full_worker(engine: DiffusionEngine) -> AsyncIterator[GpuWorker]:
    """A worker running an 8-step job with two 4-step jobs waiting and room for no more, at 1 s a step."""
    worker = GpuWorker(engine, queue_max=2, max_overtakes=4, jitter=random.Random(7))
    worker.costs.step_s = STEP_S
    gate = _Gate()
    jobs = [asyncio.ensure_future(worker.submit(None, gate.hold, steps=RUNNING_STEPS))]
    assert await asyncio.to_thread(gate.entered.wait, 10)
    jobs += [asyncio.ensure_future(worker.submit(None, gate.hold, steps=WAITING_STEPS)) for _ in range(2)]
    await asyncio.sleep(0)
    try:
        yield worker
    finally:
        gate.opened.set()
        await asyncio.gather(*jobs)
        worker.close()


async def _hints(worker: GpuWorker, count: int) -> list[float]:
    hints = []
    for _ in range(count):
        with pytest.raises(QueueFullError) as refused:
            await worker.submit(None, lambda _p, _c: None, steps=WAITING_STEPS)
        hints.append(refused.value.retry_after_s)
    return hints


async def test_retry_hints_start_when_a_place_frees_and_spread_until_the_queue_has_run(
    full_worker: GpuWorker,
) -> None:
    hints = await _hints(full_worker, 60)
    first_place_frees = RUNNING_STEPS * STEP_S / 2
    queue_has_run = first_place_frees + 2 * WAITING_STEPS * STEP_S
    assert all(first_place_frees <= hint <= queue_has_run for hint in hints)
    # Spread over the whole window, not one value for everybody: each third of it gets some callers.
    thirds = {int((hint - first_place_frees) // ((queue_has_run - first_place_frees) / 3)) for hint in hints}
    assert {0, 1, 2} <= thirds


async def test_the_hint_grows_with_the_measured_step_time(full_worker: GpuWorker) -> None:
    slow = await _hints(full_worker, 20)
    full_worker.costs.step_s = STEP_S / 10
    fast = await _hints(full_worker, 20)
    assert max(fast) < min(slow)


async def test_the_refusal_message_says_when_to_retry(full_worker: GpuWorker) -> None:
    with pytest.raises(QueueFullError) as refused:
        await full_worker.submit(None, lambda _p, _c: None)
    assert f"retry in about {refused.value.retry_after_s:.1f} s" in str(refused.value)
