"""Checks AdService requests and turns them into complete, validated job specs."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import ad_pb2, error_reason_pb2, image_pb2
from adgen_orchestrator.brand import Brand, read_brand
from adgen_orchestrator.imaging import Photo, read_photo
from adgen_orchestrator.placements import PlacementTarget, placement_targets
from adgen_orchestrator.product_scene import ProductPhoto, read_product_photos
from adgen_orchestrator.sizing import MAX_DELIVERED_SIDE, MIN_DELIVERED_SIDE, Size, placement_size
from adgen_runtime.errors import BadField, Reason, invalid_fields
from adgen_runtime.logs import REQUEST_ID_RULE, is_request_id
from adgen_runtime.photos import InvalidImageError
from adgen_runtime.settings import PhotoLimitSettings
from adgen_runtime.text import control_character_violation
from adgen_wire.formats import PILLOW_FORMATS
from adgen_wire.limits import MAX_VARIANTS

MAX_SEED = 2**32 - 1  # Random seeds stay small so seed + i never wraps.
_INVALID = error_reason_pb2.ERROR_REASON_INVALID_ARGUMENT
# Unspecified output_format: JPEG q95 4:2:0 (provenance.JPEG_OPTIONS), the fastest to encode, about a tenth of
# PNG's bytes, and what Instagram recompresses every upload to anyway (bench/image_encode.py has the figures).
DEFAULT_OUTPUT_FORMAT = image_pb2.IMAGE_FORMAT_JPEG
# Unspecified, for an ad with a cut-out product photo: lossless, so the product's pixels stay the merchant's.
PRODUCT_OUTPUT_FORMAT = image_pb2.IMAGE_FORMAT_PNG
_R = error_reason_pb2


@dataclass(frozen=True)
class CreateAdSpec:
    """A validated CreateAd request with every default filled in."""

    keyword: str
    tone: ad_pb2.Tone.ValueType
    placement: ad_pb2.Placement.ValueType
    variant_count: int
    seed: int
    model_id: str
    size: Size
    output_format: image_pb2.ImageFormat.ValueType
    facts: ad_pb2.MerchantFacts
    caption_length: ad_pb2.CaptionLength.ValueType
    emoji_level: ad_pb2.EmojiLevel.ValueType
    num_inference_steps: int | None
    request_id: str
    overlay_headline: bool = False
    ai_disclosure: bool = False
    # The request's brand kit (issue #16): its name for the copy, its logo, colours and font for the overlay.
    brand: Brand | None = None
    # Issue #16: every placement delivered (`placement` at `size` unless `placements` was set), the merchant's
    # product photos, and the edit model that draws around opaque ones.
    targets: tuple[PlacementTarget, ...] = ()
    products: tuple[ProductPhoto, ...] = ()
    edit_model_id: str = ""

    def variant_seed(self, index: int) -> int:
        return (self.seed + index) % 2**64

    @property
    def placement_targets(self) -> tuple[PlacementTarget, ...]:
        """The placements each variant is delivered at, in the caller's order."""
        return self.targets or (PlacementTarget(self.placement, self.size),)

    def delivered_sizes(self) -> list[Size]:
        """The size of every image the ad delivers, one per variant and placement."""
        return [target.size for _ in range(self.variant_count) for target in self.placement_targets]


@dataclass(frozen=True)
class EditAdSpec:
    """A validated EditAd request, with the photo decoded and upright."""

    photo: Photo
    instruction: str
    model_id: str
    seed: int | None
    output_format: image_pb2.ImageFormat.ValueType
    num_inference_steps: int | None
    request_id: str
    ai_disclosure: bool = False


