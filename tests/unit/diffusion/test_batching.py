"""Batched pipeline calls on the tiny twins: image_count in one call, waiting jobs coalesced, the same images.

Tolerance: a batched call and a lone call run the same float32 CPU maths in another order (batched matmuls),
so pixels may differ by rounding; the images agree to within BATCH_TOLERANCE of 255 on every channel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adgen_diffusion.engine import BatchPart, DiffusionEngine, ImageJob, JobOutput, Progress, Stage
from adgen_diffusion.errors import JobCancelledError
from adgen_diffusion.planner import Box
from adgen_diffusion.registry import ModelRegistry, Task
from adgen_diffusion.worker import GpuWorker

BATCH_TOLERANCE = 2
SIDE = 64


def max_channel_difference(first: Image.Image, second: Image.Image) -> int:
    """The largest difference of any channel of any pixel, 0-255."""
    assert first.size == second.size
    difference = np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16)
    return int(np.abs(difference).max())


def _job(model_id: str = "flux2-klein-4b", task: Task = Task.TEXT_TO_IMAGE, **overrides: object) -> ImageJob:
    fields: dict[str, object] = {
        "model_id": model_id,
        "task": task,
        "prompt": "iced strawberry latte on a cafe table",
        "width": SIDE,
        "height": SIDE,
        "steps": 2,
        "guidance": 1.0,
        "seed": 11,
        "image_count": 1,
        "image": Image.new("RGB", (96, 64), "orange") if task is Task.IMAGE_EDIT else None,
    }
    fields.update(overrides)
    return ImageJob(**fields)  # type: ignore[arg-type]


def _alone(engine: DiffusionEngine, job: ImageJob) -> list[Image.Image]:
    """Each image of `job` from a call of its own (image_count 1, seed + i)."""
    return [
        engine.run(dataclasses.replace(job, seed=seed, image_count=1), lambda _: None, threading.Event()).images[0]
        for seed in job.seeds
    ]


class _Calls:
    """Pipeline calls and the images they carried, read from the engine's adgen_batch_images histogram."""

    def __init__(self, engine: DiffusionEngine, model_id: str) -> None:
        self._engine, self._labels = engine, {"model": model_id}
        self._start = self._read()

    def _read(self) -> tuple[float, float]:
        registry = self._engine.metrics.registry
        count = registry.get_sample_value("adgen_batch_images_count", self._labels) or 0.0
        total = registry.get_sample_value("adgen_batch_images_sum", self._labels) or 0.0
        return count, total

    @property
    def since(self) -> tuple[int, int]:
        """(calls, images) since this counter was made."""
        count, total = self._read()
        return int(count - self._start[0]), int(total - self._start[1])


@pytest.mark.parametrize(
    ("model_id", "task"),
    [
        ("flux2-klein-4b", Task.TEXT_TO_IMAGE),
        ("z-image-turbo", Task.TEXT_TO_IMAGE),
        ("flux2-klein-4b", Task.IMAGE_EDIT),
        ("qwen-image-edit-2511", Task.IMAGE_EDIT),
    ],
)
def test_image_count_three_is_one_pipeline_call_with_the_images_of_three_lone_calls(
    engine: DiffusionEngine, model_id: str, task: Task
) -> None:
    job = _job(model_id, task, image_count=3, guidance=4.0 if model_id.startswith("qwen") else 1.0)
    engine.load(model_id, width=SIDE, height=SIDE, task=task)
    calls = _Calls(engine, model_id)
    batched = engine.run(job, lambda _: None, threading.Event())
    assert calls.since == (1, 3)
    alone = _alone(engine, job)
    assert batched.seeds == [11, 12, 13]
    assert [max_channel_difference(b, a) for b, a in zip(batched.images, alone, strict=True)] <= [BATCH_TOLERANCE] * 3
    assert max_channel_difference(batched.images[0], batched.images[1]) > 10


