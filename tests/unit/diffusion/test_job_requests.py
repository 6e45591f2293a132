"""Request validation: Generate/Edit protos resolved into engine jobs, or INVALID_ARGUMENT naming each field."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from adgen.diffusion.v1 import diffusion_service_pb2 as pb
from adgen.type.v1 import error_reason_pb2 as reasons
from adgen.type.v1 import image_pb2
from adgen_diffusion.job_requests import prepare_edit, prepare_generate, registry_entry
from adgen_diffusion.registry import ModelEntry, ModelRegistry
from adgen_runtime.errors import FailedPrecondition, InvalidArgument, NotFound

LIMITS = {"max_bytes": 5_000_000, "max_pixels": 4_000_000}


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "orange").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def edit_model(tiny_registry: ModelRegistry) -> ModelEntry:
    return tiny_registry.get("qwen-image-edit-2511")


def test_generate_applies_the_model_defaults(tiny_registry: ModelRegistry) -> None:
    entry = tiny_registry.get("z-image-turbo")
    prepared = prepare_generate(pb.GenerateRequest(prompt="  juice  ", seed=7), entry, prefix="")
    job = prepared.job
    assert (job.prompt, job.width, job.height) == ("juice", entry.native_side, entry.native_side)
    assert (job.steps, job.guidance, job.seed, job.image_count) == (entry.default_steps, entry.default_guidance, 7, 1)
    assert prepared.output_format == "png"


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (image_pb2.IMAGE_FORMAT_PNG, "png"),
        (image_pb2.IMAGE_FORMAT_JPEG, "jpeg"),
        (image_pb2.IMAGE_FORMAT_WEBP, "webp"),
        (image_pb2.IMAGE_FORMAT_RAW_RGB, "raw_rgb"),
    ],
)
def test_every_output_format_of_the_enum_is_accepted_by_its_encoder_name(
    tiny_registry: ModelRegistry, value: image_pb2.ImageFormat.ValueType, name: str
) -> None:
    request = pb.GenerateRequest(prompt="juice", output_format=value)
    assert prepare_generate(request, tiny_registry.get("z-image-turbo"), prefix="").output_format == name


def test_generate_names_every_bad_field_at_once(tiny_registry: ModelRegistry) -> None:
    request = pb.GenerateRequest(prompt=" ", width=-16, image_count=9, output_format=99, guidance_scale=-1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as raised:
        prepare_generate(request, tiny_registry.get("z-image-turbo"), prefix="request.")
    fields = [v.field for v in raised.value.field_violations]
    assert fields == [
        "request.prompt",
        "request.width",
        "request.guidance_scale",
        "request.image_count",
        "request.output_format",
    ]
    assert raised.value.reason == reasons.ERROR_REASON_INVALID_ARGUMENT


def test_unknown_model_is_not_found(tiny_registry: ModelRegistry) -> None:
    with pytest.raises(NotFound):
        registry_entry(tiny_registry, "midjourney-v7")


def test_edit_on_a_text_to_image_model_is_refused_before_the_photo_is_decoded(tiny_registry: ModelRegistry) -> None:
    request = pb.EditRequest(instruction="", image=image_pb2.Image(data=b"not an image"))
    with pytest.raises(FailedPrecondition) as raised:
        prepare_edit(request, tiny_registry.get("z-image-turbo"), prefix="", **LIMITS)
    assert raised.value.reason == reasons.ERROR_REASON_MODEL_TASK_UNSUPPORTED


def test_edit_without_a_size_keeps_the_photo_aspect_at_about_the_native_area(edit_model: ModelEntry) -> None:
    request = pb.EditRequest(instruction="add ice", image=image_pb2.Image(data=_png(400, 300)))
    job = prepare_edit(request, edit_model, prefix="", **LIMITS).job
    assert job.width > job.height and job.width % edit_model.size_multiple == 0 == job.height % edit_model.size_multiple
    assert abs(job.width / job.height - 4 / 3) < 0.2
    assert job.image is not None and job.image.size == (400, 300)


def test_edit_with_only_a_width_derives_the_height_from_the_photo_aspect(edit_model: ModelEntry) -> None:
    width = edit_model.min_side * 2
    request = pb.EditRequest(instruction="add ice", image=image_pb2.Image(data=_png(200, 400)), width=width)
    job = prepare_edit(request, edit_model, prefix="", **LIMITS).job
    expected = min(round(width * 2 / edit_model.size_multiple) * edit_model.size_multiple, edit_model.max_side)
    assert (job.width, job.height) == (width, expected)


def test_edit_of_a_corrupt_photo_alone_carries_the_invalid_image_reason(edit_model: ModelEntry) -> None:
    data = _png(64, 64)
    request = pb.EditRequest(instruction="add ice", image=image_pb2.Image(data=data[: len(data) // 2]))
    with pytest.raises(InvalidArgument) as raised:
        prepare_edit(request, edit_model, prefix="request.", **LIMITS)
    assert raised.value.reason == reasons.ERROR_REASON_INVALID_IMAGE
    assert [v.field for v in raised.value.field_violations] == ["request.image.data"]