class _Violations:
    """Collects every bad field so one error names them all; the first reason wins."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.items: list[tuple[BadField, Reason]] = []

    def add(self, field: str, description: str, reason: Reason = _R.ERROR_REASON_INVALID_ARGUMENT) -> None:
        name = _R.ErrorReason.Name(reason).removeprefix("ERROR_REASON_")
        self.items.append((BadField(self.prefix + field, description, name), reason))

    def add_violation(self, violation: BadField | None) -> None:
        if violation is not None:
            self.add(violation.field, violation.description)

    def raise_if_any(self) -> None:
        if self.items:
            raise invalid_fields([v for v, _ in self.items], self.items[0][1])


# The photo limits' defaults, for callers of parse_create_request without settings.
_DEFAULT_PHOTO_BYTES: int = PhotoLimitSettings.model_fields["max_input_bytes"].default
_DEFAULT_PHOTO_PIXELS: int = PhotoLimitSettings.model_fields["max_input_pixels"].default


def parse_create_request(
    request: ad_pb.CreateAdRequest,
    *,
    default_model_id: str,
    request_id: str,
    field_prefix: str = "",
    preferred_models: Mapping[ad_pb.QualityPreference.ValueType, str] | None = None,
    default_edit_model_id: str = "",
    max_input_bytes: int = _DEFAULT_PHOTO_BYTES,
    max_input_pixels: int = _DEFAULT_PHOTO_PIXELS,
) -> CreateAdSpec:
    """Validates a CreateAd request; raises one INVALID_ARGUMENT naming every bad field. Blocking when it carries
    photos (product photos and a brand logo are decoded): run it off the event loop.

    The model is the explicit `model_id`, else the one `preferred_models` maps the quality
    preference to, else `default_model_id`.
    """
    bad = _Violations(field_prefix)
    keyword = request.keyword.strip()
    if not keyword:
        bad.add("keyword", "must not be empty", _R.ERROR_REASON_EMPTY_KEYWORD)
    _check_texts(bad, {"keyword": keyword, "model_id": request.model_id, **_fact_texts(request.facts)})
    _check_request_id(bad, request.request_id)
    size = _delivered_size(request, bad)
    targets, placement_problems = placement_targets(request, size)
    for field, description in placement_problems:
        bad.add(field, description)
    products, photo_problems = read_product_photos(
        request.product_photos, max_bytes=max_input_bytes, max_pixels=max_input_pixels
    )
    for field, description in photo_problems:
        bad.add(field, description, _R.ERROR_REASON_INVALID_IMAGE if field.endswith(".data") else _INVALID)
    if not 0 <= request.variant_count <= MAX_VARIANTS:
        bad.add("variant_count", f"must be between 1 and {MAX_VARIANTS} (0 means 1)")
    _check_enum(bad, "tone", request.tone, ad_pb2.Tone)
    _check_enum(bad, "placement", request.placement, ad_pb2.Placement)
    _check_enum(bad, "caption_length", request.caption_length, ad_pb2.CaptionLength)
    _check_enum(bad, "emoji_level", request.emoji_level, ad_pb2.EmojiLevel)
    _check_enum(bad, "quality_preference", request.quality_preference, ad_pb.QualityPreference)
    _check_output_format(bad, request.output_format)
    steps = _steps(request, bad)
    brand = read_brand(request.brand, bad.add) if request.HasField("brand") else None  # Decodes the logo.
    bad.raise_if_any()
    assert targets  # Only empty when a size or placement violation was raised above.
    return CreateAdSpec(
        keyword=keyword,
        tone=request.tone or ad_pb2.TONE_FRIENDLY,
        # The first placement delivered: the copywriter writes for its aspect.
        placement=targets[0].placement,
        variant_count=request.variant_count or 1,
        seed=request.seed if request.HasField("seed") else random.randint(0, MAX_SEED),
        model_id=request.model_id or (preferred_models or {}).get(request.quality_preference) or default_model_id,
        size=targets[0].size,
        output_format=request.output_format
        or (PRODUCT_OUTPUT_FORMAT if any(product.cut_out for product in products) else DEFAULT_OUTPUT_FORMAT),
        facts=request.facts,
        caption_length=request.caption_length,
        emoji_level=request.emoji_level,
        num_inference_steps=steps,
        request_id=request.request_id or request_id,
        overlay_headline=request.overlay_headline,
        ai_disclosure=request.ai_disclosure,
        brand=brand,
        targets=tuple(targets),
        products=tuple(products),
        edit_model_id=default_edit_model_id,
    )


def parse_edit_request(
    request: ad_pb.EditAdRequest,
    *,
    default_model_id: str,
    request_id: str,
    max_input_bytes: int,
    max_input_pixels: int,
    field_prefix: str = "",
) -> EditAdSpec:
    """Validates an EditAd request and decodes its photo (blocking: run it off the event loop)."""
    bad = _Violations(field_prefix)
    photo = None
    try:
        photo = read_photo(request.image.data, max_bytes=max_input_bytes, max_pixels=max_input_pixels)
    except InvalidImageError as rejected:
        bad.add("image.data", str(rejected), _R.ERROR_REASON_INVALID_IMAGE)
    instruction = request.instruction.strip()
    if not instruction:
        bad.add("instruction", "must not be empty")
    _check_texts(bad, {"instruction": instruction, "model_id": request.model_id})
    _check_request_id(bad, request.request_id)
    _check_output_format(bad, request.output_format)
    steps = _steps(request, bad)
    bad.raise_if_any()
    assert photo is not None
    return EditAdSpec(
        photo=photo,
        instruction=instruction,
        model_id=request.model_id or default_model_id,
        seed=request.seed if request.HasField("seed") else None,
        output_format=request.output_format or DEFAULT_OUTPUT_FORMAT,
        num_inference_steps=steps,
        request_id=request.request_id or request_id,
        ai_disclosure=request.ai_disclosure,
    )


def _check_texts(bad: _Violations, texts: Mapping[str, str]) -> None:
    for field, text in texts.items():
        bad.add_violation(control_character_violation(field, text))


def _fact_texts(facts: ad_pb2.MerchantFacts) -> dict[str, str]:
    return {
        "facts.shop_name": facts.shop_name,
        "facts.price": facts.price,
        "facts.origin": facts.origin,
        "facts.promotion": facts.promotion,
        **{f"facts.extra[{i}]": extra for i, extra in enumerate(facts.extra)},
    }


def _check_request_id(bad: _Violations, request_id: str) -> None:
    # It travels downstream as metadata and is the key of the call's log lines: the x-request-id rule.
    if request_id and not is_request_id(request_id):
        bad.add("request_id", REQUEST_ID_RULE)


def _delivered_size(request: ad_pb.CreateAdRequest, bad: _Violations) -> Size | None:
    """The explicit width × height when both are set, else the placement's size."""
    if request.width == 0 and request.height == 0:
        return placement_size(request.placement) if request.placement in _valid(ad_pb2.Placement) else None
    before = len(bad.items)
    for field, value in (("width", request.width), ("height", request.height)):
        if value == 0:
            bad.add(field, "must be set together with the other side", _R.ERROR_REASON_INVALID_SIZE)
        elif not MIN_DELIVERED_SIDE <= value <= MAX_DELIVERED_SIDE:
            bad.add(
                field,
                f"must be between {MIN_DELIVERED_SIDE} and {MAX_DELIVERED_SIDE} pixels",
                _R.ERROR_REASON_INVALID_SIZE,
            )
    return Size(request.width, request.height) if len(bad.items) == before else None


def _steps(request: ad_pb.CreateAdRequest | ad_pb.EditAdRequest, bad: _Violations) -> int | None:
    if not request.HasField("num_inference_steps"):
        return None
    if request.num_inference_steps < 1:
        bad.add("num_inference_steps", "must be at least 1 when set")
    return request.num_inference_steps


def _check_output_format(bad: _Violations, value: int) -> None:
    if value != image_pb2.IMAGE_FORMAT_UNSPECIFIED and value not in PILLOW_FORMATS:
        bad.add("output_format", "must be PNG, JPEG or WebP (RAW_RGB travels only between services)")


class _EnumType(Protocol):
    """The part of a generated enum wrapper these checks use."""

    def values(self) -> list[Any]: ...


def _valid(enum_type: _EnumType) -> set[int]:
    return {int(value) for value in enum_type.values()}


def _check_enum(bad: _Violations, field: str, value: int, enum_type: _EnumType) -> None:
    if value not in _valid(enum_type):
        bad.add(field, f"unknown value {value}")
