"""Engine results as protos, and engine errors as the statuses callers can act on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from google.protobuf import duration_pb2

from adgen.diffusion.v1 import diffusion_service_pb2 as pb
from adgen.type.v1 import error_reason_pb2 as reasons
from adgen.type.v1 import image_pb2, progress_pb2
from adgen_diffusion import errors
from adgen_diffusion.engine import JobOutput, ModelState, Progress, Stage, UnloadReport
from adgen_diffusion.images import EncodedImage
from adgen_diffusion.job_requests import MODEL_RESOURCE
from adgen_diffusion.memory import MemoryReport
from adgen_diffusion.planner import PlanDecision, Residency
from adgen_diffusion.registry import ModelEntry, Quantization, Task
from adgen_runtime.errors import (
    Cancelled,
    FailedPrecondition,
    Internal,
    NotFound,
    ResourceExhausted,
    ServiceError,
)

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
_RESIDENCIES = {
    Residency.DEVICE: pb.COMPONENT_RESIDENCY_DEVICE,
    Residency.RELEASED: pb.COMPONENT_RESIDENCY_RELEASED_AFTER_ENCODE,
    Residency.STREAMED: pb.COMPONENT_RESIDENCY_STREAMED_FROM_DISK,
    Residency.HOST: pb.COMPONENT_RESIDENCY_HOST_OFFLOAD,
}
_QUANTIZATIONS = {
    Quantization.NONE: pb.COMPONENT_QUANTIZATION_NONE,
    Quantization.FLOAT8: pb.COMPONENT_QUANTIZATION_FLOAT8,
    Quantization.INT8: pb.COMPONENT_QUANTIZATION_INT8,
    Quantization.NF4: pb.COMPONENT_QUANTIZATION_NF4,
}


def model_proto(
    entry: ModelEntry, state: ModelState, *, available: bool, tiny: bool, plan: PlanDecision | None = None
) -> pb.Model:
    return pb.Model(
        id=entry.id,
        display_name=entry.display_name,
        source=f"tiny twin of {_source(entry)}" if tiny else _source(entry),
        revision="tiny" if tiny else entry.revision,
        tasks=[_TASKS[t] for t in Task if t in entry.tasks],
        state=_STATES[state],
        license=entry.license,
        commercial_use=entry.commercial_use,
        default_steps=entry.default_steps,
        default_guidance_scale=entry.default_guidance,
        size_multiple=entry.size_multiple,
        min_side=entry.min_side,
        max_side=entry.max_side,
        available_locally=available,
        plan=plan_proto(plan) if plan is not None else None,
    )


def plan_proto(decision: PlanDecision) -> pb.MemoryPlan:
    """The planner's decision: the chosen plan, or the smallest one considered when nothing fits."""
    plan = decision.chosen or decision.smallest
    return pb.MemoryPlan(
        fits=decision.fits,
        summary=plan.summary,
        components=[
            pb.ComponentPlacement(
                component=c.name,
                residency=_RESIDENCIES[c.residency],
                quantization=_QUANTIZATIONS[c.quantization],
                storage=c.storage,
                prequantized=c.prequantized,
                tiled=c.tiling,
                weight_bytes=c.weight_bytes,
            )
            for c in plan.components
        ],
        peak_device_bytes=plan.peak_device_bytes,
        peak_host_bytes=plan.peak_host_bytes,
        weight_bytes=plan.weight_bytes,
        quality_trade=plan.quality_trade,
        device_budget_bytes=decision.box.device_bytes,
        host_budget_bytes=decision.box.host_bytes,
        variant_repo=plan.variant.repo if plan.variant is not None else "",
        width=plan.width,
        height=plan.height,
    )


def fill_result(
    result: pb.GenerateResponse | pb.EditResponse,
    encoded: list[EncodedImage],
    seeds: list[int],
    info: pb.GenerationInfo,
) -> None:
    """Writes a job's images and info into the response that is sent, in place: building the images apart and
    passing them in would deep-copy each image's bytes once per enclosing message (megabytes of raw pixels)."""
    for e, seed in zip(encoded, seeds, strict=True):
        generated = result.images.add(seed=seed)
        generated.image.data = e.data
        generated.image.format = image_pb2.ImageFormat.Value(f"IMAGE_FORMAT_{e.format.upper()}")
        generated.image.width = e.width
        generated.image.height = e.height
        generated.image.stride = e.stride
    result.info.CopyFrom(info)


