"""Korean text drawn onto delivered images: the headline and the visible "AI 생성" badge.

Image models cannot draw Hangul reliably, so text is composited with a real Korean font,
inside the placement's safe zone (the parts Instagram's UI and grid crops leave visible).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from adgen.type.v1 import ad_pb2

# Debian's fonts-noto-cjk (the Docker image installs it); the collection holds JP/KR/SC/TC faces.
DEFAULT_FONT_PATHS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)
KOREAN_FACE = "Noto Sans CJK KR"
AI_BADGE_TEXT = "AI 생성"


class FontUnavailableError(RuntimeError):
    """No font with Hangul glyphs is installed."""


@dataclass(frozen=True)
class Box:
    """A pixel rectangle, right and bottom exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    def contains(self, other: Box) -> bool:
        return (
            self.left <= other.left
            and self.top <= other.top
            and other.right <= self.right
            and other.bottom <= self.bottom
        )


@dataclass(frozen=True)
class SafeZone:
    """Margins, as fractions of the image size, that text must stay clear of."""

    top: float
    bottom: float
    side: float

    def box(self, width: int, height: int) -> Box:
        return Box(
            round(width * self.side),
            round(height * self.top),
            round(width * (1 - self.side)),
            round(height * (1 - self.bottom)),
        )


_SAFE_ZONES = {
    # Stories and Reels: about 250 px of 1920 at top and bottom sit under the app's UI.
    ad_pb2.PLACEMENT_STORY: SafeZone(top=250 / 1920, bottom=250 / 1920, side=0.06),
    # 4:5 feed posts show cropped to 3:4 on the profile grid: 34 px of 1080 each side.
    ad_pb2.PLACEMENT_FEED_PORTRAIT: SafeZone(top=0.06, bottom=0.06, side=0.06 + 34 / 1080),
}
_DEFAULT_SAFE_ZONE = SafeZone(top=0.06, bottom=0.06, side=0.06)


def safe_zone_for(placement: ad_pb2.Placement.ValueType) -> SafeZone:
    return _SAFE_ZONES.get(placement, _DEFAULT_SAFE_ZONE)


@cache
def _font_source(font_path: str | None) -> tuple[str, int]:
    """The font file and collection index of the Korean face."""
    for path in (font_path,) if font_path else DEFAULT_FONT_PATHS:
        if not Path(path).is_file():
            continue
        for index in range(16):
            try:
                family, _ = ImageFont.truetype(path, 12, index=index).getname()
            except OSError:
                break
            if family == KOREAN_FACE or not path.endswith(".ttc"):
                return path, index
    raise FontUnavailableError("no Korean font found; install fonts-noto-cjk or set a font path")


def korean_font(size: int, font_path: str | None = None) -> ImageFont.FreeTypeFont:
    path, index = _font_source(font_path)
    return ImageFont.truetype(path, size, index=index)


def draw_headline(
    image: Image.Image, text: str, placement: ad_pb2.Placement.ValueType, font_path: str | None = None
) -> Box:
    """Draws `text` centred in the top third of the safe zone, as large as fits; returns its box."""
    zone = safe_zone_for(placement).box(*image.size)
    max_width, max_height = zone.right - zone.left, (zone.bottom - zone.top) // 3
    draw = ImageDraw.Draw(image)
    size = max(12, image.width // 11)
    while True:
        font = korean_font(size, font_path)
        stroke = max(1, size // 14)
        lines = _wrap(draw, text, font, max_width - 2 * stroke)
        spacing = size // 5
        left, top, right, bottom = (
            round(v)
            for v in draw.multiline_textbbox(
                (0, 0), "\n".join(lines), font=font, spacing=spacing, stroke_width=stroke, align="center"
            )
        )
        fits = right - left <= max_width and bottom - top <= max_height
        if fits or size <= 12:
            break
        size = int(size * 0.9)
    x = zone.left + (max_width - (right - left)) // 2 - left
    y = zone.top - top
    draw.multiline_text(
        (x, y),
        "\n".join(lines),
        font=font,
        fill=(255, 255, 255),
        spacing=spacing,
        align="center",
        stroke_width=stroke,
        stroke_fill=(20, 20, 20),
    )
    return Box(x + left, y + top, x + right, y + bottom)


def draw_ai_badge(image: Image.Image, placement: ad_pb2.Placement.ValueType, font_path: str | None = None) -> Box:
    """Draws the visible "AI 생성" disclosure in the bottom-right corner of the safe zone."""
    zone = safe_zone_for(placement).box(*image.size)
    font = korean_font(max(12, image.width // 32), font_path)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = (round(v) for v in draw.textbbox((0, 0), AI_BADGE_TEXT, font=font))
    pad = max(4, (bottom - top) // 3)
    box = Box(zone.right - (right - left) - 2 * pad, zone.bottom - (bottom - top) - 2 * pad, zone.right, zone.bottom)
    draw.rounded_rectangle((box.left, box.top, box.right - 1, box.bottom - 1), radius=pad, fill=(0, 0, 0))
    draw.text((box.left + pad - left, box.top + pad - top), AI_BADGE_TEXT, font=font, fill=(255, 255, 255))
    return box


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap; Korean separates words with spaces, so spaces are the break points."""
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(candidate, font=font) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines or [""]
