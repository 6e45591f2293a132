"""Product photos for tests, and the check that a delivered ad kept a cut-out product pixel for pixel."""

from __future__ import annotations

import io

from PIL import Image, ImageChops, ImageDraw

from adgen.type.v1 import ad_pb2
from adgen_orchestrator.product_scene import ProductScene, lay_out, read_product_photo
from adgen_orchestrator.sizing import PLACEMENT_SIZES

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 40_000_000}


def cut_out_png(width: int = 90, height: int = 210) -> bytes:
    """A juice bottle on a transparent background: a body, a label and a soft half-transparent rim."""
    image = Image.new("RGBA", (width + 40, height + 40), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((20, 20, 19 + width, 19 + height), radius=12, fill=(220, 40, 70, 255))
    draw.rectangle((30, 80, 9 + width, 130), fill=(255, 250, 230, 255))
    draw.line((20, 20 + height, 19 + width, 20 + height), fill=(220, 40, 70, 120), width=2)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def opaque_jpeg(width: int = 300, height: int = 200) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def scene_for(photo: bytes, placement: ad_pb2.Placement.ValueType) -> ProductScene:
    return lay_out([read_product_photo(photo, **LIMITS)], PLACEMENT_SIZES[placement], placement)


def product_unchanged(delivered: bytes, photo: bytes, placement: ad_pb2.Placement.ValueType) -> bool:
    """Whether every opaque pixel of the cut-out product is exactly the product's, at native size, where the
    layout put it in this placement's delivered image."""
    (item,) = scene_for(photo, placement).placed
    product = read_product_photo(photo, **LIMITS).image
    assert (item.box.width, item.box.height) == product.size  # At native size: neither stretched nor scaled.
    with Image.open(io.BytesIO(delivered)) as decoded:
        picture = decoded.convert("RGB")
    region = picture.crop((item.box.left, item.box.top, item.box.left + item.box.width, item.box.top + item.box.height))
    opaque = product.getchannel("A").point(lambda alpha: 255 if alpha == 255 else 0)
    expected = region.copy()
    expected.paste(product.convert("RGB"), mask=opaque)
    return ImageChops.difference(region, expected).getbbox() is None and opaque.getbbox() is not None