def generation_info(output: JobOutput, *, queue_s: float, encode_s: float, total_s: float) -> pb.GenerationInfo:
    """What produced the images and where the time went: `decode` is the VAE, `encode` the output files."""
    timings = pb.JobTimings(
        queue=duration(queue_s),
        load=duration(output.load_s),
        denoise=duration(output.denoise_s),
        decode=duration(output.decode_s),
        total=duration(total_s),
        encode=duration(encode_s),
    )
    return pb.GenerationInfo(
        model_id=output.model_id,
        model_revision=output.revision,
        num_inference_steps=output.steps,
        guidance_scale=output.guidance,
        timings=timings,
    )


def progress_proto(event: Progress) -> progress_pb2.Progress:
    message = progress_pb2.Progress(
        stage=_STAGES[event.stage],
        queue_position=event.queue_position,
        step=event.step,
        total_steps=event.total_steps,
        model_id=event.model_id,
    )
    if event.eta_s is not None:
        message.eta.CopyFrom(duration(event.eta_s))
    return message


def memory_proto(report: MemoryReport) -> pb.MemoryReport:
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


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(max(seconds, 0.0) * 1e9))
    return value


def unload_incomplete(report: UnloadReport) -> Internal:
    """The status for an unload whose memory check failed: what was left behind, for operators."""
    model_id = report.model_id or ""
    excess = report.memory.device_allocated_bytes - report.memory.baseline_device_allocated_bytes
    return Internal(
        reasons.ERROR_REASON_UNLOAD_INCOMPLETE,
        f"Unloading {model_id!r} left {report.memory.leaked_modules} modules and {excess} device bytes behind; "
        "the service is not ready until a clean state is restored.",
        resource=(MODEL_RESOURCE, model_id),
        metadata={"leaked_modules": str(report.memory.leaked_modules), "excess_device_bytes": str(excess)},
    )


def does_not_fit(error: errors.ModelDoesNotFitError) -> FailedPrecondition:
    """MODEL_DOES_NOT_FIT with the budgets and what the smallest plan needs, for programs to branch on."""
    return FailedPrecondition(
        reasons.ERROR_REASON_MODEL_DOES_NOT_FIT,
        str(error),
        resource=(MODEL_RESOURCE, error.model_id),
        metadata={
            "device_budget_bytes": str(error.device_budget),
            "host_budget_bytes": str(error.host_budget),
            "smallest_plan_device_bytes": str(error.smallest_device),
            "smallest_plan_host_bytes": str(error.smallest_host),
            "width": str(error.width),
            "height": str(error.height),
        },
    )


@contextlib.contextmanager
def mapped_errors() -> Iterator[None]:
    """Engine errors as the statuses callers can act on; anything else stays a generic INTERNAL."""
    try:
        yield
    except ServiceError:
        raise
    except errors.ModelNotFoundError as error:
        raise NotFound(
            reasons.ERROR_REASON_MODEL_NOT_FOUND, str(error), resource=(MODEL_RESOURCE, error.model_id)
        ) from None
    except errors.ModelNotCachedError as error:
        raise FailedPrecondition(
            reasons.ERROR_REASON_MODEL_NOT_CACHED, str(error), resource=(MODEL_RESOURCE, error.model_id)
        ) from None
    except errors.PlacementUnsupportedError as error:
        raise FailedPrecondition(
            reasons.ERROR_REASON_PLACEMENT_UNSUPPORTED, str(error), resource=(MODEL_RESOURCE, error.model_id)
        ) from None
    except errors.TaskUnsupportedError as error:
        raise FailedPrecondition(
            reasons.ERROR_REASON_MODEL_TASK_UNSUPPORTED, str(error), resource=(MODEL_RESOURCE, error.model_id)
        ) from None
    except errors.ModelDoesNotFitError as error:
        raise does_not_fit(error) from None
    except errors.ModelLoadError as error:
        raise FailedPrecondition(
            reasons.ERROR_REASON_MODEL_LOAD_FAILED, str(error), resource=(MODEL_RESOURCE, error.model_id)
        ) from None
    except errors.QueueFullError as error:
        raise ResourceExhausted(
            reasons.ERROR_REASON_QUEUE_FULL, str(error), retry_after_s=error.retry_after_s
        ) from None
    except errors.JobCancelledError as error:
        raise Cancelled(reasons.ERROR_REASON_JOB_CANCELLED, str(error)) from None


def _source(entry: ModelEntry) -> str:
    """The repo the weights come from, plus the LoRA fused into them when there is one."""
    if entry.lora is None:
        return entry.repo
    return f"{entry.repo} + LoRA {entry.lora.repo}/{entry.lora.weight_name}"
