"""Long photos and extreme sizes: the largest aspect ratio edits end to end on the tiny twins, one beyond is
INVALID_IMAGE before the GPU, and every legal width/height runs through the real pipelines."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

from adgen.diffusion.v1 import diffusion_service_pb2 as pb
from adgen.type.v1 import error_reason_pb2 as reasons
from adgen.type.v1 import image_pb2
from adgen_diffusion.engine import DiffusionEngine, ImageJob
from adgen_diffusion.images import decode_image
from adgen_diffusion.job_requests import photo_aspect_limit, prepare_edit, prepare_generate
from adgen_diffusion.registry import ModelRegistry, Task
from adgen_runtime.errors import InvalidArgument
from adgen_runtime.photos import MAX_PHOTO_ASPECT, InvalidImageError

LIMITS = {"max_bytes": 5_000_000, "max_pixels": 4_000_000}
EDIT_MODELS = ["flux2-klein-4b", "qwen-image-edit-2511"]


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "orange").save(buffer, format="PNG")
    return buffer.getvalue()


def _edit(photo_width: int, photo_height: int, width: int = 0, height: int = 0) -> pb.EditRequest:
    photo = image_pb2.Image(data=_png(photo_width, photo_height))
    request = pb.EditRequest(image=photo, instruction="make it blue", width=width, height=height, seed=1)
    request.num_inference_steps = 2
    return request


def _run(engine: DiffusionEngine, job: ImageJob) -> list[Image.Image]:
    return engine.run(job, lambda _: None, threading.Event()).images


def test_decoding_refuses_a_photo_longer_than_eight_to_one_saying_how_long_it_is() -> None:
    # The ratio text and the other cases are in tests/unit/runtime/test_photos.py.
    assert decode_image(_png(800, 100), **LIMITS).size == (800, 100)
    with pytest.raises(InvalidImageError, match=r"900x100, an aspect ratio of 9:1; photos up to 8:1"):
        decode_image(_png(900, 100), **LIMITS)


@pytest.mark.parametrize("registry_kind", ["tiny", "real"])
def test_every_edit_model_takes_photos_up_to_eight_to_one(registry_kind: str) -> None:
    registry = ModelRegistry.load(tiny=registry_kind == "tiny")
    edit_models = [entry for entry in registry if entry.supports(Task.IMAGE_EDIT)]
    assert edit_models and {photo_aspect_limit(entry) for entry in edit_models} == {MAX_PHOTO_ASPECT}


@pytest.mark.parametrize("model_id", EDIT_MODELS)
@pytest.mark.parametrize(("width", "height"), [(900, 100), (100, 900), (8000, 8), (801, 100)])
def test_a_photo_beyond_the_limit_is_invalid_image_on_the_data_field(
    tiny_registry: ModelRegistry, model_id: str, width: int, height: int
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        prepare_edit(_edit(width, height), tiny_registry.get(model_id), prefix="request.", **LIMITS)
    assert raised.value.reason == reasons.ERROR_REASON_INVALID_IMAGE
    [violation] = raised.value.field_violations
    assert violation.field == "request.image.data" and "aspect ratio" in violation.description


def test_an_eight_to_one_photo_keeps_its_shape_within_the_real_models_sides() -> None:
    entry = ModelRegistry.load(tiny=False).get("qwen-image-edit-2511")
    job = prepare_edit(_edit(1600, 200), entry, prefix="", **LIMITS).job
    # Before, the long side was clamped alone: 2048x368, a 5.6:1 edit of an 8:1 photo.
    assert (job.width, job.height) == (2048, 256)
    job = prepare_edit(_edit(200, 1600), entry, prefix="", **LIMITS).job
    assert (job.width, job.height) == (256, 2048)


@pytest.mark.parametrize("model_id", EDIT_MODELS)
@pytest.mark.parametrize(("width", "height"), [(800, 100), (100, 800), (40, 5)])
def test_the_longest_accepted_photo_edits_through_the_real_pipeline(
    engine: DiffusionEngine, tiny_registry: ModelRegistry, model_id: str, width: int, height: int
) -> None:
    job = prepare_edit(_edit(width, height), tiny_registry.get(model_id), prefix="", **LIMITS).job
    [image] = _run(engine, job)
    assert image.size == (job.width, job.height)
    assert max(job.width, job.height) / min(job.width, job.height) > 7  # The edit keeps the long shape.


@pytest.mark.parametrize("model_id", EDIT_MODELS)
def test_the_most_extreme_legal_edit_size_runs_through_the_real_pipeline(
    engine: DiffusionEngine, tiny_registry: ModelRegistry, model_id: str
) -> None:
    entry = tiny_registry.get(model_id)
    request = _edit(800, 100, width=entry.max_side, height=entry.min_side)
    job = prepare_edit(request, entry, prefix="", **LIMITS).job
    [image] = _run(engine, job)
    assert image.size == (entry.max_side, entry.min_side)


@pytest.mark.parametrize("model_id", ["flux2-klein-4b", "z-image-turbo"])
@pytest.mark.parametrize("wide", [True, False])
def test_the_most_extreme_legal_generate_size_runs_through_the_real_pipeline(
    engine: DiffusionEngine, tiny_registry: ModelRegistry, model_id: str, wide: bool
) -> None:
    entry = tiny_registry.get(model_id)
    width, height = (entry.max_side, entry.min_side) if wide else (entry.min_side, entry.max_side)
    request = pb.GenerateRequest(prompt="a long banner of strawberries", width=width, height=height, seed=2)
    request.num_inference_steps = 2
    [image] = _run(engine, prepare_generate(request, entry, prefix="").job)
    assert image.size == (width, height)
