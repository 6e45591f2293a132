"""Pillow work on photos and deliverables: reading uploads, resizing and labelled re-encoding."""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from adgen.type.v1 import ad_pb2, image_pb2
from adgen_orchestrator.overlay import draw_ai_badge, draw_headline
from adgen_orchestrator.provenance import ContentLabel, encode_labelled
from adgen_orchestrator.sizing import Size

PILLOW_FORMATS: dict[image_pb2.ImageFormat.ValueType, str] = {
    image_pb2.IMAGE_FORMAT_PNG: "PNG",
    image_pb2.IMAGE_FORMAT_JPEG: "JPEG",
    image_pb2.IMAGE_FORMAT_WEBP: "WEBP",
}
_FORMAT_ENUMS = {name: value for value, name in PILLOW_FORMATS.items()}
# The diffusion service refuses photos longer than 8:1 for every edit model (adgen_diffusion.images); the same
# rule here turns such a photo away before it costs a copywriter call.
MAX_PHOTO_ASPECT = 8.0
# The legal size grid stretches a render by a few percent at most; a larger mismatch means the model could
# not render the delivered shape, and a crop keeps proportions where a stretch would distort them.
_MAX_STRETCH = math.log(1.1)


@dataclass(frozen=True)
class Overlay:
    """Text drawn onto a delivered image: the Korean headline and/or the "AI 생성" badge."""

    placement: ad_pb2.Placement.ValueType = ad_pb2.PLACEMENT_UNSPECIFIED
    headline: str = ""
    ai_badge: bool = False
    # ADGEN_ORCHESTRATOR_OVERLAY_FONT_PATH; None finds the installed one.
    font_path: Path | None = None


class PhotoRejectedError(ValueError):
    """An uploaded photo we cannot use; the message is written for the caller."""


@dataclass(frozen=True)
class Photo:
    """An uploaded photo, upright, ready to send downstream."""

    data: bytes
    size: Size


def read_photo(data: bytes, *, max_bytes: int, max_pixels: int) -> Photo:
    """Decodes an upload fully (so truncation shows), rejecting non-images and bombs.

    A photo with an EXIF rotation is re-encoded upright, so "the original size" means the
    size people see, whatever the edit model does with EXIF.
    """
    if not data:
        raise PhotoRejectedError("must contain a PNG, JPEG or WebP photo")
    if len(data) > max_bytes:
        raise PhotoRejectedError(f"is larger than the {max_bytes // (1024 * 1024)} MiB limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in _FORMAT_ENUMS:
                    raise PhotoRejectedError("must be a PNG, JPEG or WebP photo")
                if image.width * image.height > max_pixels:
                    raise PhotoRejectedError(f"has more than {max_pixels} pixels")
                _check_aspect(image.width, image.height)
                image.load()
                rotated = image.getexif().get(ExifTags.Base.Orientation, 1) not in (0, 1)
                upright = ImageOps.exif_transpose(image) if rotated else None
    except PhotoRejectedError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as error:
        raise PhotoRejectedError("is not a decodable PNG, JPEG or WebP image") from error
    if upright is None:
        return Photo(data, Size(image.width, image.height))
    buffer = io.BytesIO()
    upright.save(buffer, "PNG")
    return Photo(buffer.getvalue(), Size(upright.width, upright.height))


def _check_aspect(width: int, height: int) -> None:
    ratio = max(width, height) / max(min(width, height), 1)
    if ratio > MAX_PHOTO_ASPECT:
        shown = f"{ratio:.2f}".rstrip("0").rstrip(".")
        raise PhotoRejectedError(
            f"is {width}x{height}, an aspect ratio of {shown}:1; photos up to {MAX_PHOTO_ASPECT:g}:1 can be edited, "
            "so crop it closer to its subject first"
        )


def deliver(
    data: bytes,
    size: Size,
    image_format: image_pb2.ImageFormat.ValueType,
    label: ContentLabel,
    overlay: Overlay | None = None,
) -> image_pb2.Image:
    """Fits a generated image to the exact delivered size (resized, or cropped first where the model
    could not render that shape), draws any overlay text at that size (so it is sharp and inside the
    safe zone), and encodes it with its AI label."""
    with Image.open(io.BytesIO(data)) as generated:
        picture = generated.convert("RGB")
    if (picture.width, picture.height) != (size.width, size.height):
        picture = _fit(picture, size)
    if overlay is not None and overlay.headline.strip():
        draw_headline(picture, overlay.headline, overlay.placement, font_path=overlay.font_path)
    if overlay is not None and overlay.ai_badge:
        draw_ai_badge(picture, overlay.placement, font_path=overlay.font_path)
    encoded = encode_labelled(picture, PILLOW_FORMATS[image_format], label)
    return image_pb2.Image(data=encoded, format=image_format, width=size.width, height=size.height)


def _fit(picture: Image.Image, size: Size) -> Image.Image:
    """`picture` at exactly `size`: resized, after cropping its centre to `size`'s aspect when the two differ
    by more than the size grid explains (a 32:1 banner from a model that renders at most 8:1)."""
    aspect = picture.width / picture.height
    if abs(math.log(aspect / size.aspect)) > _MAX_STRETCH:
        if aspect > size.aspect:
            width = round(picture.height * size.aspect)
            left = (picture.width - width) // 2
            picture = picture.crop((left, 0, left + width, picture.height))
        else:
            height = round(picture.width / size.aspect)
            top = (picture.height - height) // 2
            picture = picture.crop((0, top, picture.width, top + height))
    return picture.resize((size.width, size.height), Image.Resampling.LANCZOS)
