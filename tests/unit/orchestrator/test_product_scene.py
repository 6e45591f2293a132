"""Product photos: cut-out detection, layout on each placement's canvas, and exact re-compositing."""

from __future__ import annotations

import io
import itertools

import pytest
from PIL import Image, ImageDraw

from adgen.type.v1 import ad_pb2
from adgen_orchestrator.product_scene import (
    CANVAS_COLOR,
    ProductPhoto,
    lay_out,
    product_area,
    read_product_photo,
    scene_instruction,
)
from adgen_orchestrator.sizing import PLACEMENT_SIZES, Size
from adgen_runtime.photos import InvalidImageError

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 40_000_000}
PLACEMENTS = list(PLACEMENT_SIZES.items())


def cut_out_bottle(width: int = 120, height: int = 300, margin: int = 20) -> Image.Image:
    """A bottle-shaped product on a transparent background, with a soft (half-transparent) edge row."""
    image = Image.new("RGBA", (width + 2 * margin, height + 2 * margin), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rectangle((margin, margin, margin + width - 1, margin + height - 1), fill=(200, 30, 60, 255))
    draw.rectangle((margin + 10, margin + 40, margin + width - 11, margin + 90), fill=(250, 240, 20, 255))
    draw.line((margin, margin + height, margin + width - 1, margin + height), fill=(200, 30, 60, 128))
    return image


def encoded(image: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


def test_a_png_with_a_transparent_background_is_a_cut_out_trimmed_to_its_visible_pixels() -> None:
    product = read_product_photo(encoded(cut_out_bottle()), **LIMITS)
    assert product.cut_out and product.image.mode == "RGBA"
    # 120 wide; 300 tall plus the half-transparent edge row under it.
    assert product.size == Size(120, 301)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_an_opaque_photo_is_not_a_cut_out(image_format: str) -> None:
    product = read_product_photo(encoded(Image.new("RGB", (200, 100), "white"), image_format), **LIMITS)
    assert not product.cut_out and product.image.mode == "RGB" and product.size == Size(200, 100)


def test_an_alpha_channel_that_is_all_but_opaque_is_not_a_mask() -> None:
    almost = Image.new("RGBA", (100, 100), (10, 20, 30, 255))
    almost.putpixel((0, 0), (0, 0, 0, 0))  # One clear corner pixel: an export artefact, not a background.
    assert not read_product_photo(encoded(almost), **LIMITS).cut_out


def test_a_fully_transparent_photo_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="fully transparent"):
        read_product_photo(encoded(Image.new("RGBA", (50, 50), (0, 0, 0, 0))), **LIMITS)


def test_product_photos_follow_the_shared_photo_rules() -> None:
    with pytest.raises(InvalidImageError, match="truncated or corrupt"):
        read_product_photo(encoded(cut_out_bottle())[:200], **LIMITS)


@pytest.mark.parametrize(("placement", "size"), PLACEMENTS)
def test_a_product_that_fits_is_placed_at_native_size_inside_the_product_area(
    placement: ad_pb2.Placement.ValueType, size: Size
) -> None:
    product = read_product_photo(encoded(cut_out_bottle()), **LIMITS)
    scene = lay_out([product], size, placement)
    (item,) = scene.placed
    assert item.native and (item.box.width, item.box.height) == (120, 301)
    area = product_area(size, placement)
    assert area.left <= item.box.left and item.box.left + item.box.width <= area.left + area.width
    assert area.top <= item.box.top and item.box.top + item.box.height <= area.top + area.height


@pytest.mark.parametrize(("placement", "size"), PLACEMENTS)
def test_a_product_too_large_is_scaled_down_with_its_aspect_kept(
    placement: ad_pb2.Placement.ValueType, size: Size
) -> None:
    product = ProductPhoto(Image.new("RGB", (1600, 2400), "navy"), cut_out=False)
    (item,) = lay_out([product], size, placement).placed
    area = product_area(size, placement)
    assert not item.native
    assert item.box.width <= area.width and item.box.height <= area.height
    assert max(item.box.width / area.width, item.box.height / area.height) > 0.99  # As large as fits.
    assert item.box.width / item.box.height == pytest.approx(1600 / 2400, rel=0.01)


def test_three_products_stand_side_by_side_on_one_baseline_without_overlapping() -> None:
    products = [
        ProductPhoto(Image.new("RGB", (w, h), "olive"), cut_out=False) for w, h in ((300, 500), (200, 300), (250, 400))
    ]
    placed = lay_out(products, Size(1080, 1080), ad_pb2.PLACEMENT_FEED_SQUARE).placed
    bottoms = {item.box.top + item.box.height for item in placed}
    assert len(bottoms) == 1
    for before, after in itertools.pairwise(placed):
        assert before.box.left + before.box.width < after.box.left
    # Scaled by one factor: the relative sizes stay.
    assert placed[0].box.height / placed[1].box.height == pytest.approx(500 / 300, rel=0.02)


def test_the_reference_canvas_shows_the_product_over_plain_grey_at_its_place() -> None:
    product = read_product_photo(encoded(cut_out_bottle()), **LIMITS)
    scene = lay_out([product], Size(1080, 1350), ad_pb2.PLACEMENT_FEED_PORTRAIT)
    with Image.open(io.BytesIO(scene.reference_png)) as reference:
        canvas = reference.convert("RGB")
    box = scene.placed[0].box
    assert canvas.size == (1080, 1350)
    assert canvas.getpixel((5, 5)) == CANVAS_COLOR
    assert canvas.getpixel((box.left + 60, box.top + 150)) == (200, 30, 60)


def test_composite_pastes_the_products_own_pixels_back_exactly_over_any_scene() -> None:
    product = read_product_photo(encoded(cut_out_bottle()), **LIMITS)
    scene = lay_out([product], Size(1080, 1920), ad_pb2.PLACEMENT_STORY)
    picture = Image.effect_noise((1080, 1920), 80).convert("RGB")  # Whatever the model drew.
    scene.composite(picture)
    box = scene.placed[0].box
    pasted = picture.crop((box.left, box.top, box.left + box.width, box.top + box.height))
    alpha = product.image.getchannel("A")
    opaque = [xy for xy in ((x, y) for y in range(box.height) for x in range(box.width)) if alpha.getpixel(xy) == 255]
    assert len(opaque) == 120 * 300
    rgb = product.image.convert("RGB")
    assert all(pasted.getpixel(xy) == rgb.getpixel(xy) for xy in opaque)
    # The half-transparent edge row blends with the scene rather than hiding it.
    edge = (60, 300)
    assert pasted.getpixel(edge) != rgb.getpixel(edge)


def test_composite_leaves_opaque_photos_as_the_edit_model_drew_them() -> None:
    product = ProductPhoto(Image.new("RGB", (200, 200), "white"), cut_out=False)
    scene = lay_out([product], Size(1080, 1080), ad_pb2.PLACEMENT_FEED_SQUARE)
    picture = Image.new("RGB", (1080, 1080), "black")
    scene.composite(picture)
    assert picture.getcolors() == [(1080 * 1080, (0, 0, 0))]
    assert scene.needs_edit_model


def test_composite_refuses_a_picture_of_another_size() -> None:
    product = read_product_photo(encoded(cut_out_bottle()), **LIMITS)
    scene = lay_out([product], Size(1080, 1080), ad_pb2.PLACEMENT_FEED_SQUARE)
    with pytest.raises(ValueError, match="scene is"):
        scene.composite(Image.new("RGB", (1088, 1088)))


def test_the_instruction_keeps_the_product_and_names_what_to_replace() -> None:
    cut = lay_out(
        [read_product_photo(encoded(cut_out_bottle()), **LIMITS)], Size(1080, 1080), ad_pb2.PLACEMENT_FEED_SQUARE
    )
    opaque = lay_out(
        [ProductPhoto(Image.new("RGB", (99, 99)), cut_out=False)] * 2, Size(1080, 1080), ad_pb2.PLACEMENT_FEED_SQUARE
    )
    assert scene_instruction(" a sunny cafe table ", cut).endswith("background with this scene: a sunny cafe table")
    assert "exactly as it is" in scene_instruction("x", cut)
    assert "Keep the products in Picture 1 exactly as photographed" in scene_instruction("x", opaque)
