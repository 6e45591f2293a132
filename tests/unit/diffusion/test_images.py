"""Input photos as RGB model inputs, and output encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from adgen_diffusion.images import RAW_RGB, decode_image, encode_image
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
    assert (encoded.width, encoded.height, encoded.stride) == (48, 32, 0)


def _noise(width: int, height: int) -> Image.Image:
    pixels = np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def _gradient_with_grain(width: int, height: int) -> Image.Image:
    """Smooth colour with sensor-like grain: photographic enough for lossy codecs to be judged fairly."""
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    base = np.stack([x * 200 + 30, y * 180 + 40, (1 - x) * 160 + 50], axis=-1)
    grain = np.random.default_rng(5).normal(0, 3, base.shape)
    return Image.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8), "RGB")


@pytest.mark.parametrize(("output_format", "worst_psnr_db"), [("png", None), ("jpeg", 36.0), ("webp", 32.0)])
def test_every_file_format_round_trips(output_format: str, worst_psnr_db: float | None) -> None:
    image = _gradient_with_grain(96, 64)
    back = Image.open(io.BytesIO(encode_image(image, output_format).data)).convert("RGB")
    assert back.size == image.size
    if worst_psnr_db is None:
        assert back.tobytes() == image.tobytes()
    else:
        error = np.asarray(back, dtype=np.float64) - np.asarray(image, dtype=np.float64)
        assert 10 * np.log10(255**2 / np.mean(error**2)) > worst_psnr_db


def test_raw_rgb_is_the_exact_pixels_row_by_row_with_a_stride_of_three_bytes_a_pixel() -> None:
    image = _noise(40, 24)
    raw = encode_image(image, RAW_RGB)
    assert (raw.format, raw.width, raw.height, raw.stride, len(raw.data)) == ("raw_rgb", 40, 24, 120, 40 * 24 * 3)
    assert Image.frombuffer("RGB", (40, 24), raw.data, "raw", "RGB", raw.stride, 1).tobytes() == image.tobytes()
    assert raw.data[120:123] == bytes(image.getpixel((0, 1)))  # type: ignore[arg-type]


def test_raw_rgb_of_a_non_rgb_image_is_converted_first() -> None:
    raw = encode_image(Image.new("L", (4, 2), 200), RAW_RGB)
    assert raw.data == bytes([200] * 4 * 2 * 3)


def test_jpeg_output_uses_4_2_0_chroma() -> None:
    reopened = Image.open(io.BytesIO(encode_image(_noise(32, 32), "jpeg").data))
    assert JpegImagePlugin.get_sampling(reopened) == 2
