"""Korean text and the brand drawn onto delivered images: the headline, the visible "AI 생성" badge and the logo.

Image models cannot draw Hangul reliably, so text is composited with a real Korean font,
inside the placement's safe zone (the parts Instagram's UI and grid crops leave visible).
A brand kit colours the headline (its panel in the primary colour, its text in the accent) and the badge
(the accent), picks the headline's Pretendard weight, and puts its logo in the safe zone's bottom-left corner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from adgen.type.v1 import ad_pb2
from adgen_orchestrator.brand import BLACK, HEADLINE_FONT_FILES, WHITE, Brand, legible_on, text_colour_on

# The project's own font: Pretendard (OFL-1.1), from the `pretendard` npm package that `npm ci` installs at
# the repository root (package.json), or where the Docker image puts it. Debian's fonts-noto-cjk is the fallback.
PRETENDARD_DIRS = (
    Path(__file__).resolve().parents[3] / "node_modules/pretendard/dist/public/static",
    Path("/usr/local/share/fonts/pretendard"),
)
PRETENDARD_IN_CHECKOUT = PRETENDARD_DIRS[0] / "Pretendard-Bold.otf"
PRETENDARD_IN_IMAGE = PRETENDARD_DIRS[1] / "Pretendard-Bold.otf"
NOTO_CJK_PATHS = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
)
DEFAULT_FONT_PATHS = (PRETENDARD_IN_CHECKOUT, PRETENDARD_IN_IMAGE, *NOTO_CJK_PATHS)
AI_BADGE_TEXT = "AI 생성"
# A collection (.ttc) holds up to this many faces; Noto Sans CJK has JP, KR, SC, TC and HK.
_MAX_FACES = 16
# Far outside any font's cmap: FreeType draws .notdef (the "tofu" box) for it.
_MISSING_CHARACTER = "\U0010fffd"
# The logo's largest box, as fractions of the image width: visible on a phone, smaller than the headline.
LOGO_MAX_WIDTH = 0.2
LOGO_MAX_HEIGHT = 0.1
_STROKE_COLOUR = (20, 20, 20)


class FontUnavailableError(RuntimeError):
    """No font with Hangul glyphs could be loaded; the message tells the operator how to install one."""


@dataclass(frozen=True)
class FontSource:
    """A font file and, in a collection, the index of its Korean face."""

    path: Path
    index: int = 0


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


def find_korean_font(font_path: Path | None = None) -> FontSource:
    """The configured font, or the first default one installed; FontUnavailableError when none has Hangul."""
    if font_path is not None:
        return _configured_korean_font(Path(font_path))
    return _default_korean_font(DEFAULT_FONT_PATHS)


# Both cached (only a font found is, not a failure): finding one opens font files, and every overlay asks.
@cache
def _configured_korean_font(path: Path) -> FontSource:
    source = _korean_face(path)
    if source is None:
        raise FontUnavailableError(f"{path} is not a loadable font with Hangul glyphs")
    return source


@cache
def _default_korean_font(paths: Sequence[Path]) -> FontSource:
    for path in paths:
        source = _korean_face(path)
        if source is not None:
            return source
    raise FontUnavailableError(
        "no Korean font for text overlays: run `npm ci` at the repository root (it installs the pretendard "
        "package), install Debian's fonts-noto-cjk, or set ADGEN_ORCHESTRATOR_OVERLAY_FONT_PATH to an OTF, TTF "
        "or TTC file with Hangul"
    )


def _korean_face(path: Path) -> FontSource | None:
    """The face of `path` that draws Hangul (a collection's KR face first), or None."""
    if not path.is_file():
        return None
    faces: list[tuple[int, str]] = []
    for index in range(_MAX_FACES):
        try:
            font = ImageFont.truetype(str(path), 24, index=index)
        except OSError:
            break  # Past the last face of a collection, or not a font at all.
        if has_hangul(font):
            faces.append((index, font.getname()[0] or ""))
    if not faces:
        return None
    korean = [index for index, family in faces if family.endswith(" KR")]
    return FontSource(path, korean[0] if korean else faces[0][0])


def has_hangul(font: ImageFont.FreeTypeFont) -> bool:
    """Whether `font` draws Hangul syllables rather than its tofu box (or nothing)."""
    tofu = _glyph_pixels(font, _MISSING_CHARACTER)
    for syllable in ("가", "딸", "힣"):
        pixels = _glyph_pixels(font, syllable)
        if not any(pixels) or pixels == tofu:
            return False
    return True


def _glyph_pixels(font: ImageFont.FreeTypeFont, character: str) -> bytes:
    size = round(font.size * 2)
    canvas = Image.new("L", (size, size))
    ImageDraw.Draw(canvas).text((0, 0), character, font=font, fill=255)
    return canvas.tobytes()


def headline_font_path(font_id: str) -> Path:
    """The installed file of a brand kit's headline font (an id of HEADLINE_FONT_FILES); FontUnavailableError
    when this server has not got it."""
    name = HEADLINE_FONT_FILES[font_id]
    for directory in PRETENDARD_DIRS:
        if (directory / name).is_file():
            return directory / name
    raise FontUnavailableError(
        f"the brand font {font_id} ({name}) is not installed: run `npm ci` at the repository root, or copy it "
        f"into {PRETENDARD_DIRS[1]} as the Docker image does"
    )


def korean_font(size: int, font_path: Path | None = None) -> ImageFont.FreeTypeFont:
    source = find_korean_font(font_path)
    return ImageFont.truetype(str(source.path), size, index=source.index)


def draw_headline(
    image: Image.Image,
    text: str,
    placement: ad_pb2.Placement.ValueType,
    font_path: Path | None = None,
    brand: Brand | None = None,
) -> Box:
    """Draws `text` centred in the top third of the safe zone, as large as fits; returns the box drawn on.

    Without brand colours the text is white with a dark outline. A brand's primary colour becomes a panel
    behind the text, and its accent the text's colour, unless the two do not contrast enough to read
    (MIN_TEXT_CONTRAST): then the text is black or white, whichever reads better on the panel.
    """
    if brand is not None and brand.headline_font:
        font_path = headline_font_path(brand.headline_font)
    panel = brand.primary_color if brand is not None else None
    accent = brand.accent_color if brand is not None else None
    zone = safe_zone_for(placement).box(*image.size)
    max_width, max_height = zone.right - zone.left, (zone.bottom - zone.top) // 3
    draw = ImageDraw.Draw(image)
    size = max(12, image.width // 11)
    while True:
        font = korean_font(size, font_path)
        # A panel carries the text without an outline; the outline is what makes bare text readable on a photo.
        pad = size // 3 if panel is not None else 0
        stroke = 0 if panel is not None else max(1, size // 14)
        lines = _wrap(draw, text, font, max_width - 2 * (stroke + pad))
        spacing = size // 5
        left, top, right, bottom = (
            round(v)
            for v in draw.multiline_textbbox(
                (0, 0), "\n".join(lines), font=font, spacing=spacing, stroke_width=stroke, align="center"
            )
        )
        fits = right - left + 2 * pad <= max_width and bottom - top + 2 * pad <= max_height
        if fits or size <= 12:
            break
        size = int(size * 0.9)
    x = zone.left + (max_width - (right - left)) // 2 - left
    y = zone.top + pad - top
    drawn = Box(x + left - pad, y + top - pad, x + right + pad, y + bottom + pad)
    if panel is not None:
        draw.rounded_rectangle(
            (drawn.left, drawn.top, drawn.right - 1, drawn.bottom - 1), radius=max(1, pad), fill=panel
        )
        fill = text_colour_on(panel, accent)
    else:
        fill = accent or WHITE
    draw.multiline_text(
        (x, y),
        "\n".join(lines),
        font=font,
        fill=fill,
        spacing=spacing,
        align="center",
        stroke_width=stroke,
        stroke_fill=_STROKE_COLOUR if accent is None else legible_on(accent),
    )
    return drawn


def draw_ai_badge(
    image: Image.Image, placement: ad_pb2.Placement.ValueType, font_path: Path | None = None, brand: Brand | None = None
) -> Box:
    """Draws the visible "AI 생성" disclosure in the bottom-right corner of the safe zone: on a black plate, or on
    the brand's accent colour, with black or white text, whichever reads better on it."""
    plate = brand.accent_color if brand is not None and brand.accent_color is not None else BLACK
    zone = safe_zone_for(placement).box(*image.size)
    font = korean_font(max(12, image.width // 32), font_path)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = (round(v) for v in draw.textbbox((0, 0), AI_BADGE_TEXT, font=font))
    pad = max(4, (bottom - top) // 3)
    box = Box(zone.right - (right - left) - 2 * pad, zone.bottom - (bottom - top) - 2 * pad, zone.right, zone.bottom)
    draw.rounded_rectangle((box.left, box.top, box.right - 1, box.bottom - 1), radius=pad, fill=plate)
    draw.text((box.left + pad - left, box.top + pad - top), AI_BADGE_TEXT, font=font, fill=legible_on(plate))
    return box


def draw_logo(image: Image.Image, logo: Image.Image, placement: ad_pb2.Placement.ValueType) -> Box:
    """Composites the RGBA `logo` over the bottom-left corner of the safe zone (the badge has the right), scaled
    to fit LOGO_MAX_WIDTH × LOGO_MAX_HEIGHT of the image width with its aspect kept; returns its box."""
    zone = safe_zone_for(placement).box(*image.size)
    scale = min(image.width * LOGO_MAX_WIDTH / logo.width, image.width * LOGO_MAX_HEIGHT / logo.height)
    width, height = max(1, round(logo.width * scale)), max(1, round(logo.height * scale))
    # Pillow resizes RGBA premultiplied, so transparent pixels' colours never bleed into the edge.
    scaled = logo.resize((width, height), Image.Resampling.LANCZOS)
    box = Box(zone.left, zone.bottom - height, zone.left + width, zone.bottom)
    corner = image.crop((box.left, box.top, box.right, box.bottom)).convert("RGBA")
    image.paste(Image.alpha_composite(corner, scaled).convert(image.mode), (box.left, box.top))
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
