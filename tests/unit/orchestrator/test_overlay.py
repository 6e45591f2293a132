"""Hangul headline and AI badge are drawn with a Korean font inside the placement's safe zone."""

from __future__ import annotations

import pytest
from PIL import Image, ImageChops

from adgen.type.v1 import ad_pb2
from adgen_orchestrator.overlay import draw_ai_badge, draw_headline, korean_font, safe_zone_for

PLACEMENTS = [
    (ad_pb2.PLACEMENT_FEED_SQUARE, (1080, 1080)),
    (ad_pb2.PLACEMENT_FEED_PORTRAIT, (1080, 1350)),
    (ad_pb2.PLACEMENT_STORY, (1080, 1920)),
]


def test_korean_font_is_the_projects_pretendard_with_hangul_glyphs() -> None:
    font = korean_font(32)
    assert font.getname()[0] == "Pretendard"
    assert font.getmask("딸기").getbbox() is not None


@pytest.mark.parametrize(("placement", "size"), PLACEMENTS)
def test_headline_is_drawn_inside_the_safe_zone(placement: ad_pb2.Placement.ValueType, size: tuple[int, int]) -> None:
    image = Image.new("RGB", size, (90, 140, 200))
    blank = image.copy()
    box = draw_headline(image, "여름엔 역시 시원한 딸기 생과일 주스 한 잔 어떠세요", placement)
    zone = safe_zone_for(placement).box(*size)
    assert zone.contains(box)
    changed = ImageChops.difference(image, blank).getbbox()
    assert changed is not None
    assert zone.left <= changed[0] and zone.top <= changed[1] and changed[2] <= zone.right and changed[3] <= zone.bottom


def test_story_headline_stays_below_the_top_250_pixels() -> None:
    image = Image.new("RGB", (1080, 1920))
    assert draw_headline(image, "딸기 주스", ad_pb2.PLACEMENT_STORY).top >= 250


@pytest.mark.parametrize(("placement", "size"), PLACEMENTS)
def test_ai_badge_sits_inside_the_safe_zone(placement: ad_pb2.Placement.ValueType, size: tuple[int, int]) -> None:
    image = Image.new("RGB", size, "white")
    box = draw_ai_badge(image, placement)
    assert safe_zone_for(placement).box(*size).contains(box)
    assert image.getpixel((box.left + 2, (box.top + box.bottom) // 2)) == (0, 0, 0)  # the dark plate
