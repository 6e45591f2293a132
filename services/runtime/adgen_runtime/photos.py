"""The one check of a photo to edit: decoded fully with Pillow, within the limits, and turned upright.

The orchestrator checks a photo before it costs a copywriter call, and the diffusion service checks it again
because it is called directly too; both call this module, so they accept and refuse the same photos with the
same words. Pillow comes with the orchestrator and diffusion extras, the only services that import this module
(the copywriter, which never sees a photo, stays free of it).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from adgen_wire.formats import PILLOW_FORMATS

ACCEPTED_FORMATS = frozenset(PILLOW_FORMATS.values())
_ACCEPTED_TEXT = "PNG, JPEG or WebP"
# The longest side of a photo to edit over its shortest. FLUX.2 refuses reference images beyond 8:1
# (Flux2ImageProcessor.check_image_input), and no edit model's output sides (256-2048 px) reach further, so
# the edit could not keep the photo's shape. (Qwen-Image-Edit alone would go to about 270:1, where its
# Qwen2-VL processor refuses the 200:1 condition image calculate_dimensions makes.) A fact of the models,
# not an operator's choice: a constant, where the byte and pixel limits are settings (PhotoLimitSettings).
MAX_PHOTO_ASPECT = 8.0
_MIB = 1024 * 1024
# EXIF orientations 2-8 flip or turn the stored pixels; 1 (and a missing or broken 0) leaves them.
_TURNING_ORIENTATIONS = range(2, 9)


class InvalidImageError(ValueError):
    """A photo we cannot use (ERROR_REASON_INVALID_IMAGE); the message follows the field name, e.g.
    "image.data: is truncated or corrupt", and is written for callers."""


@dataclass(frozen=True)
class UprightPhoto:
    """A checked photo, decoded and upright; `turned` says whether its EXIF orientation changed the pixels."""

    image: Image.Image
    turned: bool


def open_photo(data: bytes, *, max_bytes: int, max_pixels: int, max_aspect: float = MAX_PHOTO_ASPECT) -> UprightPhoto:
    """Decodes `data` fully (so truncation shows), refusing anything but a PNG, JPEG or WebP photo within the
    limits, and turns it upright per its EXIF orientation; raises InvalidImageError saying what is wrong."""
    if not data:
        raise InvalidImageError(f"is empty; it must contain a {_ACCEPTED_TEXT} photo")
    if len(data) > max_bytes:
        raise InvalidImageError(f"is {len(data)} bytes, larger than the limit of {_bytes_text(max_bytes)}")
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than raises) between its limit and twice it; treat both as bombs.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise InvalidImageError(f"must be a {_ACCEPTED_TEXT} photo; {image.format} is not accepted")
            if image.width * image.height > max_pixels:
                raise InvalidImageError(f"is {image.width}x{image.height}, more than {max_pixels} pixels")
            check_aspect(image.width, image.height, max_aspect)
            image.load()
            # Inside the try: a broken EXIF block is a corrupt file too.
            turned = image.getexif().get(ExifTags.Base.Orientation, 1) in _TURNING_ORIENTATIONS
            upright: Image.Image = ImageOps.exif_transpose(image) if turned else image
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImageError(f"has more than {Image.MAX_IMAGE_PIXELS} pixels, too large to decode safely") from None
    except UnidentifiedImageError:
        raise InvalidImageError(f"is not a decodable {_ACCEPTED_TEXT} image") from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise InvalidImageError("is truncated or corrupt") from None
    return UprightPhoto(upright, turned)


def check_aspect(width: int, height: int, max_aspect: float = MAX_PHOTO_ASPECT) -> None:
    """InvalidImageError when the longer side exceeds `max_aspect` times the shorter (EXIF turns keep the ratio)."""
    ratio = max(width, height) / max(min(width, height), 1)
    if ratio > max_aspect:
        shown = f"{ratio:.2f}".rstrip("0").rstrip(".")
        raise InvalidImageError(
            f"is {width}x{height}, an aspect ratio of {shown}:1; photos up to {max_aspect:g}:1 can be edited, "
            "so crop it closer to its subject first"
        )


def _bytes_text(count: int) -> str:
    return f"{count // _MIB} MiB" if count % _MIB == 0 else f"{count} bytes"
