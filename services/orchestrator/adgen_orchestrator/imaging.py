"""Pillow work on photos and deliverables: reading uploads, resizing and labelled re-encoding."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Overlay:
    """Text drawn onto a delivered image: the Korean headline and/or the "AI 생성" badge."""

    placement: ad_pb2.Placement.ValueType = ad_pb2.PLACEMENT_UNSPECIFIED
    headline: str = ""
    ai_badge: bool = False


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


def deliver(
    data: bytes,
    size: Size,
    image_format: image_pb2.ImageFormat.ValueType,
    label: ContentLabel,
    overlay: Overlay | None = None,
) -> image_pb2.Image:
    """Resizes a generated image to the exact delivered size, draws any overlay text at that
    size (so it is sharp and inside the safe zone), and encodes it with its AI label."""
    with Image.open(io.BytesIO(data)) as generated:
        picture = generated.convert("RGB")
    if (picture.width, picture.height) != (size.width, size.height):
        picture = picture.resize((size.width, size.height), Image.Resampling.LANCZOS)
    if overlay is not None and overlay.headline.strip():
        draw_headline(picture, overlay.headline, overlay.placement)
    if overlay is not None and overlay.ai_badge:
        draw_ai_badge(picture, overlay.placement)
    encoded = encode_labelled(picture, PILLOW_FORMATS[image_format], label)
    return image_pb2.Image(data=encoded, format=image_format, width=size.width, height=size.height)
