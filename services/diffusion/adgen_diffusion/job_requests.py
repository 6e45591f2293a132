"""Generate/Edit requests checked and resolved into engine jobs: defaults, sizes, knobs, field violations."""

from __future__ import annotations

import math
from dataclasses import dataclass

from adgen.diffusion.v1 import diffusion_service_pb2 as pb
from adgen.type.v1 import error_reason_pb2 as reasons
from adgen.type.v1 import image_pb2
from adgen_diffusion import errors
from adgen_diffusion.engine import ImageJob, random_seed
from adgen_diffusion.images import OUTPUT_FORMATS, RAW_RGB, decode_image
from adgen_diffusion.registry import ModelEntry, ModelRegistry, Task
from adgen_runtime.errors import BadField, FailedPrecondition, NotFound, invalid_fields
from adgen_runtime.photos import MAX_PHOTO_ASPECT, InvalidImageError
from adgen_runtime.text import control_character_violation
from adgen_wire.limits import MAX_VARIANTS

MAX_STEPS = 100
MAX_IMAGES = MAX_VARIANTS  # the contract's one limit on images per call
MAX_GUIDANCE = 30.0
MODEL_RESOURCE = "adgen.diffusion.v1.Model"
# Field-violation reasons that, when they are the only kind in a request, give the whole status its reason.
_INVALID_SIZE = "INVALID_SIZE"
_INVALID_IMAGE = "INVALID_IMAGE"


def _output_format(value: image_pb2.ImageFormat.ValueType) -> str | None:
    """The encoder's name for a proto ImageFormat (UNSPECIFIED means PNG), or None for a value it lacks."""
    if value == image_pb2.IMAGE_FORMAT_UNSPECIFIED:
        return "png"
    if value not in image_pb2.ImageFormat.values():
        return None
    name = image_pb2.ImageFormat.Name(value).removeprefix("IMAGE_FORMAT_").lower()
    return name if name in OUTPUT_FORMATS or name == RAW_RGB else None


@dataclass(frozen=True)
class PreparedJob:
    """A validated request: the engine job plus what scheduling and the response need."""

    job: ImageJob
    output_format: str
    priority: int


@dataclass(frozen=True)
class _Knobs:
    steps: int
    guidance: float
    seed: int
    image_count: int
    output_format: str


def registry_entry(registry: ModelRegistry, model_id: str) -> ModelEntry:
    """The registry entry for `model_id`, or NOT_FOUND naming it."""
    try:
        return registry.get(model_id)
    except errors.ModelNotFoundError as error:
        raise NotFound(reasons.ERROR_REASON_MODEL_NOT_FOUND, str(error), resource=(MODEL_RESOURCE, model_id)) from None


def prepare_generate(request: pb.GenerateRequest, entry: ModelEntry, *, prefix: str) -> PreparedJob:
    """A text-to-image job with defaults applied, or one INVALID_ARGUMENT naming every bad field."""
    _require_task(entry, Task.TEXT_TO_IMAGE)
    violations: list[BadField] = []
    if not request.prompt.strip():
        violations.append(BadField(f"{prefix}prompt", "must not be empty"))
    _check_characters(f"{prefix}prompt", request.prompt, violations)
    width, height = _checked_size(entry, request.width, request.height, prefix, violations)
    knobs = _checked_knobs(entry, request, prefix, violations)
    _raise_if_any(violations)
    job = ImageJob(
        entry.id,
        Task.TEXT_TO_IMAGE,
        request.prompt.strip(),
        width,
        height,
        knobs.steps,
        knobs.guidance,
        knobs.seed,
        knobs.image_count,
    )
    return PreparedJob(job, knobs.output_format, request.priority)


def prepare_edit(
    request: pb.EditRequest, entry: ModelEntry, *, max_bytes: int, max_pixels: int, prefix: str
) -> PreparedJob:
    """An edit job with the photo decoded and defaults applied. Blocking (decodes the photo): run it off the loop."""
    _require_task(entry, Task.IMAGE_EDIT)
    violations: list[BadField] = []
    if not request.instruction.strip():
        violations.append(BadField(f"{prefix}instruction", "must not be empty"))
    _check_characters(f"{prefix}instruction", request.instruction, violations)
    photo = None
    try:
        photo = decode_image(
            request.image.data, max_bytes=max_bytes, max_pixels=max_pixels, max_aspect=photo_aspect_limit(entry)
        )
    except InvalidImageError as error:
        violations.append(BadField(f"{prefix}image.data", str(error), _INVALID_IMAGE))
    width, height = request.width, request.height
    if photo is not None:
        width, height = _fill_from_aspect(entry, width, height, photo.width / photo.height)
    width, height = _checked_size(entry, width, height, prefix, violations)
    knobs = _checked_knobs(entry, request, prefix, violations)
    _raise_if_any(violations)
    job = ImageJob(
        entry.id,
        Task.IMAGE_EDIT,
        request.instruction.strip(),
        width,
        height,
        knobs.steps,
        knobs.guidance,
        knobs.seed,
        knobs.image_count,
        image=photo,
    )
    return PreparedJob(job, knobs.output_format, request.priority)


