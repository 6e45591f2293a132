"""DiffusionService's work, proto in and out: validate (job_requests), run on the GPU worker, map (proto_mapping)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image

from adgen.diffusion.v1 import diffusion_service_pb2 as pb
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.engine import Progress, ProgressSink, UnloadReport
from adgen_diffusion.errors import ModelNotCachedError
from adgen_diffusion.images import RAW_RGB, EncodedImage, encode_image
from adgen_diffusion.job_requests import PreparedJob, prepare_edit, prepare_generate, registry_entry
from adgen_diffusion.memory import MemoryReport
from adgen_diffusion.planner import PlanDecision
from adgen_diffusion.proto_mapping import (
    duration,
    fill_result,
    generation_info,
    mapped_errors,
    memory_proto,
    model_proto,
    unload_incomplete,
)
from adgen_diffusion.registry import ModelEntry
from adgen_diffusion.worker import Finished, GpuWorker, Work
from adgen_runtime.auth import Role, require_role
from adgen_runtime.errors import BadField, invalid_fields

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")


def _require_admin_for_priority(prepared: PreparedJob) -> None:
    # Jumping the queue delays everyone else's jobs: only admins may (anyone, while authentication is off).
    if prepared.priority > 0:
        require_role(Role.ADMIN, "A priority above 0")


@dataclass(frozen=True)
class JobResult:
    """A finished job's images (files or raw pixels), their seeds and the facts about them."""

    encoded: list[EncodedImage]
    seeds: list[int]
    info: pb.GenerationInfo

    def write_to(self, result: pb.GenerateResponse | pb.EditResponse) -> None:
        """Fills the unary response, or the stream's result, in place (see proto_mapping.fill_result)."""
        fill_result(result, self.encoded, self.seeds, self.info)


# Turns one output image into its file (or raw pixels) in a named format.
Encoder = Callable[[Image.Image, str], EncodedImage]


