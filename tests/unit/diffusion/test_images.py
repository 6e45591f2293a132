"""Input photos as RGB model inputs, and output encoding."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from adgen_diffusion.images import decode_image, encode_image
from adgen_runtime.photos import InvalidImageError

LIMITS = {"max_bytes": 5_000_000, "max_pixels": 4_000_000}


def _file(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_decoding_runs_the_shared_photo_check() -> None:
    # The cases of the check itself are in tests/unit/runtime/test_photos.py; this one shows decode_image runs it.
    with pytest.raises(InvalidImageError, match="is truncated or corrupt"):
        decode_image(_file(Image.new("RGB", (64, 64), "red"))[:100], **LIMITS)


def test_cmyk_jpeg_becomes_rgb() -> None:
    decoded = decode_image(_file(Image.new("CMYK", (16, 8), (0, 255, 255, 0)), "JPEG"), **LIMITS)
    assert decoded.mode == "RGB"
    red, green, blue = decoded.getpixel((8, 4))  # type: ignore[misc]
    assert red > 200 and green < 60 and blue < 60


def test_palette_png_becomes_rgb_with_its_colours() -> None:
    palette = Image.new("P", (8, 8))
    palette.putpalette([0, 128, 255] * 256)
    decoded = decode_image(_file(palette), **LIMITS)
    assert decoded.mode == "RGB" and decoded.getpixel((0, 0)) == (0, 128, 255)


def test_sixteen_bit_grey_png_is_scaled_to_eight_bit_rgb() -> None:
    decoded = decode_image(_file(Image.new("I;16", (8, 8), 32768)), **LIMITS)
    assert decoded.mode == "RGB" and decoded.getpixel((0, 0)) == (128, 128, 128)


def test_transparent_png_is_composited_on_white() -> None:
    decoded = decode_image(_file(Image.new("RGBA", (8, 8), (255, 0, 0, 0))), **LIMITS)
    assert decoded.mode == "RGB" and decoded.getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    photo = Image.new("RGB", (40, 20), "green")
    exif = photo.getexif()
    exif[0x0112] = 6  # rotated 90° clockwise: the upright photo is portrait
    decoded = decode_image(_file(photo, "JPEG", exif=exif), **LIMITS)
    assert decoded.size == (20, 40)


def test_webp_input_is_accepted() -> None:
    assert decode_image(_file(Image.new("RGB", (16, 16), "blue"), "WEBP"), **LIMITS).size == (16, 16)


@pytest.mark.parametrize(("output_format", "pil_format"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_outputs_encode_in_the_requested_format_and_size(output_format: str, pil_format: str) -> None:
    encoded = encode_image(Image.new("RGB", (48, 32), "white"), output_format)
    reopened = Image.open(io.BytesIO(encoded.data))
    assert (reopened.format, reopened.size) == (pil_format, (48, 32))
    assert (encoded.width, encoded.height) == (48, 32)
