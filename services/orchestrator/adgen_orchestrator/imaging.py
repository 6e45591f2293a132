"""Pillow work on photos and deliverables: reading uploads, taking rendered pixels, fitting, labelled encoding."""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from PIL import Image

from adgen.type.v1 import ad_pb2, image_pb2
from adgen_orchestrator.brand import Brand
from adgen_orchestrator.overlay import draw_ai_badge, draw_headline, draw_logo
from adgen_orchestrator.product_scene import ProductScene
from adgen_orchestrator.provenance import ContentLabel, ContentSigner, encode_labelled
from adgen_orchestrator.sizing import MAX_CROP, Size
from adgen_runtime.photos import open_photo
from adgen_wire.formats import PILLOW_FORMATS

# The legal size grid stretches a render by a few percent at most; a larger mismatch means the model could
# not render the delivered shape, and a crop keeps proportions where a stretch would distort them.
_MAX_STRETCH = math.log(1.1)


class DownstreamImageError(ValueError):
    """An image from the diffusion service that does not hold what its fields declare."""


@dataclass(frozen=True)
class Delivered:
    """A delivered image and how long its final encode (labels included) took."""

    image: image_pb2.Image
    encode_s: float


@dataclass(frozen=True)
class Overlay:
    """Text drawn onto a delivered image: the Korean headline and/or the "AI 생성" badge."""

    placement: ad_pb2.Placement.ValueType = ad_pb2.PLACEMENT_UNSPECIFIED
    headline: str = ""
    ai_badge: bool = False
    # ADGEN_ORCHESTRATOR_OVERLAY_FONT_PATH; None finds the installed one.
    font_path: Path | None = None
    # A brand kit's logo (drawn whenever it has one), colours and headline font.
    brand: Brand | None = None
    # The merchant's cut-out products, pasted back pixel for pixel first, under the logo and text (issue #16).
    products: ProductScene | None = None


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


def rendered_picture(image: image_pb2.Image, fit_to: Size | None = None) -> Image.Image:
    """The pixels of a diffusion result: IMAGE_FORMAT_RAW_RGB taken as they are (no decode), after checking
    that width, height, stride and the byte count agree; any other format decoded. DownstreamImageError when
    the image is not what it says.

    With `fit_to`, a raw render that covers it by a grid step is read at its centre only: one copy of the
    delivered pixels instead of the whole render and then its crop (what `deliver` would cut out anyway)."""
    if image.format == image_pb2.IMAGE_FORMAT_RAW_RGB:
        return _raw_picture(image, fit_to)
    try:
        with Image.open(io.BytesIO(image.data)) as generated:
            return generated.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DownstreamImageError(f"an undecodable {len(image.data)}-byte image") from error


def _raw_picture(image: image_pb2.Image, fit_to: Size | None) -> Image.Image:
    data = image.data  # Each read of a bytes field copies it out of the message: once only.
    width, height, stride, size = image.width, image.height, image.stride, len(data)
    # The last row may stop at its pixels: the rows before it take `stride` bytes each.
    if (
        width <= 0
        or height <= 0
        or stride < 3 * width
        or not stride * (height - 1) + 3 * width <= size <= stride * height
    ):
        raise DownstreamImageError(f"raw RGB of {width}x{height}, stride {stride}, in {size} bytes")
    if fit_to is None or not _covers_closely(Size(width, height), fit_to):
        return Image.frombuffer("RGB", (width, height), data, "raw", "RGB", stride, 1)
    # The centre window's first pixel, then rows of `stride` bytes; Pillow reads only the window (and copies it).
    left, top = (width - fit_to.width) // 2, (height - fit_to.height) // 2
    window = memoryview(data)[top * stride + 3 * left :]
    # Any buffer will do (Pillow's stubs name bytes): a memoryview slice copies nothing.
    return Image.frombuffer("RGB", (fit_to.width, fit_to.height), cast(bytes, window), "raw", "RGB", stride, 1)


def deliver(
    picture: Image.Image,
    size: Size,
    image_format: image_pb2.ImageFormat.ValueType,
    label: ContentLabel,
    overlay: Overlay | None = None,
    signer: ContentSigner | None = None,
) -> Delivered:
    """Fits a rendered picture to the exact delivered size (centre-cropped from a render a grid step larger; else
    cropped to the aspect where the model could not render that shape, and resized), draws any overlay text at
    that size (so it is sharp and inside the safe zone) with any brand logo, and encodes it once, with its AI label
    and, given a `signer`, its C2PA manifest."""
    if (picture.width, picture.height) != (size.width, size.height):
        picture = _fit(picture, size)
    if overlay is not None and overlay.products is not None:
        overlay.products.composite(picture)
    if overlay is not None and overlay.brand is not None and overlay.brand.logo is not None:
        draw_logo(picture, overlay.brand.logo, overlay.placement)
    if overlay is not None and overlay.headline.strip():
        draw_headline(picture, overlay.headline, overlay.placement, font_path=overlay.font_path, brand=overlay.brand)
    if overlay is not None and overlay.ai_badge:
        draw_ai_badge(picture, overlay.placement, font_path=overlay.font_path, brand=overlay.brand)
    started = time.perf_counter()
    encoded = encode_labelled(picture, PILLOW_FORMATS[image_format], label, signer)
    encode_s = time.perf_counter() - started
    image = image_pb2.Image(data=encoded, format=image_format, width=size.width, height=size.height)
    return Delivered(image, encode_s)


def _fit(picture: Image.Image, size: Size) -> Image.Image:
    """`picture` at exactly `size`: its centre when it covers `size` by a grid step; else resized, after cropping
    its centre to `size`'s aspect when the two differ by more than the size grid explains (a 32:1 banner from a
    model that renders at most 8:1)."""
    if _covers_closely(picture, size):
        return _centre(picture, size.width, size.height)
    aspect = picture.width / picture.height
    if abs(math.log(aspect / size.aspect)) > _MAX_STRETCH:
        if aspect > size.aspect:
            picture = _centre(picture, round(picture.height * size.aspect), picture.height)
        else:
            picture = _centre(picture, picture.width, round(picture.width / size.aspect))
    return picture.resize((size.width, size.height), Image.Resampling.LANCZOS)


def _covers_closely(picture: Image.Image | Size, size: Size) -> bool:
    return all(
        delivered <= rendered <= delivered * MAX_CROP
        for rendered, delivered in ((picture.width, size.width), (picture.height, size.height))
    )


def _centre(picture: Image.Image, width: int, height: int) -> Image.Image:
    left, top = (picture.width - width) // 2, (picture.height - height) // 2
    return picture.crop((left, top, left + width, top + height))
