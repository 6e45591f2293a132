"""Builds AdService requests from plain Python values (names or enum values)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict, TypeVar, Unpack, cast

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import ad_pb2, image_pb2
from adgen_wire.formats import FILE_SUFFIXES as FILE_SUFFIXES  # re-exported for the CLI and web page

if TYPE_CHECKING:  # The stubs' generic wrapper; at runtime the wrappers are plain EnumTypeWrapper objects.
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

_EnumValue = TypeVar("_EnumValue", bound=int)


def _names(enum: _EnumTypeWrapper[_EnumValue], prefix: str) -> dict[str, _EnumValue]:
    """An enum's values by CLI-style name (PLACEMENT_FEED_SQUARE -> "feed-square"), UNSPECIFIED left out."""
    return {name.removeprefix(prefix).lower().replace("_", "-"): number for name, number in enum.items() if number}


PLACEMENTS = _names(ad_pb2.Placement, "PLACEMENT_")
TONES = _names(ad_pb2.Tone, "TONE_")
CAPTION_LENGTHS = _names(ad_pb2.CaptionLength, "CAPTION_LENGTH_")
EMOJI_LEVELS = _names(ad_pb2.EmojiLevel, "EMOJI_LEVEL_")
# File formats only: IMAGE_FORMAT_RAW_RGB is a hop between services, never what an ad is delivered as.
FORMATS = {
    name: value for name, value in _names(image_pb2.ImageFormat, "IMAGE_FORMAT_").items() if value in FILE_SUFFIXES
}
QUALITY_PREFERENCES = _names(ad_pb.QualityPreference, "QUALITY_PREFERENCE_")
_E = TypeVar("_E", bound=int)

PlacementArg: TypeAlias = ad_pb2.Placement.ValueType | str | None
ToneArg: TypeAlias = ad_pb2.Tone.ValueType | str | None
FormatArg: TypeAlias = image_pb2.ImageFormat.ValueType | str | None
QualityArg: TypeAlias = ad_pb.QualityPreference.ValueType | str | None
CaptionLengthArg: TypeAlias = ad_pb2.CaptionLength.ValueType | str | None
EmojiLevelArg: TypeAlias = ad_pb2.EmojiLevel.ValueType | str | None


@dataclass(frozen=True)
class Facts:
    """What the merchant states about the product; the copy may use these and never invents others.

    Args:
        shop_name: e.g. "하루카페".
        price: as the merchant writes it, e.g. "5,500원".
        origin: e.g. "국내산 딸기".
        promotion: e.g. "1+1 이벤트".
        extra: any other facts, one sentence each.
    """

    shop_name: str = ""
    price: str = ""
    origin: str = ""
    promotion: str = ""
    extra: Sequence[str] = field(default_factory=tuple)


FactsArg: TypeAlias = Facts | Mapping[str, str | Sequence[str]] | ad_pb2.MerchantFacts | None
FACT_NAMES = ("shop_name", "price", "origin", "promotion", "extra")
PhotoArg: TypeAlias = bytes | str | Path


@dataclass(frozen=True)
class Brand:
    """The merchant's brand, sent with each request (the server stores no brands).

    Args:
        name: e.g. "하루카페"; the copy names the shop with it when facts.shop_name is empty.
        logo: a PNG with an alpha channel (bytes or a path), drawn in a corner of the safe zone.
        primary_color: "#RRGGBB", the headline's panel.
        accent_color: "#RRGGBB", the headline's text and the AI badge.
        headline_font: one of the server's fonts, e.g. "pretendard-bold" (empty: the default).
    """

    name: str = ""
    logo: PhotoArg | None = None
    primary_color: str = ""
    accent_color: str = ""
    headline_font: str = ""


BrandArg: TypeAlias = Brand | ad_pb2.BrandKit | None


def _pick(value: _E | str | None, names: Mapping[str, _E], what: str) -> _E:
    """An enum value from its name or itself; None is the enum's zero (the server's default)."""
    if value is None:
        return cast(_E, 0)
    if isinstance(value, str):
        try:
            return names[value.lower()]
        except KeyError:
            raise ValueError(f"unknown {what} {value!r}; choose from {', '.join(names)}") from None
    return value


class CreateAdOptions(TypedDict, total=False):
    """Optional CreateAd fields; see `adgen.ad.v1.CreateAdRequest` for their meaning."""

    placement: PlacementArg
    tone: ToneArg
    variant_count: int
    seed: int | None
    model_id: str
    width: int
    height: int
    output_format: FormatArg
    facts: FactsArg
    caption_length: CaptionLengthArg
    emoji_level: EmojiLevelArg
    num_inference_steps: int | None
    request_id: str
    overlay_headline: bool
    ai_disclosure: bool
    quality: QualityArg
    product_photos: Sequence[PhotoArg]
    placements: Sequence[PlacementArg]
    brand: BrandArg


class EditAdOptions(TypedDict, total=False):
    """Optional EditAd fields; see `adgen.ad.v1.EditAdRequest` for their meaning."""

    model_id: str
    seed: int | None
    output_format: FormatArg
    num_inference_steps: int | None
    request_id: str
    ai_disclosure: bool


def check_options(options: Mapping[str, object], allowed: type[Any], where: str) -> None:
    """Raises TypeError for a keyword argument `allowed` (a TypedDict) does not have, naming the nearest
    valid one, so a typo such as `variants=3` fails instead of being dropped."""
    known: frozenset[str] = allowed.__optional_keys__ | allowed.__required_keys__
    for name in options:
        if name not in known:
            nearest = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.5)
            hint = f"; did you mean {nearest[0]!r}?" if nearest else f"; valid: {', '.join(sorted(known))}"
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}{hint}")


