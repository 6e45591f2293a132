"""Request validation: defaults filled in, every bad field named, photos decoded safely."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import ad_pb2, error_reason_pb2, image_pb2
from adgen_orchestrator.sizing import Size
from adgen_orchestrator.validation import parse_create_request, parse_edit_request
from adgen_runtime.errors import InvalidArgument
from tests.support.orchestrator_fakes import png
from tests.support.product_photos import cut_out_png, opaque_jpeg


def _create(**fields: object) -> ad_pb.CreateAdRequest:
    return ad_pb.CreateAdRequest(keyword="딸기 주스", **fields)  # type: ignore[arg-type]


def _parse(request: ad_pb.CreateAdRequest) -> object:
    return parse_create_request(request, default_model_id="flux2-klein-4b", request_id="rid")


def _edit(data: bytes, instruction: str = "밝게", *, max_pixels: int = 10_000_000) -> object:
    request = ad_pb.EditAdRequest(image=image_pb2.Image(data=data), instruction=instruction)
    return parse_edit_request(
        request, default_model_id="qwen", request_id="rid", max_input_bytes=1_000_000, max_input_pixels=max_pixels
    )


@pytest.mark.parametrize(
    ("photo", "chosen", "expected"),
    [
        (cut_out_png(), image_pb2.IMAGE_FORMAT_UNSPECIFIED, image_pb2.IMAGE_FORMAT_PNG),
        (opaque_jpeg(), image_pb2.IMAGE_FORMAT_UNSPECIFIED, image_pb2.IMAGE_FORMAT_JPEG),
        (cut_out_png(), image_pb2.IMAGE_FORMAT_WEBP, image_pb2.IMAGE_FORMAT_WEBP),
    ],
)
def test_an_unset_format_is_png_for_a_cut_out_product_and_jpeg_otherwise(
    photo: bytes, chosen: image_pb2.ImageFormat.ValueType, expected: image_pb2.ImageFormat.ValueType
) -> None:
    request = _create(product_photos=[image_pb2.Image(data=photo)], output_format=chosen)
    spec = parse_create_request(request, default_model_id="flux2-klein-4b", request_id="rid")
    assert spec.output_format == expected


def test_create_defaults_are_filled_in() -> None:
    spec = parse_create_request(_create(), default_model_id="flux2-klein-4b", request_id="rid")
    assert spec.size == Size(1080, 1080) and spec.placement == ad_pb2.PLACEMENT_FEED_SQUARE
    assert spec.variant_count == 1 and spec.model_id == "flux2-klein-4b"
    assert spec.output_format == image_pb2.IMAGE_FORMAT_JPEG and spec.tone == ad_pb2.TONE_FRIENDLY
    assert spec.request_id == "rid" and 0 <= spec.seed < 2**32 and spec.num_inference_steps is None


def test_explicit_size_overrides_the_placement() -> None:
    spec = parse_create_request(
        _create(placement=ad_pb2.PLACEMENT_STORY, width=300, height=200), default_model_id="m", request_id="r"
    )
    assert spec.size == Size(300, 200)


def test_the_callers_request_id_field_wins_over_the_assigned_one() -> None:
    spec = parse_create_request(_create(request_id="mine"), default_model_id="m", request_id="assigned")
    assert spec.request_id == "mine"


def test_variant_seeds_count_up_and_wrap_at_64_bits() -> None:
    spec = parse_create_request(_create(seed=2**64 - 1), default_model_id="m", request_id="r")
    assert [spec.variant_seed(i) for i in range(2)] == [2**64 - 1, 0]


@pytest.mark.parametrize(
    ("fields", "violations", "reason"),
    [
        ({"keyword": ""}, ["keyword"], error_reason_pb2.ERROR_REASON_EMPTY_KEYWORD),
        ({"width": 63, "height": 64}, ["width"], error_reason_pb2.ERROR_REASON_INVALID_SIZE),
        ({"width": 2049, "height": 2049}, ["width", "height"], error_reason_pb2.ERROR_REASON_INVALID_SIZE),
        ({"height": 512}, ["width"], error_reason_pb2.ERROR_REASON_INVALID_SIZE),
        ({"variant_count": 5}, ["variant_count"], error_reason_pb2.ERROR_REASON_INVALID_ARGUMENT),
        ({"variant_count": -1}, ["variant_count"], error_reason_pb2.ERROR_REASON_INVALID_ARGUMENT),
        ({"num_inference_steps": 0}, ["num_inference_steps"], error_reason_pb2.ERROR_REASON_INVALID_ARGUMENT),
        ({"placement": 42}, ["placement"], error_reason_pb2.ERROR_REASON_INVALID_ARGUMENT),
        ({"output_format": 42}, ["output_format"], error_reason_pb2.ERROR_REASON_INVALID_ARGUMENT),
        # Raw pixels travel only between services: a delivered file always carries its AI label.
        (
            {"output_format": image_pb2.IMAGE_FORMAT_RAW_RGB},
            ["output_format"],
            error_reason_pb2.ERROR_REASON_INVALID_ARGUMENT,
        ),
        (
            {"keyword": " ", "width": 10, "height": 10, "tone": 99},
            ["keyword", "width", "height", "tone"],
            error_reason_pb2.ERROR_REASON_EMPTY_KEYWORD,
        ),
    ],
)
def test_create_rejects_bad_fields_all_at_once(
    fields: dict[str, object], violations: list[str], reason: error_reason_pb2.ErrorReason.ValueType
) -> None:
    request = ad_pb.CreateAdRequest(**{"keyword": "딸기", **fields})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as raised:
        _parse(request)
    assert [v.field for v in raised.value.field_violations] == violations
    assert raised.value.reason == reason


def test_edit_keeps_the_photo_bytes_and_reads_its_size() -> None:
    data = png(120, 90)
    spec = parse_edit_request(
        ad_pb.EditAdRequest(image=image_pb2.Image(data=data), instruction=" 밝게 "),
        default_model_id="qwen",
        request_id="r",
        max_input_bytes=1_000_000,
        max_input_pixels=1_000_000,
    )
    assert spec.photo.data == data and spec.photo.size == Size(120, 90)
    assert spec.instruction == "밝게" and spec.seed is None and spec.model_id == "qwen"
    assert spec.output_format == image_pb2.IMAGE_FORMAT_JPEG


def test_edit_refuses_raw_rgb_as_its_output_format() -> None:
    request = ad_pb.EditAdRequest(
        image=image_pb2.Image(data=png(16, 16)), instruction="밝게", output_format=image_pb2.IMAGE_FORMAT_RAW_RGB
    )
    with pytest.raises(InvalidArgument) as raised:
        parse_edit_request(
            request, default_model_id="qwen", request_id="r", max_input_bytes=1_000_000, max_input_pixels=1_000_000
        )
    assert [v.field for v in raised.value.field_violations] == ["output_format"]


def test_edit_turns_an_exif_rotated_photo_upright() -> None:
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90° clockwise: displayed as portrait
    Image.new("RGB", (80, 40), "blue").save(buffer, "JPEG", exif=exif)
    spec = parse_edit_request(
        ad_pb.EditAdRequest(image=image_pb2.Image(data=buffer.getvalue()), instruction="x"),
        default_model_id="q",
        request_id="r",
        max_input_bytes=1_000_000,
        max_input_pixels=1_000_000,
    )
    assert spec.photo.size == Size(40, 80)
    with Image.open(io.BytesIO(spec.photo.data)) as upright:
        assert upright.size == (40, 80)


def _truncated_png() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 64).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "must contain"),
        (b"not a photo", "not a decodable"),
        (b"\x89PNG\r\n\x1a\n garbage", "truncated or corrupt"),
        (_truncated_png(), "truncated or corrupt"),
        (b"x" * 1_000_001, "larger than"),
        (_gif(), "must be a PNG, JPEG or WebP"),
    ],
)
def test_edit_rejects_unusable_photos_with_an_image_data_violation(data: bytes, why: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        _edit(data)
    (violation,) = raised.value.field_violations
    assert violation.field == "image.data" and why in violation.description
    assert raised.value.reason == error_reason_pb2.ERROR_REASON_INVALID_IMAGE


def test_edit_rejects_photos_with_too_many_pixels_before_decoding_them() -> None:
    with pytest.raises(InvalidArgument) as raised:
        _edit(png(200, 200), max_pixels=39_999)
    assert "pixels" in raised.value.field_violations[0].description