class DiffusionCore:
    """The service's work, behind a servicer that only translates calls: validation → GPU worker → proto mapping."""

    def __init__(
        self,
        worker: GpuWorker,
        settings: DiffusionSettings,
        on_clean_changed: Callable[[bool], Awaitable[None]] | None = None,
        *,
        encoder: Encoder = encode_image,
    ) -> None:
        self.worker = worker
        self.engine = worker.engine
        self.registry = worker.engine.registry
        self.settings = settings
        self._on_clean_changed = on_clean_changed
        self._reported_clean = True
        self._encode = encoder
        # File encoding runs here, not on the GPU thread: job N encodes while job N+1 denoises.
        self._encoder_pool = ThreadPoolExecutor(max_workers=settings.encode_threads, thread_name_prefix="encode")

    def close(self) -> None:
        """Waits for encodes in flight and stops the encode threads."""
        self._encoder_pool.shutdown(wait=True)

    # ----- operator calls -----

    async def list_models(self) -> pb.ListModelsResponse:
        entries = list(self.registry)
        # Cache lookups and planning (meta-device sizing on first use) are blocking: off the event loop.
        facts = await asyncio.to_thread(lambda: [(self.engine.is_available(e), self._plan(e.id)) for e in entries])
        return pb.ListModelsResponse(
            models=[self._model(e, available, plan) for e, (available, plan) in zip(entries, facts, strict=True)]
        )

    async def load_model(self, request: pb.LoadModelRequest) -> pb.LoadModelResponse:
        model_id = request.model_id.strip()
        if not model_id:
            raise invalid_fields([BadField("model_id", "must name a registry model")])
        entry = registry_entry(self.registry, model_id)
        await self._require_fit(entry.id)
        done = await self.submit(entry.id, lambda progress, _: self.engine.load(entry.id, progress))
        report = done.value
        unloaded = report.unloaded.model_id if report.unloaded is not None else None
        return pb.LoadModelResponse(
            model=self._model(entry, True, await asyncio.to_thread(self._plan, entry.id)),
            memory=memory_proto(report.memory),
            load_duration=duration(report.duration_s),
            unloaded_model_id=unloaded or "",
        )

    async def unload_model(self, request: pb.UnloadModelRequest) -> pb.UnloadModelResponse:
        wanted = request.model_id.strip()
        if wanted:
            registry_entry(self.registry, wanted)

        def unload(progress: ProgressSink, cancel: threading.Event) -> UnloadReport | MemoryReport:
            # Decided on the GPU thread, so no load can slip in between the check and the unload.
            if wanted and self.engine.loaded_model_id != wanted:
                return self.engine.memory_now()
            return self.engine.unload()

        report = (await self.submit(None, unload)).value
        if isinstance(report, MemoryReport):
            return pb.UnloadModelResponse(memory=memory_proto(report))
        if not report.memory.verified:
            raise unload_incomplete(report)
        return pb.UnloadModelResponse(
            model_id=report.model_id or "",
            memory=memory_proto(report.memory),
            unload_duration=duration(report.duration_s),
        )

    # ----- validate -----

    async def prepare_generate_job(self, request: pb.GenerateRequest, *, prefix: str) -> PreparedJob:
        entry = registry_entry(self.registry, request.model_id or self.settings.default_model)
        prepared = prepare_generate(request, entry, prefix=prefix)
        _require_admin_for_priority(prepared)
        await self._require_fit(entry.id, prepared)
        return prepared

    async def prepare_edit_job(self, request: pb.EditRequest, *, prefix: str) -> PreparedJob:
        entry = registry_entry(self.registry, request.model_id or self.settings.default_edit_model)
        # Decoding a photo of up to max_input_pixels is blocking work: off the event loop.
        prepared = await asyncio.to_thread(
            lambda: prepare_edit(
                request,
                entry,
                max_bytes=self.settings.max_input_bytes,
                max_pixels=self.settings.max_input_pixels,
                prefix=prefix,
            )
        )
        _require_admin_for_priority(prepared)
        await self._require_fit(entry.id, prepared)
        return prepared

    async def _require_fit(self, model_id: str, prepared: PreparedJob | None = None) -> None:
        """MODEL_DOES_NOT_FIT before queueing, so a job that can never run does not wait (the engine checks again)."""
        job = prepared.job if prepared is not None else None
        with mapped_errors():
            if job is None:
                await asyncio.to_thread(self.engine.require_fit, model_id)
            else:
                await asyncio.to_thread(self.engine.require_fit, model_id, job.width, job.height, job.task)

    # ----- run -----

    async def stream(self, prepared: PreparedJob, cancel: threading.Event) -> AsyncIterator[Progress | JobResult]:
        """Progress events as they happen, then the result; closing the stream cancels the job."""
        events: asyncio.Queue[Progress] = asyncio.Queue()
        task = asyncio.ensure_future(self.execute(prepared, cancel, events.put_nowait))
        getter: asyncio.Future[Progress] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                # Before draining: a pending getter would otherwise steal an event once we yield.
                getter.cancel()
                while not events.empty():
                    yield events.get_nowait()
                yield task.result()
                return
        finally:
            if getter is not None:
                getter.cancel()
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                # The caller left after the job ended: mark its outcome seen so asyncio does not log it.
                task.exception()

    async def execute(
        self, prepared: PreparedJob, cancel: threading.Event, on_progress: ProgressSink | None
    ) -> JobResult:
        """Runs the job; setting `cancel` stops it at the next step."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        job = prepared.job
        done = await self._on_worker(
            self.worker.submit_images(job, on_progress=on_progress, cancel=cancel, priority=prepared.priority)
        )
        output = done.value
        encoded, encode_s = await loop.run_in_executor(
            self._encoder_pool, self._encode_all, output.images, prepared.output_format
        )
        info = generation_info(output, queue_s=done.queue_s, encode_s=encode_s, total_s=loop.time() - started)
        return JobResult(encoded, output.seeds, info)

    def _encode_all(self, images: list[Image.Image], output_format: str) -> tuple[list[EncodedImage], float]:
        """The job's images in `output_format`, and the seconds it took (0 for raw pixels: nothing is encoded)."""
        started = time.perf_counter()
        encoded = [self._encode(image, output_format) for image in images]
        seconds = 0.0 if output_format == RAW_RGB else time.perf_counter() - started
        self.engine.metrics.encode_duration.labels(output_format).observe(seconds)
        return encoded, seconds

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
        """The worker's `submit` with engine errors mapped; readiness is updated even when the job failed."""
        return await self._on_worker(
            self.worker.submit(model_id, work, on_progress=on_progress, cancel=cancel, priority=priority, steps=steps)
        )

    async def _on_worker(self, queued: Awaitable[Finished[T]]) -> Finished[T]:
        try:
            with mapped_errors():
                return await queued
        finally:
            await self._report_cleanliness()

    # ----- map -----

    def _plan(self, model_id: str) -> PlanDecision | None:
        """The planner's decision, or None where it cannot plan (a tiny twin that is not built)."""
        try:
            return self.engine.plan(model_id)
        except ModelNotCachedError:
            return None

    def _model(self, entry: ModelEntry, available: bool, plan: PlanDecision | None) -> pb.Model:
        state = self.engine.state_of(entry.id)
        return model_proto(entry, state, available=available, tiny=self.registry.tiny, plan=plan)

    async def _report_cleanliness(self) -> None:
        """Readiness follows the engine: NOT_SERVING after an unverified unload, SERVING once clean again."""
        clean = self.engine.clean
        if self._on_clean_changed is not None and clean != self._reported_clean:
            self._reported_clean = clean
            await self._on_clean_changed(clean)
