"""Input photos as model-ready RGB images, and outputs encoded, with Pillow."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

# Re-exported for job_requests.py, which names them from here.
from adgen_runtime.photos import MAX_PHOTO_ASPECT, open_photo
from adgen_wire.formats import PILLOW_FORMATS

# Pillow format name for each output file format we write, keyed by its lower-case name ("png", "jpeg", "webp").
OUTPUT_FORMATS = {name.lower(): name for name in PILLOW_FORMATS.values()}
# The decoded pixels as they are (adgen.type.v1.IMAGE_FORMAT_RAW_RGB): no file, no encode.
RAW_RGB = "raw_rgb"
# Encoder settings chosen for speed (bench/diffusion_batching.py prints them; figures in its docstring):
# zlib level 1 is 2-3x faster than Pillow's default 6 and at most ~15% larger on photographic output;
# JPEG 95 with 4:2:0 chroma costs a few ms; WebP method 0 is 2-4x faster than the default 4.
PNG_COMPRESS_LEVEL = 1
JPEG_QUALITY = 95
JPEG_SUBSAMPLING = 2  # Pillow's code for 4:2:0
WEBP_QUALITY = 90
WEBP_METHOD = 0


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    format: str
    width: int
    height: int
    # Bytes a pixel row takes; set for RAW_RGB only.
    stride: int = 0


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, max_aspect: float = MAX_PHOTO_ASPECT) -> Image.Image:
    """The photo checked by the shared rule (adgen_runtime.photos), upright, as the RGB image edit models take;
    InvalidImageError says what is wrong with it."""
    photo = open_photo(data, max_bytes=max_bytes, max_pixels=max_pixels, max_aspect=max_aspect)
    return to_rgb(photo.image)


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
    """The image as a PNG (default), JPEG or WebP file, or as its raw RGB pixels."""
    if output_format == RAW_RGB:
        return raw_rgb(image)
    pil_format = OUTPUT_FORMATS[output_format]
    buffer = io.BytesIO()
    if pil_format == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING)
    elif pil_format == "WEBP":
        image.save(buffer, format="WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD)
    else:
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return EncodedImage(buffer.getvalue(), output_format, image.width, image.height)


def raw_rgb(image: Image.Image) -> EncodedImage:
    """Row-major 8-bit RGB, `width * 3` bytes a row, with no padding."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return EncodedImage(rgb.tobytes(), RAW_RGB, rgb.width, rgb.height, stride=rgb.width * 3)