def _check_characters(field: str, text: str, violations: list[BadField]) -> None:
    # Line breaks may stay (text encoders take them); other control characters are refused.
    violation = control_character_violation(field, text)
    if violation is not None:
        violations.append(violation)


def _require_task(entry: ModelEntry, task: Task) -> None:
    # Checked first: no field of the request can make this model do the task.
    if not entry.supports(task):
        raise FailedPrecondition(
            reasons.ERROR_REASON_MODEL_TASK_UNSUPPORTED,
            str(errors.TaskUnsupportedError(entry.id, task.value.replace("_", "-"))),
            resource=(MODEL_RESOURCE, entry.id),
        )


def _checked_knobs(
    entry: ModelEntry, request: pb.GenerateRequest | pb.EditRequest, prefix: str, violations: list[BadField]
) -> _Knobs:
    steps = request.num_inference_steps if request.HasField("num_inference_steps") else entry.default_steps
    if not entry.min_steps <= steps <= MAX_STEPS:
        violations.append(
            BadField(
                f"{prefix}num_inference_steps", f"must be between {entry.min_steps} and {MAX_STEPS} for {entry.id}"
            )
        )
    guidance = request.guidance_scale if request.HasField("guidance_scale") else entry.default_guidance
    if not (math.isfinite(guidance) and 0 <= guidance <= MAX_GUIDANCE):
        violations.append(BadField(f"{prefix}guidance_scale", f"must be between 0 and {MAX_GUIDANCE:g}"))
    count = request.image_count or 1
    if not 1 <= count <= MAX_IMAGES:
        violations.append(BadField(f"{prefix}image_count", f"must be between 1 and {MAX_IMAGES}"))
    output_format = _output_format(request.output_format)
    if output_format is None:
        violations.append(BadField(f"{prefix}output_format", "must be PNG, JPEG, WebP or RAW_RGB"))
    seed = request.seed if request.HasField("seed") else random_seed()
    return _Knobs(steps, float(guidance), seed, count, output_format or "png")


def _checked_size(
    entry: ModelEntry, width: int, height: int, prefix: str, violations: list[BadField]
) -> tuple[int, int]:
    """0 means the model's native side; anything else must sit on the model's size grid."""
    width, height = width or entry.native_side, height or entry.native_side
    for name, value in (("width", width), ("height", height)):
        if not entry.min_side <= value <= entry.max_side or value % entry.size_multiple:
            violations.append(
                BadField(
                    f"{prefix}{name}",
                    f"must be a multiple of {entry.size_multiple} between {entry.min_side} and {entry.max_side}"
                    f" for {entry.id}",
                    _INVALID_SIZE,
                )
            )
    return width, height


def photo_aspect_limit(entry: ModelEntry) -> float:
    """The most elongated photo `entry` can edit: the pipelines' own limit, and no further than its output
    sides reach, since the edit keeps the photo's shape."""
    return min(MAX_PHOTO_ASPECT, entry.max_side / entry.min_side)


def _fill_from_aspect(entry: ModelEntry, width: int, height: int, aspect: float) -> tuple[int, int]:
    """Sides left at 0 keep the photo's aspect: both at about the native area, or one from the other side."""
    if width and height:
        return width, height
    if width:
        return width, _snap(entry, width / aspect)
    if height:
        return _snap(entry, height * aspect), height
    area = entry.native_side**2
    native_width, native_height = math.sqrt(area * aspect), math.sqrt(area / aspect)
    # Both sides scale together into the model's range, so a long photo keeps its shape rather than having
    # one side clamped; any photo within photo_aspect_limit fits.
    scale = min(1.0, entry.max_side / max(native_width, native_height))
    scale = max(scale, entry.min_side / min(native_width, native_height))
    return _snap(entry, native_width * scale), _snap(entry, native_height * scale)


def _snap(entry: ModelEntry, side: float) -> int:
    """The nearest legal side: on the model's size grid, within its limits."""
    snapped = round(side / entry.size_multiple) * entry.size_multiple
    return min(max(snapped, entry.min_side), entry.max_side)


def _raise_if_any(violations: list[BadField]) -> None:
    if not violations:
        return
    kinds = {v.reason for v in violations}
    reason = reasons.ERROR_REASON_INVALID_ARGUMENT
    if kinds == {_INVALID_SIZE}:
        reason = reasons.ERROR_REASON_INVALID_SIZE
    elif kinds == {_INVALID_IMAGE}:
        reason = reasons.ERROR_REASON_INVALID_IMAGE
    raise invalid_fields(violations, reason)
