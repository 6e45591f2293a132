"""A merchant's brand kit, checked and decoded: name, logo, colours and headline font for one request.

The kit travels with every CreateAd call and is never stored: the caller's backend owns its merchants, and any
orchestrator replica can serve any call.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import Protocol

from PIL import Image, UnidentifiedImageError

from adgen.type.v1 import ad_pb2, error_reason_pb2
from adgen_runtime.errors import Reason
from adgen_runtime.text import control_character_violation

# Rgb is one colour: red, green, blue in 0-255.
Rgb = tuple[int, int, int]

BRAND_NAME_MAX_CHARACTERS = 50
LOGO_MAX_BYTES = 1024 * 1024
# A logo is drawn at a fifth of the image width at most; more pixels than this only cost decoding time.
LOGO_MAX_SIDE = 4096
LOGO_MIN_SIDE = 16
# Wordmarks are wide, but past this the logo would be a hairline when scaled to fit its corner.
LOGO_MAX_ASPECT = 10.0
# Headline fonts a kit may name: the Pretendard weights the checkout's npm install and the Docker image ship.
HEADLINE_FONT_FILES = {
    "pretendard-bold": "Pretendard-Bold.otf",
    "pretendard-black": "Pretendard-Black.otf",
    "pretendard-extrabold": "Pretendard-ExtraBold.otf",
    "pretendard-semibold": "Pretendard-SemiBold.otf",
    "pretendard-medium": "Pretendard-Medium.otf",
}
DEFAULT_HEADLINE_FONT = "pretendard-bold"
_R = error_reason_pb2
_HEX_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")


@dataclass(frozen=True, eq=False)
class Brand:
    """A validated brand kit; an unset colour or logo leaves that part of the overlay as it is without a brand."""

    name: str = ""
    logo: Image.Image | None = None  # RGBA, decoded once per request.
    primary_color: Rgb | None = None
    accent_color: Rgb | None = None
    # An id of HEADLINE_FONT_FILES; "" keeps the server's overlay font (ADGEN_ORCHESTRATOR_OVERLAY_FONT_PATH).
    headline_font: str = ""


class ReportViolation(Protocol):
    """Where read_brand reports a bad field (validation's collector of every violation)."""

    def __call__(self, field: str, description: str, reason: Reason) -> None: ...


def read_brand(kit: ad_pb2.BrandKit, report: ReportViolation, field: str = "brand") -> Brand:
    """The kit as a Brand; each bad field goes to `report`, and the Brand is only meaningful when none did.
    Decoding the logo is blocking Pillow work: run it off the event loop."""

    def bad(name: str, description: str, *, image: bool = False) -> None:
        report(
            f"{field}.{name}", description, _R.ERROR_REASON_INVALID_IMAGE if image else _R.ERROR_REASON_INVALID_ARGUMENT
        )

    name = " ".join(kit.name.split())
    control = control_character_violation("name", kit.name)
    if control is not None:
        bad("name", control.description)
    if len(name) > BRAND_NAME_MAX_CHARACTERS:
        bad("name", f"must be at most {BRAND_NAME_MAX_CHARACTERS} characters")
    colours: dict[str, Rgb | None] = {}
    for colour_field in ("primary_color", "accent_color"):
        text = getattr(kit, colour_field)
        colours[colour_field] = parse_colour(text)
        if text and colours[colour_field] is None:
            bad(colour_field, f'must be a colour as "#RRGGBB", e.g. "#FF6B81"; got {text[:20]!r}')
    font = kit.headline_font.strip().lower()
    if font and font not in HEADLINE_FONT_FILES:
        bad("headline_font", f"must be one of {', '.join(HEADLINE_FONT_FILES)}")
    logo = None
    if kit.HasField("logo") and kit.logo.data:
        try:
            logo = decode_logo(kit.logo.data)
        except InvalidLogoError as error:
            bad("logo", str(error), image=True)
    return Brand(name, logo, colours["primary_color"], colours["accent_color"], font)


def parse_colour(text: str) -> Rgb | None:
    """The colour of "#RRGGBB", or None for anything else (including "")."""
    if not _HEX_COLOUR.fullmatch(text):
        return None
    value = int(text[1:], 16)
    return (value >> 16, (value >> 8) & 0xFF, value & 0xFF)


class InvalidLogoError(ValueError):
    """A logo we cannot draw; the message follows the field name and is written for callers."""


def decode_logo(data: bytes) -> Image.Image:
    """The logo as RGBA, decoded fully; InvalidLogoError unless it is a PNG with transparency within the limits."""
    if len(data) > LOGO_MAX_BYTES:
        raise InvalidLogoError(f"is {len(data)} bytes, larger than the limit of 1 MiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format != "PNG":
                raise InvalidLogoError(f"must be a PNG with an alpha channel; {image.format} is not accepted")
            _check_logo_size(image.width, image.height)
            image.load()
    except InvalidLogoError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidLogoError("has too many pixels to decode safely") from None
    except UnidentifiedImageError:
        raise InvalidLogoError("is not a decodable PNG image") from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise InvalidLogoError("is truncated or corrupt") from None
    # An opaque logo would paint a box over the ad; a palette PNG with a tRNS chunk has transparency too.
    if not image.has_transparency_data:
        raise InvalidLogoError("must be a PNG with an alpha channel (transparency); this one is opaque")
    return image.convert("RGBA")


def _check_logo_size(width: int, height: int) -> None:
    if max(width, height) > LOGO_MAX_SIDE or min(width, height) < LOGO_MIN_SIDE:
        raise InvalidLogoError(
            f"is {width}x{height}; each side must be between {LOGO_MIN_SIDE} and {LOGO_MAX_SIDE} pixels"
        )
    if max(width, height) / min(width, height) > LOGO_MAX_ASPECT:
        raise InvalidLogoError(f"is {width}x{height}; its aspect ratio must be at most {LOGO_MAX_ASPECT:g}:1")


# ── colour contrast (WCAG 2.x) ────────────────────────────────────────────────────────────────

# WCAG AA for body text: a feed shows a 1080 px post at about a third of its size, so headline text is read small.
MIN_TEXT_CONTRAST = 4.5
BLACK: Rgb = (0, 0, 0)
WHITE: Rgb = (255, 255, 255)


def relative_luminance(colour: Rgb) -> float:
    def linear(channel: int) -> float:
        value = channel / 255
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    red, green, blue = (linear(channel) for channel in colour)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast_ratio(first: Rgb, second: Rgb) -> float:
    """WCAG contrast ratio, 1 (same luminance) to 21 (black on white)."""
    lighter, darker = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def legible_on(background: Rgb) -> Rgb:
    """Black or white, whichever reads better on `background`."""
    return BLACK if contrast_ratio(BLACK, background) >= contrast_ratio(WHITE, background) else WHITE


def text_colour_on(background: Rgb, wanted: Rgb | None) -> Rgb:
    """`wanted` when it reads on `background` (MIN_TEXT_CONTRAST), else black or white, whichever reads better."""
    if wanted is not None and contrast_ratio(wanted, background) >= MIN_TEXT_CONTRAST:
        return wanted
    return legible_on(background)
