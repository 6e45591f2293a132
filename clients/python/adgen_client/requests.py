"""Builds AdService requests from plain Python values (names or enum values)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeAlias, TypedDict, TypeVar, Unpack, cast

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import ad_pb2, image_pb2

PLACEMENTS: dict[str, ad_pb2.Placement.ValueType] = {
    "feed-square": ad_pb2.PLACEMENT_FEED_SQUARE,
    "feed-portrait": ad_pb2.PLACEMENT_FEED_PORTRAIT,
    "story": ad_pb2.PLACEMENT_STORY,
}
TONES: dict[str, ad_pb2.Tone.ValueType] = {
    "friendly": ad_pb2.TONE_FRIENDLY,
    "emotional": ad_pb2.TONE_EMOTIONAL,
    "premium": ad_pb2.TONE_PREMIUM,
    "playful": ad_pb2.TONE_PLAYFUL,
    "informative": ad_pb2.TONE_INFORMATIVE,
}
FORMATS: dict[str, image_pb2.ImageFormat.ValueType] = {
    "png": image_pb2.IMAGE_FORMAT_PNG,
    "jpeg": image_pb2.IMAGE_FORMAT_JPEG,
    "webp": image_pb2.IMAGE_FORMAT_WEBP,
}
QUALITY_PREFERENCES: dict[str, ad_pb.QualityPreference.ValueType] = {
    "fast": ad_pb.QUALITY_PREFERENCE_FAST,
    "quality": ad_pb.QUALITY_PREFERENCE_QUALITY,
}
_E = TypeVar("_E", bound=int)

FILE_SUFFIXES: dict[image_pb2.ImageFormat.ValueType, str] = {
    image_pb2.IMAGE_FORMAT_PNG: "png",
    image_pb2.IMAGE_FORMAT_JPEG: "jpg",
    image_pb2.IMAGE_FORMAT_WEBP: "webp",
}

PlacementArg: TypeAlias = ad_pb2.Placement.ValueType | str | None
ToneArg: TypeAlias = ad_pb2.Tone.ValueType | str | None
FormatArg: TypeAlias = image_pb2.ImageFormat.ValueType | str | None
QualityArg: TypeAlias = ad_pb.QualityPreference.ValueType | str | None
PhotoArg: TypeAlias = bytes | str | Path


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
    facts: ad_pb2.MerchantFacts | None
    num_inference_steps: int | None
    request_id: str
    overlay_headline: bool
    ai_disclosure: bool
    quality: QualityArg


class EditAdOptions(TypedDict, total=False):
    """Optional EditAd fields; see `adgen.ad.v1.EditAdRequest` for their meaning."""

    model_id: str
    seed: int | None
    output_format: FormatArg
    num_inference_steps: int | None
    request_id: str
    ai_disclosure: bool


def create_ad_request(keyword: str, **options: Unpack[CreateAdOptions]) -> ad_pb.CreateAdRequest:
    """A CreateAdRequest; placement, tone, format and quality take names ("story", "premium", "webp",
    "fast") or enums. `request_id` doubles as an idempotency key: resending it returns the same ad."""
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
        facts=options.get("facts"),
        num_inference_steps=options.get("num_inference_steps"),
        request_id=options.get("request_id", ""),
        overlay_headline=options.get("overlay_headline", False),
        ai_disclosure=options.get("ai_disclosure", False),
        quality_preference=_pick(options.get("quality"), QUALITY_PREFERENCES, "quality preference"),
    )


def edit_ad_request(photo: PhotoArg, instruction: str, **options: Unpack[EditAdOptions]) -> ad_pb.EditAdRequest:
    """An EditAdRequest; `photo` is the encoded file's bytes or a path to it."""
    data = photo if isinstance(photo, bytes) else Path(photo).read_bytes()
    return ad_pb.EditAdRequest(
        image=image_pb2.Image(data=data),
        instruction=instruction,
        model_id=options.get("model_id", ""),
        seed=options.get("seed"),
        output_format=_pick(options.get("output_format"), FORMATS, "format"),
        num_inference_steps=options.get("num_inference_steps"),
        request_id=options.get("request_id", ""),
        ai_disclosure=options.get("ai_disclosure", False),
    )