def test_a_batched_call_reports_each_step_once_for_all_its_images(engine: DiffusionEngine) -> None:
    events: list[Progress] = []
    engine.run(_job(image_count=2, steps=3), events.append, threading.Event())
    denoising = [(e.step, e.total_steps) for e in events if e.stage is Stage.DENOISING]
    assert denoising == [(1, 3), (2, 3), (3, 3)]
    assert [e.stage for e in events][-2:] == [Stage.DECODING, Stage.DONE]


@pytest.fixture
def small_batch_engine(tiny_registry: ModelRegistry, tiny_models_dir: Path) -> Iterator[DiffusionEngine]:
    engine = DiffusionEngine(tiny_registry, tiny_models_dir, device="cpu", max_batch_images=2)
    yield engine
    engine.unload()


def test_image_count_above_the_setting_runs_in_calls_of_at_most_that_many(small_batch_engine: DiffusionEngine) -> None:
    calls = _Calls(small_batch_engine, "z-image-turbo")
    events: list[Progress] = []
    output = small_batch_engine.run(_job("z-image-turbo", image_count=3), events.append, threading.Event())
    assert calls.since == (2, 3) and len(output.images) == 3
    # Progress counts the steps of both calls.
    assert [(e.step, e.total_steps) for e in events if e.stage is Stage.DENOISING] == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_a_batch_the_planner_says_does_not_fit_runs_one_image_a_call(small_batch_engine: DiffusionEngine) -> None:
    engine, job = small_batch_engine, _job("z-image-turbo", image_count=2)
    engine.load(job.model_id, width=SIDE, height=SIDE, task=job.task)
    entry, resident_plan = engine.registry.get(job.model_id), engine._resident.plan  # type: ignore[union-attr]
    one, two = (
        engine.planner.replan(entry, resident_plan, SIDE, SIDE, job.task, vae_tiling=False, batch=batch)
        for batch in (1, 2)
    )
    assert two.peak_host_bytes > one.peak_host_bytes
    between = (one.peak_host_bytes + two.peak_host_bytes) // 2
    engine.planner.box = Box(device_bytes=0, host_bytes=between, accelerator=False)
    calls = _Calls(engine, job.model_id)
    assert len(engine.run(job, lambda _: None, threading.Event()).images) == 2
    assert calls.since == (2, 2)


# ----- coalescing waiting jobs on the GPU worker -----


