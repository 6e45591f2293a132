"""Input photo validation and output encoding."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from adgen_diffusion.images import InvalidImageError, decode_image, encode_image

LIMITS = {"max_bytes": 5_000_000, "max_pixels": 4_000_000}


def _file(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_truncated_png_is_rejected_as_corrupt() -> None:
    data = _file(Image.new("RGB", (64, 64), "red"))
    with pytest.raises(InvalidImageError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2], **LIMITS)


def test_non_image_bytes_are_rejected() -> None:
    with pytest.raises(InvalidImageError, match="not a PNG, JPEG or WebP"):
        decode_image(b"%PDF-1.7 definitely not a photo", **LIMITS)


def test_gif_is_rejected_as_unaccepted_format() -> None:
    with pytest.raises(InvalidImageError, match="GIF is not accepted"):
        decode_image(_file(Image.new("RGB", (8, 8)), "GIF"), **LIMITS)


def test_decompression_bomb_is_rejected_before_decoding() -> None:
    bomb = _file(Image.new("L", (3000, 3000)), optimize=True)
    assert len(bomb) < 100_000  # a small file that would decode to 9 megapixels
    with pytest.raises(InvalidImageError, match="the limit is 4000000 pixels"):
        decode_image(bomb, **LIMITS)


def test_image_past_pillows_bomb_guard_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InvalidImageError, match="too large to decode safely"):
        decode_image(_file(Image.new("L", (50, 50))), max_bytes=10**6, max_pixels=10**9)


def test_file_over_the_byte_limit_is_rejected() -> None:
    with pytest.raises(InvalidImageError, match="bytes; the limit"):
        decode_image(b"\x00" * 101, max_bytes=100, max_pixels=10)


def test_empty_data_is_rejected() -> None:
    with pytest.raises(InvalidImageError, match="empty"):
        decode_image(b"", **LIMITS)


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
