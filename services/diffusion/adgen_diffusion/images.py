"""Input photos as model-ready RGB images, and outputs encoded, with Pillow."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

# Re-exported for job_requests.py, which names them from here.
from adgen_runtime.photos import MAX_PHOTO_ASPECT, open_photo
from adgen_wire.formats import PILLOW_FORMATS

# Pillow format name for each output format we write, keyed by its lower-case name ("png", "jpeg", "webp").
OUTPUT_FORMATS = {name.lower(): name for name in PILLOW_FORMATS.values()}


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    format: str
    width: int
    height: int


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
