"""The one photo check both the orchestrator and the diffusion service run, and the one place of its limits."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from pydantic import ValidationError

from adgen_diffusion.config import DiffusionSettings
from adgen_orchestrator.config import OrchestratorSettings
from adgen_runtime.photos import MAX_PHOTO_ASPECT, InvalidImageError, open_photo
from adgen_runtime.settings import PhotoLimitSettings, settings_problems
from adgen_wire.formats import IMAGE_FORMATS, ImageFormatRow

LIMITS = {"max_bytes": 5_000_000, "max_pixels": 4_000_000}


def _file(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png(width: int, height: int) -> bytes:
    return _file(Image.new("RGB", (width, height), "orange"))


def _refusal(data: bytes, **limits: int) -> str:
    with pytest.raises(InvalidImageError) as raised:
        open_photo(data, **(limits or LIMITS))
    return str(raised.value)


@pytest.mark.parametrize("row", IMAGE_FORMATS, ids=lambda row: row.pillow_name)
def test_every_wire_format_is_accepted_and_decoded(row: ImageFormatRow) -> None:
    photo = open_photo(_file(Image.new("RGB", (16, 12), "blue"), row.pillow_name), **LIMITS)
    assert photo.image.size == (16, 12) and photo.image.format == row.pillow_name and not photo.turned


def test_empty_data_is_refused() -> None:
    assert _refusal(b"") == "is empty; it must contain a PNG, JPEG or WebP photo"


def test_a_file_over_the_byte_limit_is_refused_before_it_is_opened() -> None:
    assert _refusal(b"\x00" * 101, max_bytes=100, max_pixels=10) == "is 101 bytes, larger than the limit of 100 bytes"
    assert "larger than the limit of 1 MiB" in _refusal(
        b"\x00" * (1024 * 1024 + 1), max_bytes=1024 * 1024, max_pixels=10
    )


def test_bytes_that_are_no_image_are_refused() -> None:
    assert _refusal(b"%PDF-1.7 definitely not a photo") == "is not a decodable PNG, JPEG or WebP image"


def _truncated_png() -> bytes:
    data = _file(Image.effect_noise((64, 64), 64).convert("RGB"))
    return data[: len(data) // 2]


@pytest.mark.parametrize("data", [_truncated_png(), b"\x89PNG\r\n\x1a\n garbage"], ids=["truncated", "garbage"])
def test_a_broken_png_is_refused_as_corrupt_because_it_is_decoded_fully(data: bytes) -> None:
    assert _refusal(data) == "is truncated or corrupt"


def test_a_gif_is_refused_naming_its_format() -> None:
    assert _refusal(_file(Image.new("RGB", (8, 8)), "GIF")) == "must be a PNG, JPEG or WebP photo; GIF is not accepted"


def test_a_small_file_of_many_pixels_is_refused_before_decoding() -> None:
    bomb = _file(Image.new("L", (3000, 3000)), optimize=True)
    assert len(bomb) < 100_000  # a small file that would decode to 9 megapixels
    assert _refusal(bomb) == "is 3000x3000, more than 4000000 pixels"


def test_an_image_past_pillows_bomb_guard_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    refusal = _refusal(_file(Image.new("L", (50, 50))), max_bytes=10**6, max_pixels=10**9)
    assert refusal == "has more than 1000 pixels, too large to decode safely"


def test_an_exif_rotated_photo_is_turned_upright() -> None:
    photo = Image.new("RGB", (40, 20), "green")
    exif = photo.getexif()
    exif[0x0112] = 6  # rotated 90° clockwise: the upright photo is portrait
    upright = open_photo(_file(photo, "JPEG", exif=exif), **LIMITS)
    assert upright.image.size == (20, 40) and upright.turned


def test_an_exif_orientation_of_one_leaves_the_photo_as_it_is() -> None:
    photo = Image.new("RGB", (40, 20), "green")
    exif = photo.getexif()
    exif[0x0112] = 1
    upright = open_photo(_file(photo, "JPEG", exif=exif), **LIMITS)
    assert upright.image.size == (40, 20) and not upright.turned


@pytest.mark.parametrize(("width", "height"), [(800, 100), (100, 800), (64, 8)])
def test_a_photo_up_to_eight_to_one_is_accepted(width: int, height: int) -> None:
    assert open_photo(_png(width, height), **LIMITS).image.size == (width, height)


@pytest.mark.parametrize(
    ("width", "height", "shown"), [(900, 100, "9:1"), (8000, 8, "1000:1"), (8, 8000, "1000:1"), (8, 65, "8.12:1")]
)
def test_a_longer_photo_is_refused_saying_its_ratio_and_the_limit(width: int, height: int, shown: str) -> None:
    assert _refusal(_png(width, height)) == (
        f"is {width}x{height}, an aspect ratio of {shown}; photos up to 8:1 can be edited, "
        "so crop it closer to its subject first"
    )


def test_a_caller_may_ask_for_a_tighter_aspect_limit() -> None:
    assert open_photo(_png(400, 100), **LIMITS, max_aspect=4).image.size == (400, 100)
    with pytest.raises(InvalidImageError, match=r"an aspect ratio of 5:1; photos up to 4:1"):
        open_photo(_png(500, 100), **LIMITS, max_aspect=4)
    assert MAX_PHOTO_ASPECT == 8


@pytest.mark.parametrize(
    ("settings", "prefix"), [(OrchestratorSettings, "ORCHESTRATOR"), (DiffusionSettings, "DIFFUSION")]
)
def test_both_services_take_the_one_limit_fields_under_their_own_variables(
    monkeypatch: pytest.MonkeyPatch, settings: type[PhotoLimitSettings], prefix: str
) -> None:
    for name in ("MAX_INPUT_BYTES", "MAX_INPUT_PIXELS"):
        monkeypatch.delenv(f"ADGEN_{prefix}_{name}", raising=False)
    for name in ("max_input_bytes", "max_input_pixels"):
        field, shared = settings.model_fields[name], PhotoLimitSettings.model_fields[name]
        assert (field.default, field.description) == (shared.default, shared.description)
    defaults = settings()
    assert (defaults.max_input_bytes, defaults.max_input_pixels) == (20 * 1024 * 1024, 40_000_000)
    monkeypatch.setenv(f"ADGEN_{prefix}_MAX_INPUT_BYTES", "1234")
    monkeypatch.setenv(f"ADGEN_{prefix}_MAX_INPUT_PIXELS", "5678")
    assert (settings().max_input_bytes, settings().max_input_pixels) == (1234, 5678)


def test_a_zero_limit_is_a_settings_error_naming_the_services_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADGEN_DIFFUSION_MAX_INPUT_PIXELS", "0")
    with pytest.raises(ValidationError) as raised:
        DiffusionSettings()
    [problem] = settings_problems(DiffusionSettings, raised.value, {"ADGEN_DIFFUSION_MAX_INPUT_PIXELS": "0"})
    assert problem.startswith("ADGEN_DIFFUSION_MAX_INPUT_PIXELS: ")
