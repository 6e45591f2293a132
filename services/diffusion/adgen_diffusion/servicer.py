"""DiffusionService: validate requests, hand jobs to the GPU worker, map results and errors to protos."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf import duration_pb2

from adgen.diffusion.v1 import diffusion_service_pb2 as pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as pb_grpc
from adgen.type.v1 import error_reason_pb2 as reasons
from adgen.type.v1 import image_pb2, progress_pb2
from adgen_diffusion import errors
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.engine import (
    ImageJob,
    JobOutput,
    ModelState,
    Progress,
    ProgressSink,
    Stage,
    UnloadReport,
    random_seed,
)
from adgen_diffusion.images import InvalidImageError, decode_image, encode_image
from adgen_diffusion.memory import MemoryReport
from adgen_diffusion.registry import ModelEntry, Task
from adgen_diffusion.worker import Finished, GpuWorker
from adgen_runtime import Context
from adgen_runtime.errors import (
    AdGenError,
    Cancelled,
    FailedPrecondition,
    FieldViolation,
    Internal,
    NotFound,
    ResourceExhausted,
    invalid_fields,
)

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = "adgen.diffusion.v1.DiffusionService"
_MAX_STEPS = 100
_MAX_IMAGES = 4
_MAX_GUIDANCE = 30.0
_MODEL_RESOURCE = "adgen.diffusion.v1.Model"
_TASKS = {Task.TEXT_TO_IMAGE: pb.MODEL_TASK_TEXT_TO_IMAGE, Task.IMAGE_EDIT: pb.MODEL_TASK_IMAGE_EDIT}
_STATES = {
    ModelState.UNLOADED: pb.MODEL_STATE_UNLOADED,
    ModelState.LOADING: pb.MODEL_STATE_LOADING,
    ModelState.LOADED: pb.MODEL_STATE_LOADED,
    ModelState.UNLOADING: pb.MODEL_STATE_UNLOADING,
    ModelState.FAILED: pb.MODEL_STATE_FAILED,
}
_STAGES = {
    Stage.QUEUED: progress_pb2.PROGRESS_STAGE_QUEUED,
    Stage.UNLOADING: progress_pb2.PROGRESS_STAGE_UNLOADING,
    Stage.LOADING: progress_pb2.PROGRESS_STAGE_LOADING,
    Stage.DENOISING: progress_pb2.PROGRESS_STAGE_DENOISING,
    Stage.DECODING: progress_pb2.PROGRESS_STAGE_DECODING,
    Stage.DONE: progress_pb2.PROGRESS_STAGE_DONE,
}
_FORMATS = {
    image_pb2.IMAGE_FORMAT_UNSPECIFIED: "png",
    image_pb2.IMAGE_FORMAT_PNG: "png",
    image_pb2.IMAGE_FORMAT_JPEG: "jpeg",
    image_pb2.IMAGE_FORMAT_WEBP: "webp",
}
_FORMAT_ENUMS = {
    "png": image_pb2.IMAGE_FORMAT_PNG,
    "jpeg": image_pb2.IMAGE_FORMAT_JPEG,
    "webp": image_pb2.IMAGE_FORMAT_WEBP,
}

R = TypeVar("R")


@dataclass(frozen=True)
class _Prepared:
    """A validated request: the job plus what the response needs."""

    job: ImageJob
    output_format: str
    priority: int


class DiffusionServicer(pb_grpc.DiffusionServiceServicer):
    """Thin: validation and proto mapping here; all model work goes through the GPU worker."""

    def __init__(
        self,
        worker: GpuWorker,
        settings: DiffusionSettings,
        on_clean_changed: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self.worker = worker
        self.engine = worker.engine
        self.registry = worker.engine.registry
        self.settings = settings
        self._on_clean_changed = on_clean_changed
        self._reported_clean = True

    # ----- operator RPCs -----

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        entries = list(self.registry)
        available = await asyncio.to_thread(lambda: [self.engine.is_available(e) for e in entries])
        return pb.ListModelsResponse(models=[self._model(e, a) for e, a in zip(entries, available, strict=True)])

    async def LoadModel(self, request: pb.LoadModelRequest, context: Context) -> pb.LoadModelResponse:
        if not request.model_id.strip():
            raise invalid_fields([FieldViolation("model_id", "must name a registry model")])
        entry = self._entry(request.model_id)
        with _mapped_errors():
            done = await self.worker.submit(entry.id, lambda progress, _: self.engine.load(entry.id, progress))
        await self._report_cleanliness()
        report = done.value
        return pb.LoadModelResponse(
            model=self._model(entry, True),
            memory=_memory(report.memory),
            load_duration=_duration(report.duration_s),
            unloaded_model_id=report.unloaded.model_id or "" if report.unloaded else "",
        )

    async def UnloadModel(self, request: pb.UnloadModelRequest, context: Context) -> pb.UnloadModelResponse:
        wanted = request.model_id.strip()
        if wanted:
            self._entry(wanted)

        def unload(progress: ProgressSink, cancel: threading.Event) -> UnloadReport | None:
            if wanted and self.engine.loaded_model_id != wanted:
                return None
            return self.engine.unload()

        with _mapped_errors():
            done = await self.worker.submit(None, unload)
        await self._report_cleanliness()
        report = done.value
        if report is None:
            return pb.UnloadModelResponse(memory=_memory(self.engine.memory_now()))
        if not report.memory.verified:
            excess = report.memory.device_allocated_bytes - report.memory.baseline_device_allocated_bytes
            raise Internal(
                reasons.ERROR_REASON_UNLOAD_INCOMPLETE,
                str(errors.UnloadIncompleteError(report.model_id or "", report.memory.leaked_modules, excess)),
                resource=(_MODEL_RESOURCE, report.model_id or ""),
                metadata={"leaked_modules": str(report.memory.leaked_modules), "excess_device_bytes": str(excess)},
            )
        return pb.UnloadModelResponse(
            model_id=report.model_id or "",
            memory=_memory(report.memory),
            unload_duration=_duration(report.duration_s),
        )

    # ----- jobs -----

    async def Generate(self, request: pb.GenerateRequest, context: Context) -> pb.GenerateResponse:
        prepared = self._prepare_generate(request, prefix="")
        images, info = await self._execute(prepared, context, None)
        return pb.GenerateResponse(images=images, info=info)

    async def StreamGenerate(
        self, request: pb.StreamGenerateRequest, context: Context
    ) -> AsyncIterator[pb.StreamGenerateResponse]:
        prepared = self._prepare_generate(request.request, prefix="request.")
        async for event in self._stream(prepared, context):
            if isinstance(event, Progress):
                yield pb.StreamGenerateResponse(progress=_progress(event))
            else:
                yield pb.StreamGenerateResponse(result=pb.GenerateResponse(images=event[0], info=event[1]))

    async def Edit(self, request: pb.EditRequest, context: Context) -> pb.EditResponse:
        prepared = await self._prepare_edit(request, prefix="")
        images, info = await self._execute(prepared, context, None)
        return pb.EditResponse(images=images, info=info)

    async def StreamEdit(self, request: pb.StreamEditRequest, context: Context) -> AsyncIterator[pb.StreamEditResponse]:
        prepared = await self._prepare_edit(request.request, prefix="request.")
        async for event in self._stream(prepared, context):
            if isinstance(event, Progress):
                yield pb.StreamEditResponse(progress=_progress(event))
            else:
                yield pb.StreamEditResponse(result=pb.EditResponse(images=event[0], info=event[1]))

    async def _stream(
        self, prepared: _Prepared, context: Context
    ) -> AsyncIterator[Progress | tuple[list[pb.GeneratedImage], pb.GenerationInfo]]:
        events: asyncio.Queue[Progress] = asyncio.Queue()
        task = asyncio.ensure_future(self._execute(prepared, context, events.put_nowait))
        try:
            while True:
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                getter.cancel()
                while not events.empty():
                    yield events.get_nowait()
                yield task.result()
                return
        finally:
            if not task.done():
                task.cancel()

    async def _execute(
        self, prepared: _Prepared, context: Context, on_progress: ProgressSink | None
    ) -> tuple[list[pb.GeneratedImage], pb.GenerationInfo]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        cancel = threading.Event()

        # A call that ends early (client cancel, deadline) stops its job at the next step.
        def stop_job(_: Context) -> None:
            cancel.set()

        context.add_done_callback(stop_job)  # type: ignore[arg-type]  # the stub types the callback as a class
        job = prepared.job
        with _mapped_errors():
            done: Finished[JobOutput] = await self.worker.submit(
                job.model_id,
                lambda progress, stop: self.engine.run(job, progress, stop),
                on_progress=on_progress,
                cancel=cancel,
                priority=prepared.priority,
                steps=job.steps * job.image_count,
            )
        await self._report_cleanliness()
        output = done.value
        encode_started = loop.time()
        encoded = await asyncio.to_thread(lambda: [encode_image(i, prepared.output_format) for i in output.images])
        encode_s = loop.time() - encode_started
        images = [
            pb.GeneratedImage(
                image=image_pb2.Image(data=e.data, format=_FORMAT_ENUMS[e.format], width=e.width, height=e.height),
                seed=seed,
            )
            for e, seed in zip(encoded, output.seeds, strict=True)
        ]
        timings = pb.JobTimings(
            queue=_duration(done.queue_s),
            load=_duration(output.load_s),
            denoise=_duration(output.denoise_s),
            decode=_duration(output.decode_s + encode_s),
            total=_duration(loop.time() - started),
        )
        info = pb.GenerationInfo(
            model_id=output.model_id,
            model_revision=output.revision,
            num_inference_steps=output.steps,
            guidance_scale=output.guidance,
            timings=timings,
        )
        return images, info

    # ----- validation -----

    def _prepare_generate(self, request: pb.GenerateRequest, *, prefix: str) -> _Prepared:
        entry = self._entry(request.model_id or self.settings.default_model)
        violations: list[FieldViolation] = []
        if not request.prompt.strip():
            violations.append(FieldViolation(f"{prefix}prompt", "must not be empty"))
        width, height = self._size(entry, request.width, request.height, prefix, violations)
        job, output_format = self._common(entry, request, Task.TEXT_TO_IMAGE, prefix, violations)
        _raise_if_any(violations)
        return _Prepared(
            ImageJob(entry.id, Task.TEXT_TO_IMAGE, request.prompt.strip(), width, height, *job),
            output_format,
            request.priority,
        )

    async def _prepare_edit(self, request: pb.EditRequest, *, prefix: str) -> _Prepared:
        entry = self._entry(request.model_id or self.settings.default_edit_model)
        violations: list[FieldViolation] = []
        if not request.instruction.strip():
            violations.append(FieldViolation(f"{prefix}instruction", "must not be empty"))
        photo = None
        try:
            photo = await asyncio.to_thread(
                decode_image,
                request.image.data,
                max_bytes=self.settings.max_input_bytes,
                max_pixels=self.settings.max_input_pixels,
            )
        except InvalidImageError as error:
            violations.append(FieldViolation(f"{prefix}image.data", str(error), "INVALID_IMAGE"))
        width, height = request.width, request.height
        if photo is not None and width == 0 and height == 0:
            width, height = _native_size(entry, photo.width / photo.height)
        width, height = self._size(entry, width, height, prefix, violations)
        job, output_format = self._common(entry, request, Task.IMAGE_EDIT, prefix, violations)
        _raise_if_any(violations)
        return _Prepared(
            ImageJob(entry.id, Task.IMAGE_EDIT, request.instruction.strip(), width, height, *job, image=photo),
            output_format,
            request.priority,
        )

    def _common(
        self,
        entry: ModelEntry,
        request: pb.GenerateRequest | pb.EditRequest,
        task: Task,
        prefix: str,
        violations: list[FieldViolation],
    ) -> tuple[tuple[int, float, int, int], str]:
        if not entry.supports(task):
            raise FailedPrecondition(
                reasons.ERROR_REASON_MODEL_TASK_UNSUPPORTED,
                str(errors.TaskUnsupportedError(entry.id, task.value.replace("_", "-"))),
                resource=(_MODEL_RESOURCE, entry.id),
            )
        steps = request.num_inference_steps if request.HasField("num_inference_steps") else entry.default_steps
        if not entry.min_steps <= steps <= _MAX_STEPS:
            violations.append(
                FieldViolation(
                    f"{prefix}num_inference_steps", f"must be between {entry.min_steps} and {_MAX_STEPS} for {entry.id}"
                )
            )
        guidance = request.guidance_scale if request.HasField("guidance_scale") else entry.default_guidance
        if not (math.isfinite(guidance) and 0 <= guidance <= _MAX_GUIDANCE):
            violations.append(FieldViolation(f"{prefix}guidance_scale", f"must be between 0 and {_MAX_GUIDANCE:g}"))
        count = request.image_count or 1
        if not 1 <= count <= _MAX_IMAGES:
            violations.append(FieldViolation(f"{prefix}image_count", f"must be between 1 and {_MAX_IMAGES}"))
        output_format = _FORMATS.get(request.output_format)
        if output_format is None:
            violations.append(FieldViolation(f"{prefix}output_format", "must be PNG, JPEG or WebP"))
        seed = request.seed if request.HasField("seed") else random_seed()
        return (steps, float(guidance), seed, count), output_format or "png"

    def _size(
        self, entry: ModelEntry, width: int, height: int, prefix: str, violations: list[FieldViolation]
    ) -> tuple[int, int]:
        width, height = width or entry.native_side, height or entry.native_side
        for name, value in (("width", width), ("height", height)):
            if not entry.min_side <= value <= entry.max_side or value % entry.size_multiple:
                violations.append(
                    FieldViolation(
                        f"{prefix}{name}",
                        f"must be a multiple of {entry.size_multiple} between {entry.min_side} and {entry.max_side}"
                        f" for {entry.id}",
                        "INVALID_SIZE",
                    )
                )
        return width, height

    def _entry(self, model_id: str) -> ModelEntry:
        try:
            return self.registry.get(model_id)
        except errors.ModelNotFoundError as error:
            raise NotFound(
                reasons.ERROR_REASON_MODEL_NOT_FOUND, str(error), resource=(_MODEL_RESOURCE, model_id)
            ) from None

    def _model(self, entry: ModelEntry, available: bool) -> pb.Model:
        return pb.Model(
            id=entry.id,
            display_name=entry.display_name,
            source=f"tiny twin of {_source(entry)}" if self.registry.tiny else _source(entry),
            revision="tiny" if self.registry.tiny else entry.revision,
            tasks=[_TASKS[t] for t in Task if t in entry.tasks],
            state=_STATES[self.engine.state_of(entry.id)],
            license=entry.license,
            commercial_use=entry.commercial_use,
            default_steps=entry.default_steps,
            default_guidance_scale=entry.default_guidance,
            size_multiple=entry.size_multiple,
            min_side=entry.min_side,
            max_side=entry.max_side,
            available_locally=available,
        )

    async def _report_cleanliness(self) -> None:
        """Readiness follows the engine: NOT_SERVING after an unverified unload, SERVING once clean again."""
        clean = self.engine.clean
        if self._on_clean_changed is not None and clean != self._reported_clean:
            self._reported_clean = clean
            await self._on_clean_changed(clean)


def _raise_if_any(violations: list[FieldViolation]) -> None:
    if not violations:
        return
    specific = {v.reason for v in violations}
    reason = reasons.ERROR_REASON_INVALID_ARGUMENT
    if specific == {"INVALID_SIZE"}:
        reason = reasons.ERROR_REASON_INVALID_SIZE
    elif specific == {"INVALID_IMAGE"}:
        reason = reasons.ERROR_REASON_INVALID_IMAGE
    raise invalid_fields(violations, reason)


def _native_size(entry: ModelEntry, aspect: float) -> tuple[int, int]:
    """About the model's native area at the photo's aspect, on the size grid and within the limits."""
    area = entry.native_side**2
    multiple = entry.size_multiple

    def snap(value: float) -> int:
        snapped = round(value / multiple) * multiple
        return min(max(snapped, entry.min_side), entry.max_side)

    return snap(math.sqrt(area * aspect)), snap(math.sqrt(area / aspect))


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    """Engine errors as the statuses callers can act on."""
    try:
        yield
    except AdGenError:
        raise
    except errors.ModelNotFoundError as error:
        raise NotFound(
            reasons.ERROR_REASON_MODEL_NOT_FOUND, str(error), resource=(_MODEL_RESOURCE, error.model_id)
        ) from None
    except errors.ModelNotCachedError as error:
        raise FailedPrecondition(
            reasons.ERROR_REASON_MODEL_NOT_CACHED, str(error), resource=(_MODEL_RESOURCE, error.model_id)
        ) from None
    except errors.PlacementUnsupportedError as error:
        raise FailedPrecondition(
            reasons.ERROR_REASON_PLACEMENT_UNSUPPORTED, str(error), resource=(_MODEL_RESOURCE, error.model_id)
        ) from None
    except errors.TaskUnsupportedError as error:
        raise FailedPrecondition(
            reasons.ERROR_REASON_MODEL_TASK_UNSUPPORTED, str(error), resource=(_MODEL_RESOURCE, error.model_id)
        ) from None
    except errors.ModelLoadError as error:
        raise FailedPrecondition(
            reasons.ERROR_REASON_MODEL_LOAD_FAILED, str(error), resource=(_MODEL_RESOURCE, error.model_id)
        ) from None
    except errors.QueueFullError as error:
        raise ResourceExhausted(
            reasons.ERROR_REASON_QUEUE_FULL, str(error), retry_after_s=error.retry_after_s
        ) from None
    except errors.JobCancelledError as error:
        raise Cancelled(reasons.ERROR_REASON_JOB_CANCELLED, str(error)) from None


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(max(seconds, 0.0) * 1e9))
    return value


def _memory(report: MemoryReport) -> pb.MemoryReport:
    return pb.MemoryReport(
        device_allocated_bytes=report.device_allocated_bytes,
        device_reserved_bytes=report.device_reserved_bytes,
        device_free_bytes=report.device_free_bytes,
        device_total_bytes=report.device_total_bytes,
        baseline_device_allocated_bytes=report.baseline_device_allocated_bytes,
        host_rss_bytes=report.host_rss_bytes,
        peak_host_anon_bytes=report.peak_host_anon_bytes,
        model_bytes=report.model_bytes,
        leaked_modules=report.leaked_modules,
        verified=report.verified,
    )


def _progress(event: Progress) -> progress_pb2.Progress:
    message = progress_pb2.Progress(
        stage=_STAGES[event.stage],
        queue_position=event.queue_position,
        step=event.step,
        total_steps=event.total_steps,
        model_id=event.model_id,
    )
    if event.eta_s is not None:
        message.eta.CopyFrom(_duration(event.eta_s))
    return message


def _source(entry: ModelEntry) -> str:
    """The repo the weights come from, plus the LoRA fused into them when there is one."""
    if entry.lora is None:
        return entry.repo
    return f"{entry.repo} + LoRA {entry.lora.repo}/{entry.lora.weight_name}"
