"""The GPU worker and its swap-aware queue: ordering, aging, queue limits, cancellation, the device lease."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import torch

from adgen_diffusion.engine import DiffusionEngine, ImageJob, Progress, Stage
from adgen_diffusion.errors import GpuLeaseError, JobCancelledError, QueueFullError
from adgen_diffusion.lease import GpuLease
from adgen_diffusion.registry import Task
from adgen_diffusion.scheduler import SwapAwareQueue, Ticket
from adgen_diffusion.worker import GpuWorker

INTERLEAVED = ["t2i", "edit"] * 4


# Test-only helpers: what a queue would do with a list of arrivals.
def count_switches(order: list[str], start: str | None) -> int:
    """Model switches needed to run jobs for these models in this order."""
    switches, model = 0, start
    for next_model in order:
        if next_model != model:
            switches += 1
            model = next_model
    return switches


def simulate(arrivals: list[str], resident: str | None, max_overtakes: int) -> list[str]:
    """Runs a queue of jobs (by model id) to completion and returns the order they ran in."""
    queue = SwapAwareQueue(max_overtakes)
    for model_id in arrivals:
        queue.push(Ticket(model_id))
    order: list[str] = []
    while (ticket := queue.pop_next(resident)) is not None:
        assert ticket.model_id is not None
        order.append(ticket.model_id)
        resident = ticket.model_id
    return order


def _drain(queue: SwapAwareQueue, resident: str | None) -> list[Ticket]:
    """Pops every ticket as the worker would, switching the resident model as jobs run."""
    order: list[Ticket] = []
    while (ticket := queue.pop_next(resident)) is not None:
        order.append(ticket)
        resident = ticket.model_id or resident
    return order


def test_affinity_needs_at_most_two_switches_where_fifo_switches_every_job() -> None:
    fifo = simulate(INTERLEAVED, "t2i", max_overtakes=0)
    affine = simulate(INTERLEAVED, "t2i", max_overtakes=4)
    assert count_switches(fifo, "t2i") == len(INTERLEAVED) - 1
    assert count_switches(affine, "t2i") <= 2
    assert sorted(affine) == sorted(INTERLEAVED)


@pytest.mark.parametrize("bound", [1, 2, 3])
def test_aging_bounds_how_often_a_job_is_overtaken(bound: int) -> None:
    queue = SwapAwareQueue(max_overtakes=bound)
    tickets = [Ticket(model) for model in ["edit", *["t2i"] * 8]]
    for ticket in tickets:
        queue.push(ticket)
    order = _drain(queue, "t2i")
    assert order.index(tickets[0]) == bound


def test_higher_priority_runs_first_even_if_it_needs_a_switch() -> None:
    queue = SwapAwareQueue(max_overtakes=4)
    normal, urgent = Ticket("t2i"), Ticket("edit", priority=5)
    queue.push(normal)
    queue.push(urgent)
    assert queue.pop_next("t2i") is urgent


def test_predicted_order_matches_what_the_queue_will_do() -> None:
    queue = SwapAwareQueue(max_overtakes=4)
    tickets = [Ticket(model) for model in INTERLEAVED]
    for ticket in tickets:
        queue.push(ticket)
    predicted = queue.predicted_order("t2i")
    assert predicted == _drain(queue, "t2i")


@pytest.fixture
def worker(engine: DiffusionEngine) -> Iterator[GpuWorker]:
    running = GpuWorker(engine, queue_max=8, max_overtakes=4)
    yield running
    running.close()


def _job(model_id: str, task: Task) -> ImageJob:
    from PIL import Image

    image = Image.new("RGB", (64, 64), "white") if task is Task.IMAGE_EDIT else None
    return ImageJob(model_id, task, "a latte", 32, 32, 2, 1.0, 1, 1, image)


async def test_interleaved_generate_and_edit_jobs_switch_models_at_most_twice(
    worker: GpuWorker, engine: DiffusionEngine
) -> None:
    engine.load("flux2-klein-4b")
    gate = _Gate()
    blocker = asyncio.ensure_future(worker.submit("flux2-klein-4b", gate.hold))
    await gate.wait_entered()
    jobs = [
        _job("flux2-klein-4b", Task.TEXT_TO_IMAGE) if i % 2 == 0 else _job("qwen-image-edit-2511", Task.IMAGE_EDIT)
        for i in range(6)
    ]
    switches_before = worker.switches
    calls = [asyncio.ensure_future(worker.submit(job.model_id, partial(engine.run, job), steps=2)) for job in jobs]
    await asyncio.sleep(0)
    gate.opened.set()
    await blocker
    results = await asyncio.gather(*calls)
    assert all(len(done.value.images) == 1 for done in results)
    assert worker.switches - switches_before <= 2


class _Gate:
    """Blocks the GPU thread until opened, and tells the test when the thread is inside."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def hold(self, _progress: object, _cancel: threading.Event) -> bool:
        self.entered.set()
        return self.opened.wait(10)

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 10)