class _Gate:
    """Holds the GPU thread until opened, so jobs pile up in the queue behind it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def hold(self, _progress: object, _cancel: threading.Event) -> bool:
        self.entered.set()
        return self.opened.wait(30)


@pytest.fixture
def worker(engine: DiffusionEngine) -> Iterator[GpuWorker]:
    running = GpuWorker(engine, queue_max=16, max_overtakes=4)
    yield running
    running.close()


async def _behind_a_gate(worker: GpuWorker, jobs: list[ImageJob], **submit: object) -> list[object]:
    """Runs `jobs` submitted while the GPU thread is busy, so they wait together; their results or errors."""
    gate = _Gate()
    blocker = asyncio.ensure_future(worker.submit(None, gate.hold))
    assert await asyncio.to_thread(gate.entered.wait, 30)
    calls = [asyncio.ensure_future(worker.submit_images(job, **submit)) for job in jobs]  # type: ignore[arg-type]
    await asyncio.sleep(0)
    gate.opened.set()
    await blocker
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def test_waiting_compatible_jobs_run_as_one_call_with_the_images_they_would_have_alone(
    worker: GpuWorker, engine: DiffusionEngine
) -> None:
    engine.load("flux2-klein-4b", width=SIDE, height=SIDE)
    jobs = [_job(prompt="iced latte", seed=1), _job(prompt="a red bicycle at dusk", seed=2)]
    calls = _Calls(engine, "flux2-klein-4b")
    results = await _behind_a_gate(worker, jobs)
    assert calls.since == (1, 2)
    for job, result in zip(jobs, results, strict=True):
        assert max_channel_difference(result.value.images[0], _alone(engine, job)[0]) <= BATCH_TOLERANCE  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "other",
    [
        {"width": SIDE + 16},
        {"steps": 3},
        {"guidance": 2.0},
        {"model_id": "z-image-turbo"},
        {"task": Task.IMAGE_EDIT, "image": Image.new("RGB", (64, 64), "blue")},
    ],
)
async def test_jobs_that_differ_in_model_size_steps_guidance_or_task_are_not_coalesced(
    worker: GpuWorker, engine: DiffusionEngine, other: dict[str, object]
) -> None:
    engine.load("flux2-klein-4b", width=SIDE, height=SIDE)
    jobs = [_job(), dataclasses.replace(_job(), **other)]  # type: ignore[arg-type]
    calls = [_Calls(engine, "flux2-klein-4b"), _Calls(engine, "z-image-turbo")]
    results = await _behind_a_gate(worker, jobs)
    assert all(len(r.value.images) == 1 for r in results)  # type: ignore[attr-defined]
    assert sum(c.since[0] for c in calls) == 2


async def test_two_edits_of_the_same_size_are_not_coalesced(worker: GpuWorker, engine: DiffusionEngine) -> None:
    engine.load("flux2-klein-4b", width=SIDE, height=SIDE, task=Task.IMAGE_EDIT)
    calls = _Calls(engine, "flux2-klein-4b")
    await _behind_a_gate(worker, [_job(task=Task.IMAGE_EDIT), _job(task=Task.IMAGE_EDIT, seed=3)])
    assert calls.since == (2, 2)


async def test_coalescing_stops_at_max_batch_images(small_batch_engine: DiffusionEngine) -> None:
    worker = GpuWorker(small_batch_engine, queue_max=16, max_overtakes=4)
    try:
        small_batch_engine.load("flux2-klein-4b", width=SIDE, height=SIDE)
        calls = _Calls(small_batch_engine, "flux2-klein-4b")
        results = await _behind_a_gate(worker, [_job(seed=s) for s in (1, 2, 3)])
        assert all(len(r.value.images) == 1 for r in results)  # type: ignore[attr-defined]
        assert calls.since == (2, 3)
    finally:
        worker.close()


def test_cancelling_one_job_of_a_batch_drops_its_images_and_the_others_finish(engine: DiffusionEngine) -> None:
    engine.load("flux2-klein-4b", width=SIDE, height=SIDE)
    keep, drop = _job(seed=1, steps=3), _job(seed=2, steps=3, prompt="a blue door")
    drop_cancel = threading.Event()
    kept_events: list[Progress] = []

    def cancel_at_step_one(event: Progress) -> None:
        # On the GPU thread, between steps: the call runs on for the job that stays.
        if event.stage is Stage.DENOISING and event.step == 1:
            drop_cancel.set()

    calls = _Calls(engine, "flux2-klein-4b")
    kept, dropped = engine.run_batch(
        [BatchPart(keep, kept_events.append, threading.Event()), BatchPart(drop, cancel_at_step_one, drop_cancel)]
    )
    assert calls.since == (1, 2)
    assert isinstance(dropped, JobCancelledError)
    assert isinstance(kept, JobOutput) and len(kept.images) == 1
    assert [e.step for e in kept_events if e.stage is Stage.DENOISING] == [1, 2, 3]
    assert max_channel_difference(kept.images[0], _alone(engine, keep)[0]) <= BATCH_TOLERANCE


def test_a_batch_whose_jobs_are_all_cancelled_stops_at_the_next_step(engine: DiffusionEngine) -> None:
    cancels = [threading.Event(), threading.Event()]
    steps: list[int] = []

    def cancel_both_at_step_two(event: Progress) -> None:
        if event.stage is Stage.DENOISING:
            steps.append(event.step)
            if event.step == 2:
                for cancel in cancels:
                    cancel.set()

    outcomes = engine.run_batch(
        [
            BatchPart(_job(steps=10), cancel_both_at_step_two, cancels[0]),
            BatchPart(_job(steps=10, seed=5), lambda _: None, cancels[1]),
        ]
    )
    assert all(isinstance(outcome, JobCancelledError) for outcome in outcomes)
    assert steps == [1, 2]
