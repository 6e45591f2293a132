"""The brand's colours and logo appear in the overlay pixels, where the safe zone puts them."""

from __future__ import annotations

import pytest
from PIL import Image

from adgen.type.v1 import ad_pb2
from adgen_orchestrator.brand import Brand, Rgb
from adgen_orchestrator.overlay import (
    LOGO_MAX_HEIGHT,
    LOGO_MAX_WIDTH,
    Box,
    draw_ai_badge,
    draw_headline,
    draw_logo,
    safe_zone_for,
)

PLACEMENTS = [
    (ad_pb2.PLACEMENT_FEED_SQUARE, (1080, 1080)),
    (ad_pb2.PLACEMENT_FEED_PORTRAIT, (1080, 1350)),
    (ad_pb2.PLACEMENT_STORY, (1080, 1920)),
]
BACKGROUND: Rgb = (90, 140, 200)
NAVY: Rgb = (20, 30, 90)
CORAL: Rgb = (255, 107, 129)
GOLD: Rgb = (255, 200, 40)
LOGO_RED: Rgb = (200, 20, 60)


def _colours_in(image: Image.Image, box: Box) -> set[Rgb]:
    region = image.crop((box.left, box.top, box.right, box.bottom))
    data = region.tobytes()  # RGB, three bytes a pixel.
    return set(zip(data[0::3], data[1::3], data[2::3], strict=True))


def _half_transparent_logo() -> Image.Image:
    """Left half opaque red, right half fully transparent (its colour channels green, which must not show)."""
    logo = Image.new("RGBA", (200, 100), (0, 255, 0, 0))
    logo.paste((*LOGO_RED, 255), (0, 0, 100, 100))
    return logo


@pytest.mark.parametrize(("placement", "size"), PLACEMENTS)
def test_headline_panel_is_the_primary_colour_and_its_text_the_accent(
    placement: ad_pb2.Placement.ValueType, size: tuple[int, int]
) -> None:
    image = Image.new("RGB", size, BACKGROUND)
    box = draw_headline(image, "여름엔 시원한 딸기 주스", placement, brand=Brand(primary_color=NAVY, accent_color=GOLD))
    assert safe_zone_for(placement).box(*size).contains(box)
    # The panel's corners are rounded (radius under 40 px); inside them it is all primary colour and text.
    assert image.getpixel(((box.left + box.right) // 2, box.top + 2)) == NAVY
    colours = _colours_in(image, box)
    assert GOLD in colours and BACKGROUND not in _colours_in(
        image, Box(box.left + 40, box.top, box.right - 40, box.bottom)
    )
    # The text is filled with the accent itself, not only anti-aliased towards it.
    assert (
        sum(1 for x in range(box.left, box.right) for y in range(box.top, box.bottom) if image.getpixel((x, y)) == GOLD)
        > 500
    )


def test_an_accent_that_does_not_read_on_the_panel_gives_way_to_black_or_white() -> None:
    image = Image.new("RGB", (1080, 1080), BACKGROUND)
    pale: Rgb = (250, 240, 190)
    box = draw_headline(
        image, "딸기 주스", ad_pb2.PLACEMENT_FEED_SQUARE, brand=Brand(primary_color=(255, 255, 255), accent_color=pale)
    )
    colours = _colours_in(image, box)
    assert (0, 0, 0) in colours and pale not in colours


def test_an_accent_without_a_panel_colours_the_bare_text() -> None:
    image = Image.new("RGB", (1080, 1080), BACKGROUND)
    box = draw_headline(image, "딸기 주스", ad_pb2.PLACEMENT_FEED_SQUARE, brand=Brand(accent_color=CORAL))
    colours = _colours_in(image, box)
    assert CORAL in colours and BACKGROUND in colours  # No panel: the photo shows between the letters.


@pytest.mark.parametrize(("placement", "size"), PLACEMENTS)
def test_ai_badge_plate_is_the_accent_colour(placement: ad_pb2.Placement.ValueType, size: tuple[int, int]) -> None:
    image = Image.new("RGB", size, "white")
    box = draw_ai_badge(image, placement, brand=Brand(accent_color=CORAL))
    assert safe_zone_for(placement).box(*size).contains(box)
    assert image.getpixel((box.left + 2, (box.top + box.bottom) // 2)) == CORAL
    assert (0, 0, 0) in _colours_in(image, box)  # Coral is light: black text reads better than white.


@pytest.mark.parametrize(("placement", "size"), PLACEMENTS)
def test_logo_is_composited_in_the_safe_zones_bottom_left_corner(
    placement: ad_pb2.Placement.ValueType, size: tuple[int, int]
) -> None:
    image = Image.new("RGB", size, BACKGROUND)
    box = draw_logo(image, _half_transparent_logo(), placement)
    zone = safe_zone_for(placement).box(*size)
    assert zone.contains(box) and (box.left, box.bottom) == (zone.left, zone.bottom)
    width, height = box.right - box.left, box.bottom - box.top
    assert width == round(size[0] * LOGO_MAX_HEIGHT) * 2 and height == round(size[0] * LOGO_MAX_HEIGHT)
    assert width <= size[0] * LOGO_MAX_WIDTH and abs(width / height - 2) < 0.02  # Aspect kept.
    middle = (box.top + box.bottom) // 2
    assert image.getpixel((box.left + width // 4, middle)) == LOGO_RED  # Opaque half: the logo itself.
    assert image.getpixel((box.left + 3 * width // 4, middle)) == BACKGROUND  # Transparent half: the photo.
    assert (0, 255, 0) not in _colours_in(image, box)
    assert (
        image.getpixel((box.right + 5, middle)) == BACKGROUND and image.getpixel((box.left, box.top - 5)) == BACKGROUND
    )


def test_a_half_transparent_logo_pixel_blends_with_the_photo() -> None:
    image = Image.new("RGB", (1080, 1080), (0, 0, 0))
    box = draw_logo(image, Image.new("RGBA", (100, 100), (255, 255, 255, 128)), ad_pb2.PLACEMENT_FEED_SQUARE)
    grey = image.getpixel(((box.left + box.right) // 2, (box.top + box.bottom) // 2))
    assert isinstance(grey, tuple) and all(120 <= channel <= 135 for channel in grey)


def test_headline_font_of_the_brand_changes_the_letters() -> None:
    bold, black = Image.new("RGB", (1080, 1080)), Image.new("RGB", (1080, 1080))
    draw_headline(bold, "딸기 주스", ad_pb2.PLACEMENT_FEED_SQUARE, brand=Brand(headline_font="pretendard-bold"))
    draw_headline(black, "딸기 주스", ad_pb2.PLACEMENT_FEED_SQUARE, brand=Brand(headline_font="pretendard-black"))
    assert bold.tobytes() != black.tobytes()
