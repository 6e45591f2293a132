"""The one GPU worker thread: a bounded swap-aware queue in front of it, progress marshalled to the loop."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from adgen_diffusion.engine import BatchPart, DiffusionEngine, ImageJob, JobOutput, Progress, ProgressSink, Stage
from adgen_diffusion.errors import JobCancelledError, QueueFullError
from adgen_diffusion.scheduler import SwapAwareQueue, Ticket

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

# Work run on the GPU thread: gets a thread-safe progress sink and the job's cancel event.
Work = Callable[[ProgressSink, threading.Event], T]

# Until measured, assume this much per denoising step and per model switch (seconds).
_DEFAULT_STEP_S = 0.5
_DEFAULT_SWITCH_S = 10.0
_EMA = 0.3
# RetryInfo never asks for less: sooner, the queue could not have changed.
_MIN_RETRY_S = 0.1


@dataclass(frozen=True)
class Finished(Generic[T]):
    """A job's value and how long it waited before the GPU thread took it."""

    value: T
    queue_s: float


@dataclass
class _Job:
    # Opaque GPU work, or (image_job set) an image job the worker may batch with compatible ones.
    work: Work[Any] | None
    cancel: threading.Event
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    on_progress: ProgressSink
    submitted: float
    # The caller's context (request id for log lines) carried onto the GPU thread.
    context: contextvars.Context
    started: float = 0.0
    image_job: ImageJob | None = None


class CostModel:
    """Running estimates of step time and switch time, for ETAs and retry hints."""

    def __init__(self) -> None:
        self.step_s = _DEFAULT_STEP_S
        self.switch_s = _DEFAULT_SWITCH_S

    def observe_step(self, seconds_per_step: float) -> None:
        self.step_s += _EMA * (seconds_per_step - self.step_s)

    def observe_switch(self, seconds: float) -> None:
        self.switch_s += _EMA * (seconds - self.switch_s)


