"""The merchant's product photos in a generated scene: decoding, layout on the placement's canvas, exact re-compositing.

A cut-out product (a PNG or WebP with a transparent background) is laid out on a canvas of the placement's exact
size, the canvas goes to the text-to-image model's reference-image edit with the scene prompt, and the product's
own pixels are pasted back over the result with their alpha: whatever the model drew, the product is the
merchant's, pixel for pixel. An opaque photo (no transparency) has no mask, so the edit model replaces its
background on the same canvas (the photo padded to the placement's aspect, so the scene is extended and the
photo never stretched); the product is then as the edit model keeps it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from PIL import Image

from adgen.type.v1 import ad_pb2, image_pb2
from adgen_orchestrator.overlay import LOGO_MAX_HEIGHT, safe_zone_for
from adgen_orchestrator.sizing import Size
from adgen_runtime.photos import InvalidImageError, open_photo

MAX_PRODUCT_PHOTOS = 3
# A photo is a cut-out when at least this share of its pixels is fully transparent: a few clear pixels at
# an edge (an export artefact) are not a background mask.
MIN_TRANSPARENT_SHARE = 0.01
# The canvas the model sees behind cut-out products, and the padding around opaque photos: a plain light grey
# the instructions name, so the model knows what to replace.
CANVAS_COLOR = (224, 224, 224)
# Between products placed side by side, as a share of the canvas width.
_GAP_SHARE = 0.03
# The top third of the safe zone holds the headline (overlay.draw_headline); its bottom strip the brand logo (left)
# and the AI badge (right), the logo at most LOGO_MAX_HEIGHT of the width tall: products stay clear of both.
_HEADLINE_SHARE = 1 / 3
_BOTTOM_STRIP_SHARE = LOGO_MAX_HEIGHT + 0.01


@dataclass(frozen=True)
class ProductPhoto:
    """One product photo, decoded and upright: RGBA trimmed to its visible pixels when it is a cut-out,
    RGB as photographed otherwise."""

    image: Image.Image
    cut_out: bool
    # The file as uploaded, for the delivered image's provenance (a C2PA ingredient).
    data: bytes = b""

    @property
    def size(self) -> Size:
        return Size(self.image.width, self.image.height)


@dataclass(frozen=True)
class Box:
    """Where a product lands on the canvas: its top-left corner and its size there."""

    left: int
    top: int
    width: int
    height: int


@dataclass(frozen=True)
class PlacedProduct:
    """A product at its place on one canvas; `pixels` is the photo itself when it fits at native size."""

    product: ProductPhoto
    box: Box
    pixels: Image.Image

    @property
    def native(self) -> bool:
        return self.pixels is self.product.image


@dataclass(frozen=True)
class ProductScene:
    """The products laid out on one placement's canvas: what the model sees, and what is pasted back."""

    size: Size
    placed: tuple[PlacedProduct, ...]

    @property
    def needs_edit_model(self) -> bool:
        """An opaque photo has no mask to composite by: the edit model must replace its background."""
        return any(not item.product.cut_out for item in self.placed)

    @cached_property
    def reference_png(self) -> bytes:
        """The canvas the model edits: every product at its place over plain grey, as a PNG (made once per
        placement, shared by its variants)."""
        canvas = Image.new("RGB", (self.size.width, self.size.height), CANVAS_COLOR)
        for item in self.placed:
            _paste(canvas, item)
        buffer = io.BytesIO()
        canvas.save(buffer, "PNG", compress_level=1)
        return buffer.getvalue()

    def composite(self, picture: Image.Image) -> None:
        """Pastes each cut-out product's own pixels back over `picture` (at the delivered size) with its alpha:
        opaque pixels become exactly the product's; edge pixels blend with the scene as alpha says."""
        if (picture.width, picture.height) != (self.size.width, self.size.height):
            raise ValueError(f"the scene is {self.size}, the picture {picture.size}")
        for item in self.placed:
            if item.product.cut_out:
                _paste(picture, item)


def read_product_photo(data: bytes, *, max_bytes: int, max_pixels: int) -> ProductPhoto:
    """A product photo checked by the shared photo rule (InvalidImageError says what is wrong), upright,
    classified as cut-out or opaque. Blocking Pillow work: run it off the event loop."""
    image = open_photo(data, max_bytes=max_bytes, max_pixels=max_pixels).image
    if not _has_alpha(image):
        return ProductPhoto(image.convert("RGB"), cut_out=False, data=data)
    rgba = image.convert("RGBA")
    alpha = rgba.getchannel("A")
    if alpha.histogram()[0] < MIN_TRANSPARENT_SHARE * rgba.width * rgba.height:
        return ProductPhoto(rgba.convert("RGB"), cut_out=False, data=data)
    visible = alpha.getbbox()
    if visible is None:
        raise InvalidImageError("is fully transparent; there is no product to show")
    return ProductPhoto(rgba.crop(visible), cut_out=True, data=data)