def merchant_facts(facts: FactsArg) -> ad_pb2.MerchantFacts | None:
    """`facts` as the protobuf message: a `Facts`, a mapping with the same keys, or the message itself."""
    if facts is None or isinstance(facts, ad_pb2.MerchantFacts):
        return facts
    if isinstance(facts, Facts):
        facts = {name: getattr(facts, name) for name in FACT_NAMES}
    for name in facts:
        if name not in FACT_NAMES:
            nearest = difflib.get_close_matches(name, FACT_NAMES, n=1, cutoff=0.5)
            hint = f"; did you mean {nearest[0]!r}?" if nearest else f"; valid: {', '.join(FACT_NAMES)}"
            raise TypeError(f"unknown fact {name!r}{hint}")
    extra = facts.get("extra", ())
    text = {name: str(facts.get(name, "")) for name in FACT_NAMES[:-1]}
    return ad_pb2.MerchantFacts(**text, extra=[extra] if isinstance(extra, str) else list(extra))


def photo_bytes(photo: PhotoArg) -> bytes:
    """An encoded photo's bytes: given as bytes, or read from a path."""
    return photo if isinstance(photo, bytes) else Path(photo).read_bytes()


def brand_kit(brand: BrandArg) -> ad_pb2.BrandKit | None:
    """`brand` as the protobuf message; a `Brand`'s logo path is read here."""
    if brand is None or isinstance(brand, ad_pb2.BrandKit):
        return brand
    logo = image_pb2.Image(data=photo_bytes(brand.logo)) if brand.logo is not None else None
    return ad_pb2.BrandKit(
        name=brand.name,
        logo=logo,
        primary_color=brand.primary_color,
        accent_color=brand.accent_color,
        headline_font=brand.headline_font,
    )


def create_ad_request(keyword: str, **options: Unpack[CreateAdOptions]) -> ad_pb.CreateAdRequest:
    """A CreateAdRequest from plain values.

    Args:
        keyword: the Korean product keyword.
        **options: the `CreateAdOptions` fields. placement, tone, output_format, quality, caption_length
            and emoji_level take names ("story", "premium", "webp", "fast", "short", "none") or enum
            values; facts takes a `Facts`, a mapping or `MerchantFacts`. `request_id` doubles as an
            idempotency key: resending it returns the same ad. product_photos takes 1 to 3 photos (bytes
            or paths; a PNG or WebP with a transparent background is composited pixel for pixel);
            placements takes several placements ("feed-square", "feed-portrait", "story"), each variant
            then comes once per placement; brand takes a `Brand` or `BrandKit`.

    Returns:
        The request, with unset options left to the server's defaults.

    Raises:
        TypeError: an unknown option (or fact) name.
        ValueError: an unknown enum name.
        OSError: a product photo or logo path that cannot be read.
    """
    check_options(options, CreateAdOptions, "create_ad")
    if isinstance(options.get("product_photos"), bytes | str | Path):
        raise TypeError('product_photos takes a list of photos, e.g. product_photos=["juice.png"]')
    if isinstance(options.get("placements"), str):
        raise TypeError('placements takes a list, e.g. placements=["feed-square", "story"]')
    return ad_pb.CreateAdRequest(
        keyword=keyword,
        tone=_pick(options.get("tone"), TONES, "tone"),
        placement=_pick(options.get("placement"), PLACEMENTS, "placement"),
        variant_count=options.get("variant_count", 0),
        seed=options.get("seed"),
        model_id=options.get("model_id", ""),
        width=options.get("width", 0),
        height=options.get("height", 0),
        output_format=_pick(options.get("output_format"), FORMATS, "format"),
        facts=merchant_facts(options.get("facts")),
        caption_length=_pick(options.get("caption_length"), CAPTION_LENGTHS, "caption length"),
        emoji_level=_pick(options.get("emoji_level"), EMOJI_LEVELS, "emoji level"),
        num_inference_steps=options.get("num_inference_steps"),
        request_id=options.get("request_id", ""),
        overlay_headline=options.get("overlay_headline", False),
        ai_disclosure=options.get("ai_disclosure", False),
        quality_preference=_pick(options.get("quality"), QUALITY_PREFERENCES, "quality preference"),
        product_photos=[image_pb2.Image(data=photo_bytes(photo)) for photo in options.get("product_photos", ())],
        placements=[_pick(placement, PLACEMENTS, "placement") for placement in options.get("placements", ())],
        brand=brand_kit(options.get("brand")),
    )


def edit_ad_request(photo: PhotoArg, instruction: str, **options: Unpack[EditAdOptions]) -> ad_pb.EditAdRequest:
    """An EditAdRequest from plain values.

    Args:
        photo: the encoded file's bytes, or a path to it.
        instruction: what to change, in Korean or English.
        **options: the `EditAdOptions` fields; output_format takes a name ("webp") or an enum value.

    Returns:
        The request, with unset options left to the server's defaults.

    Raises:
        TypeError: an unknown option name.
        ValueError: an unknown format name.
        OSError: `photo` is a path that cannot be read.
    """
    check_options(options, EditAdOptions, "edit_ad")
    return ad_pb.EditAdRequest(
        image=image_pb2.Image(data=photo_bytes(photo)),
        instruction=instruction,
        model_id=options.get("model_id", ""),
        seed=options.get("seed"),
        output_format=_pick(options.get("output_format"), FORMATS, "format"),
        num_inference_steps=options.get("num_inference_steps"),
        request_id=options.get("request_id", ""),
        ai_disclosure=options.get("ai_disclosure", False),
    )