async def test_full_queue_is_refused_with_a_retry_hint(engine: DiffusionEngine) -> None:
    small = GpuWorker(engine, queue_max=1, max_overtakes=4)
    gate = _Gate()
    try:
        running = asyncio.ensure_future(small.submit(None, gate.hold))
        await gate.wait_entered()
        waiting = asyncio.ensure_future(small.submit(None, lambda _p, _c: None))
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError) as refused:
            await small.submit(None, lambda _p, _c: None)
        assert refused.value.retry_after_s > 0  # How long follows the queue's ETA: see test_queue_retry.py.
        gate.opened.set()
        await asyncio.gather(running, waiting)
    finally:
        gate.opened.set()
        small.close()


async def test_a_cancelled_queued_job_never_runs(worker: GpuWorker) -> None:
    gate = _Gate()
    ran: list[str] = []
    blocker = asyncio.ensure_future(worker.submit(None, gate.hold))
    await gate.wait_entered()
    queued = asyncio.ensure_future(worker.submit(None, lambda _p, _c: ran.append("queued")))
    await asyncio.sleep(0)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    gate.opened.set()
    await blocker
    await worker.submit(None, lambda _p, _c: ran.append("later"))
    assert ran == ["later"]


async def test_cancelling_the_caller_stops_the_running_job_at_its_next_step(
    worker: GpuWorker, engine: DiffusionEngine
) -> None:
    engine.load("flux2-klein-4b")
    job = ImageJob("flux2-klein-4b", Task.TEXT_TO_IMAGE, "a latte", 32, 32, 50, 1.0, 1, 1)
    stepped = asyncio.Event()
    steps: list[int] = []

    def on_progress(event: Progress) -> None:
        if event.stage is Stage.DENOISING:
            steps.append(event.step)
            stepped.set()

    outcome: list[BaseException] = []

    def run(progress: object, cancel: threading.Event) -> object:
        try:
            return engine.run(job, progress, cancel)  # type: ignore[arg-type]
        except JobCancelledError as error:
            outcome.append(error)
            raise

    call = asyncio.ensure_future(worker.submit(job.model_id, run, on_progress=on_progress))
    await asyncio.wait_for(stepped.wait(), 10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await worker.submit(None, lambda _p, _c: None)  # the worker is free again: the job has stopped
    assert outcome and isinstance(outcome[0], JobCancelledError)
    assert len(steps) < 50


async def test_queued_jobs_hear_their_position(worker: GpuWorker) -> None:
    gate = _Gate()
    events: list[Progress] = []
    blocker = asyncio.ensure_future(worker.submit(None, gate.hold))
    await gate.wait_entered()
    second = asyncio.ensure_future(worker.submit("z-image-turbo", lambda _p, _c: None, steps=4))
    third = asyncio.ensure_future(
        worker.submit("z-image-turbo", lambda _p, _c: None, on_progress=events.append, steps=4)
    )
    await asyncio.sleep(0)
    gate.opened.set()
    await asyncio.gather(blocker, second, third)
    queued = [e for e in events if e.stage is Stage.QUEUED]
    assert queued[0].queue_position == 1 and queued[0].eta_s is not None and queued[0].eta_s > 0
    assert queued[-1].queue_position == 0


def test_a_second_lease_on_the_same_device_fails_fast(tmp_path: Path) -> None:
    device = torch.device("cuda", 0)
    first = GpuLease.acquire(device, tmp_path)
    try:
        with pytest.raises(GpuLeaseError, match="leased by another"):
            GpuLease.acquire(device, tmp_path)
        GpuLease.acquire(torch.device("cuda", 1), tmp_path).release()
    finally:
        first.release()
    GpuLease.acquire(device, tmp_path).release()


def test_a_second_process_cannot_take_a_held_lease(tmp_path: Path) -> None:
    probe = (
        "import sys, torch; from pathlib import Path; from adgen_diffusion.lease import GpuLease;"
        "from adgen_diffusion.errors import GpuLeaseError\n"
        "try:\n    GpuLease.acquire(torch.device('cuda', 0), Path(sys.argv[1]))\n"
        "except GpuLeaseError as error:\n    print(error); sys.exit(3)\n"
    )
    held = GpuLease.acquire(torch.device("cuda", 0), tmp_path)
    try:
        refused = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=120
        )
    finally:
        held.release()
    assert refused.returncode == 3 and f"pid {os.getpid()}" in refused.stdout
    freed = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert freed.returncode == 0