def read_product_photos(
    photos: Sequence[image_pb2.Image], *, max_bytes: int, max_pixels: int
) -> tuple[list[ProductPhoto], list[tuple[str, str]]]:
    """The request's product photos decoded, and (field, description) for each one refused (INVALID_IMAGE)."""
    if len(photos) > MAX_PRODUCT_PHOTOS:
        return [], [("product_photos", f"holds {len(photos)} photos; at most {MAX_PRODUCT_PHOTOS} fit one ad")]
    products: list[ProductPhoto] = []
    problems: list[tuple[str, str]] = []
    for index, photo in enumerate(photos):
        try:
            products.append(read_product_photo(photo.data, max_bytes=max_bytes, max_pixels=max_pixels))
        except InvalidImageError as rejected:
            problems.append((f"product_photos[{index}].data", str(rejected)))
    return products, problems


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def product_area(size: Size, placement: ad_pb2.Placement.ValueType) -> Box:
    """Where products may stand: the placement's safe zone below the headline, above the logo and the AI badge."""
    zone = safe_zone_for(placement).box(size.width, size.height)
    zone_height = zone.bottom - zone.top
    top = zone.top + round(zone_height * _HEADLINE_SHARE)
    bottom = zone.bottom - round(size.width * _BOTTOM_STRIP_SHARE)
    return Box(zone.left, top, zone.right - zone.left, max(bottom - top, 1))


def lay_out(products: Sequence[ProductPhoto], size: Size, placement: ad_pb2.Placement.ValueType) -> ProductScene:
    """The products side by side, centred in the product area and standing on one baseline, at native size
    when they fit; else all scaled down by one factor (aspect kept, relative sizes kept), never enlarged."""
    area = product_area(size, placement)
    gap = round(size.width * _GAP_SHARE) if len(products) > 1 else 0
    gaps = gap * (len(products) - 1)
    total_width = sum(product.size.width for product in products)
    tallest = max(product.size.height for product in products)
    scale = min(1.0, max(area.width - gaps, 1) / total_width, area.height / tallest)
    scaled = [_scaled(product, scale) for product in products]
    row_width = sum(pixels.width for pixels in scaled) + gaps
    row_height = max(pixels.height for pixels in scaled)
    left = area.left + (area.width - row_width) // 2
    baseline = area.top + (area.height - row_height) // 2 + row_height
    placed = []
    for product, pixels in zip(products, scaled, strict=True):
        box = Box(left, baseline - pixels.height, pixels.width, pixels.height)
        placed.append(PlacedProduct(product, box, pixels))
        left += pixels.width + gap
    return ProductScene(size, tuple(placed))


def _scaled(product: ProductPhoto, scale: float) -> Image.Image:
    if scale >= 1.0:
        return product.image
    width = max(1, int(product.image.width * scale))
    height = max(1, int(product.image.height * scale))
    # Pillow resamples RGBA premultiplied, so transparent pixels do not bleed dark fringes into the edges.
    return product.image.resize((width, height), Image.Resampling.LANCZOS)


def _paste(canvas: Image.Image, item: PlacedProduct) -> None:
    position = (item.box.left, item.box.top)
    if item.pixels.mode == "RGBA":
        canvas.paste(item.pixels.convert("RGB"), position, mask=item.pixels.getchannel("A"))
    else:
        canvas.paste(item.pixels, position)


def scene_instruction(scene_prompt: str, scene: ProductScene) -> str:
    """What the model is asked: keep the products, replace the plain grey around them with the copywriter's scene."""
    many = len(scene.placed) > 1
    things, they = ("products", "they are") if many else ("product", "it is")
    if scene.needs_edit_model:
        keep = (
            f"Keep the {things} in Picture 1 exactly as photographed: same shape, colours, label, size and position. "
            f"Replace the background, the surface and the plain grey border around the {things} with this scene: "
        )
    else:
        keep = (
            f"Keep the {things} of the reference image exactly as {they}, at the same position, size and angle. "
            "Replace the plain grey background with this scene: "
        )
    return keep + scene_prompt.strip()
