"""Decoding and validating input photos, and encoding outputs, with Pillow."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
# The longest side of a photo to edit over its shortest. FLUX.2 refuses reference images beyond 8:1
# (Flux2ImageProcessor.check_image_input), and no edit model's output sides (256-2048 px) reach further, so
# the edit could not keep the photo's shape. (Qwen-Image-Edit alone would go to about 270:1, where its
# Qwen2-VL processor refuses the 200:1 condition image calculate_dimensions makes.)
MAX_PHOTO_ASPECT = 8.0
# Pillow format name for each output format we write.
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


class InvalidImageError(ValueError):
    """The input is not an acceptable image; the message is written for callers."""


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    format: str
    width: int
    height: int


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, max_aspect: float = MAX_PHOTO_ASPECT) -> Image.Image:
    """An RGB image upright per its EXIF orientation, or InvalidImageError saying what is wrong."""
    if not data:
        raise InvalidImageError("the image is empty")
    if len(data) > max_bytes:
        raise InvalidImageError(f"the file is {len(data)} bytes; the limit is {max_bytes}")
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than raises) between the limit and twice the limit; treat both as bombs.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise InvalidImageError(f"format {image.format} is not accepted; send PNG, JPEG or WebP")
            if image.width * image.height > max_pixels:
                raise InvalidImageError(f"the image is {image.width}x{image.height}; the limit is {max_pixels} pixels")
            check_aspect(image.width, image.height, max_aspect)
            image.load()
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImageError("the image is too large to decode safely") from None
    except UnidentifiedImageError:
        raise InvalidImageError("the data is not a PNG, JPEG or WebP image") from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise InvalidImageError("the image is truncated or corrupt") from None
    return to_rgb(ImageOps.exif_transpose(image))


def check_aspect(width: int, height: int, max_aspect: float) -> None:
    """InvalidImageError when the longer side exceeds `max_aspect` times the shorter (EXIF rotation keeps it)."""
    ratio = max(width, height) / max(min(width, height), 1)
    if ratio > max_aspect:
        shown = f"{ratio:.2f}".rstrip("0").rstrip(".")
        raise InvalidImageError(
            f"the image is {width}x{height}, an aspect ratio of {shown}:1; photos up to {max_aspect:g}:1 can be "
            "edited, so crop it closer to its subject first"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Plain 8-bit RGB from CMYK, 16-bit, palette, grey or alpha images (alpha composited on white)."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale to 8 bits instead of clipping everything above 255 to white.
        scale = 1 / 256 if image.mode.startswith("I;16") or image.getextrema()[1] > 255 else 1  # type: ignore[operator]
        image = image.point(lambda value: value * scale).convert("L")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def encode_image(image: Image.Image, output_format: str = "png") -> EncodedImage:
    """The image as a PNG (default), JPEG or WebP file."""
    pil_format = OUTPUT_FORMATS[output_format]
    buffer = io.BytesIO()
    if pil_format == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=92)
    elif pil_format == "WEBP":
        image.save(buffer, format="WEBP", quality=90)
    else:
        image.save(buffer, format="PNG")
    return EncodedImage(buffer.getvalue(), output_format, image.width, image.height)