class GpuWorker:
    """Runs every piece of model work on one thread, in swap-aware order; `submit` is the only door."""

    def __init__(
        self, engine: DiffusionEngine, *, queue_max: int, max_overtakes: int, jitter: random.Random | None = None
    ) -> None:
        self.engine = engine
        self._jitter = jitter or random.Random()
        self.queue_max = queue_max
        self.costs = CostModel()
        self.switches = 0
        self._queue = SwapAwareQueue(max_overtakes)
        self._lock = threading.Lock()
        # The running job, or the jobs of the running batch (leader first).
        self._running: list[Ticket] = []
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu")

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def submit(
        self,
        model_id: str | None,
        work: Work[T],
        *,
        on_progress: ProgressSink | None = None,
        cancel: threading.Event | None = None,
        priority: int = 0,
        steps: int = 0,
    ) -> Finished[T]:
        """Queues `work`, waits for it, and returns its value. Cancelling the awaiting task cancels the job."""
        return await self._submit(model_id, work, None, on_progress, cancel, priority, steps)

    async def submit_images(
        self,
        job: ImageJob,
        *,
        on_progress: ProgressSink | None = None,
        cancel: threading.Event | None = None,
        priority: int = 0,
    ) -> Finished[JobOutput]:
        """Queues an image job. Text-to-image jobs of one batch key waiting together run as one batched call
        (up to the engine's max_batch_images); cancelling one of them drops only its images."""
        steps = job.steps * job.image_count
        return await self._submit(job.model_id, None, job, on_progress, cancel, priority, steps)

    async def _submit(
        self,
        model_id: str | None,
        work: Work[T] | None,
        image_job: ImageJob | None,
        on_progress: ProgressSink | None,
        cancel: threading.Event | None,
        priority: int,
        steps: int,
    ) -> Finished[T]:
        loop = asyncio.get_running_loop()
        cancel = cancel or threading.Event()
        sink = on_progress or _drop

        def from_thread(event: Progress) -> None:
            loop.call_soon_threadsafe(sink, event)

        job = _Job(
            work,
            cancel,
            loop,
            loop.create_future(),
            from_thread,
            time.perf_counter(),
            contextvars.copy_context(),
            image_job=image_job,
        )
        ticket = Ticket(model_id, priority=priority, steps=steps, payload=job)
        with self._lock:
            if self._closed:
                raise JobCancelledError()
            if len(self._queue) >= self.queue_max:
                raise QueueFullError(len(self._queue), self._retry_after_s())
            self._queue.push(ticket)
            self._report_queue_locked()
            position, eta = self._position_locked(ticket)
            # Under the lock: `close` cannot shut the executor down between the push and this.
            self._executor.submit(self._run_next)
        sink(Progress(Stage.QUEUED, model_id=model_id or "", queue_position=position, eta_s=eta))
        try:
            value = await job.future
        except asyncio.CancelledError:
            cancel.set()
            with self._lock:
                self._queue.remove(ticket)
                self._report_queue_locked()
            raise
        return Finished(value, job.started - job.submitted)

    def close(self) -> None:
        """Cancels waiting jobs, stops the running one at its next step, and joins the thread."""
        with self._lock:
            self._closed = True
            for ticket in self._queue.predicted_order(None):
                ticket.payload.cancel.set()
            running = list(self._running)
        for ticket in running:
            ticket.payload.cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=False)

    # ----- on the GPU thread -----

    def _run_next(self) -> None:
        with self._lock:
            ticket = self._queue.pop_next(self.engine.loaded_model_id)
            if ticket is None:
                return
            batch = [ticket, *self._companions_locked(ticket)]
            self._running = batch
            self._report_queue_locked()
            updates = self._positions_locked()
        for waiting, position, eta in updates:
            waiting.payload.on_progress(
                Progress(Stage.QUEUED, model_id=waiting.model_id or "", queue_position=position, eta_s=eta)
            )
        started = time.perf_counter()
        for member in batch:
            member.payload.started = started
            self.engine.metrics.queue_wait.labels(member.model_id or "").observe(started - member.payload.submitted)
        resident_before = self.engine.loaded_model_id
        try:
            outcomes = self._run_images(batch) if ticket.payload.image_job is not None else [self._run_work(ticket)]
        finally:
            with self._lock:
                self._running = []
        self._observe(batch, outcomes, resident_before, time.perf_counter() - started)
        for member, (outcome, failed) in zip(batch, outcomes, strict=True):
            job: _Job = member.payload
            job.loop.call_soon_threadsafe(_settle, job.future, outcome, failed)
        del outcomes

    def _companions_locked(self, leader: Ticket) -> list[Ticket]:
        """Waiting jobs that can share the leader's pipeline call: its batch key, room under max_batch_images."""
        job: ImageJob | None = leader.payload.image_job
        key = job.batch_key if job is not None else None
        if job is None or key is None:
            return []
        room = self.engine.max_batch_images - job.image_count
        taken: list[Ticket] = []
        for waiting in self._queue.waiting():
            other: ImageJob | None = waiting.payload.image_job
            if room <= 0:
                break
            if other is None or other.batch_key != key or other.image_count > room or waiting.payload.cancel.is_set():
                continue
            self._queue.take(waiting)
            taken.append(waiting)
            room -= other.image_count
        return taken

    def _run_work(self, ticket: Ticket) -> tuple[Any, bool]:
        job: _Job = ticket.payload
        assert job.work is not None
        try:
            if job.cancel.is_set():
                raise JobCancelledError()
            return job.context.run(job.work, job.on_progress, job.cancel), False
        except BaseException as error:
            return error, True

    def _run_images(self, batch: list[Ticket]) -> list[tuple[Any, bool]]:
        parts = [BatchPart(t.payload.image_job, t.payload.on_progress, t.payload.cancel) for t in batch]
        try:
            # The leader's context: its request id tags the batch's log lines.
            results = batch[0].payload.context.run(self.engine.run_batch, parts)
        except BaseException as error:
            return [(error, True)] * len(batch)
        return [(result, isinstance(result, BaseException)) for result in results]

    def _observe(
        self, batch: list[Ticket], outcomes: list[tuple[Any, bool]], resident_before: str | None, elapsed: float
    ) -> None:
        """Counts a model switch and updates the cost model from a finished job or batch."""
        resident_after = self.engine.loaded_model_id
        if resident_after is not None and resident_after != resident_before:
            self.switches += 1
            self.engine.metrics.switches.inc()
        steps = sum(member.steps for member in batch)
        succeeded = [outcome for outcome, failed in outcomes if not failed]
        if not succeeded or not steps:
            return
        load_s = float(getattr(succeeded[0], "load_s", 0.0))
        if load_s:
            self.costs.observe_switch(load_s)
        # Per image-step: a batch runs its jobs' steps together, so the ETAs of jobs behind it stay honest.
        self.costs.observe_step((elapsed - load_s) / steps)

    # ----- estimates (under the lock) -----

    def _report_queue_locked(self) -> None:
        self.engine.metrics.set_queue(ticket.model_id for ticket in self._queue.predicted_order(None))

    def _positions_locked(self) -> list[tuple[Ticket, int, float]]:
        order = self._queue.predicted_order(self._resident_after_running())
        etas = self._etas(order)
        return [(ticket, index, eta) for index, (ticket, eta) in enumerate(zip(order, etas, strict=True))]

    def _position_locked(self, ticket: Ticket) -> tuple[int, float]:
        for waiting, position, eta in self._positions_locked():
            if waiting is ticket:
                return position, eta
        return 0, 0.0

    def _resident_after_running(self) -> str | None:
        if self._running and self._running[0].model_id is not None:
            return self._running[0].model_id
        return self.engine.loaded_model_id

    def _running_rest_s(self) -> float:
        """Seconds until the running job or batch ends (assumed half done), 0 when none runs."""
        return sum(ticket.steps for ticket in self._running) * self.costs.step_s / 2

    def _etas(self, order: list[Ticket]) -> list[float]:
        """Seconds until each job finishes: the running job's rest, then each job ahead, plus switches."""
        clock = self._running_rest_s()
        model = self._resident_after_running()
        etas = []
        for ticket in order:
            if ticket.model_id is not None and ticket.model_id != model:
                clock += self.costs.switch_s
                model = ticket.model_id
            clock += ticket.steps * self.costs.step_s
            etas.append(clock)
        return etas

    def _retry_after_s(self) -> float:
        """When a turned-away caller should try again: once the first place is expected to free (the running
        job ends), plus jitter spread up to when the whole queue is expected to have run, so callers turned
        away together come back one by one as places free instead of all at once."""
        first_free = self._running_rest_s()
        etas = self._etas(self._queue.predicted_order(self._resident_after_running()))
        spread = max((etas[-1] if etas else first_free) - first_free, 0.0)
        return max(_MIN_RETRY_S, first_free + self._jitter.uniform(0.0, spread))


def _drop(_: Progress) -> None:
    return None


def _settle(future: asyncio.Future[Any], outcome: Any, failed: bool) -> None:
    if future.done():
        return
    if failed:
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
