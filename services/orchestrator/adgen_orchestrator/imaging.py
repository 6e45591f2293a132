"""Pillow work on photos and deliverables: reading uploads, resizing and labelled re-encoding."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from adgen.type.v1 import ad_pb2, image_pb2
from adgen_orchestrator.overlay import draw_ai_badge, draw_headline
from adgen_orchestrator.provenance import ContentLabel, encode_labelled
from adgen_orchestrator.sizing import Size
from adgen_runtime.photos import open_photo
from adgen_wire.formats import PILLOW_FORMATS

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


@dataclass(frozen=True)
class Photo:
    """An uploaded photo, upright, ready to send downstream."""

    data: bytes
    size: Size


def read_photo(data: bytes, *, max_bytes: int, max_pixels: int) -> Photo:
    """The upload checked by the shared rule (adgen_runtime.photos: InvalidImageError says what is wrong).

    A photo with an EXIF rotation is re-encoded upright, so "the original size" means the
    size people see, whatever the edit model does with EXIF; any other is sent on as it came.
    """
    photo = open_photo(data, max_bytes=max_bytes, max_pixels=max_pixels)
    size = Size(photo.image.width, photo.image.height)
    if not photo.turned:
        return Photo(data, size)
    buffer = io.BytesIO()
    photo.image.save(buffer, "PNG")
    return Photo(buffer.getvalue(), size)


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
