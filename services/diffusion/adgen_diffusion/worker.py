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

from adgen_diffusion.engine import DiffusionEngine, Progress, ProgressSink, Stage
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
    work: Work[Any]
    cancel: threading.Event
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    on_progress: ProgressSink
    submitted: float
    # The caller's context (request id for log lines) carried onto the GPU thread.
    context: contextvars.Context
    started: float = 0.0


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
        self._running: Ticket | None = None
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
        loop = asyncio.get_running_loop()
        cancel = cancel or threading.Event()
        sink = on_progress or _drop

        def from_thread(event: Progress) -> None:
            loop.call_soon_threadsafe(sink, event)

        job = _Job(
            work, cancel, loop, loop.create_future(), from_thread, time.perf_counter(), contextvars.copy_context()
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
            running = self._running
        if running is not None:
            running.payload.cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=False)

    # ----- on the GPU thread -----

    def _run_next(self) -> None:
        with self._lock:
            ticket = self._queue.pop_next(self.engine.loaded_model_id)
            if ticket is None:
                return
            self._running = ticket
            self._report_queue_locked()
            updates = self._positions_locked()
        for waiting, position, eta in updates:
            waiting.payload.on_progress(
                Progress(Stage.QUEUED, model_id=waiting.model_id or "", queue_position=position, eta_s=eta)
            )
        job: _Job = ticket.payload
        job.started = time.perf_counter()
        self.engine.metrics.queue_wait.labels(ticket.model_id or "").observe(job.started - job.submitted)
        resident_before = self.engine.loaded_model_id
        outcome: Any
        failed = False
        try:
            if job.cancel.is_set():
                raise JobCancelledError()
            outcome = job.context.run(job.work, job.on_progress, job.cancel)
        except BaseException as error:
            outcome, failed = error, True
        finally:
            with self._lock:
                self._running = None
        elapsed = time.perf_counter() - job.started
        resident_after = self.engine.loaded_model_id
        if resident_after is not None and resident_after != resident_before:
            self.switches += 1
            self.engine.metrics.switches.inc()
        if not failed and ticket.steps:
            load_s = float(getattr(outcome, "load_s", 0.0))
            if load_s:
                self.costs.observe_switch(load_s)
            self.costs.observe_step((elapsed - load_s) / ticket.steps)
        job.loop.call_soon_threadsafe(_settle, job.future, outcome, failed)
        del outcome, job

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
        running = self._running
        if running is not None and running.model_id is not None:
            return running.model_id
        return self.engine.loaded_model_id

    def _running_rest_s(self) -> float:
        """Seconds until the running job ends (assumed half done), 0 when none runs."""
        running = self._running
        return running.steps * self.costs.step_s / 2 if running is not None else 0.0

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
