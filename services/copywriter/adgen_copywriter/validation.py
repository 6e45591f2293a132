"""CopywriterService request checks: proto request in, validated domain request out, or one INVALID_ARGUMENT."""

from __future__ import annotations

import unicodedata
from collections.abc import Container
from dataclasses import replace

import regex

from adgen.copywriter.v1 import copywriter_service_pb2 as pb
from adgen.type.v1 import ad_pb2, error_reason_pb2
from adgen_copywriter.domain import Brief, EditRequest, MerchantFacts
from adgen_copywriter.proto_mapping import CAPTION_LENGTHS, EMOJI_LEVELS, PLACEMENTS, TONES
from adgen_copywriter.rules import find_banned_claims, grapheme_count
from adgen_runtime.errors import BadField, invalid_fields
from adgen_runtime.text import control_character_violation
from adgen_wire.limits import MAX_VARIANTS

KEYWORD_MAX_GRAPHEMES = 100
EDIT_REQUEST_MAX_GRAPHEMES = 500
FACT_MAX_GRAPHEMES = 200
BRAND_NAME_MAX_GRAPHEMES = 50
MAX_EXTRA_FACTS = 10
_MODEL_ID = regex.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _clean(text: str) -> str:
    """One line of NFC text: tabs and line breaks fold into single spaces (every field here is one line)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _check_characters(field: str, text: str, violations: list[BadField]) -> None:
    # On the raw text: cleaning would fold some controls (U+001C to U+001F) into spaces unseen.
    violation = control_character_violation(field, text)
    if violation is not None:
        violations.append(violation)


def _check_enum(value: int, known: Container[int], field: str, violations: list[BadField]) -> None:
    if value not in known:
        violations.append(BadField(field, f"unknown value {value}"))


def _check_model_id(model_id: str, violations: list[BadField]) -> None:
    if model_id and not _MODEL_ID.fullmatch(model_id):
        violations.append(
            BadField("target_model_id", "must be a registry id: letters, digits, '.', '_', '-', at most 128")
        )


def brief_from_request(request: pb.GenerateCopyRequest) -> Brief:
    """The validated brief, or one INVALID_ARGUMENT naming every bad field."""
    violations: list[BadField] = []
    keyword = _clean(request.keyword)
    empty_keyword = not keyword
    if empty_keyword:
        violations.append(BadField("keyword", "must not be empty or blank"))
    elif grapheme_count(keyword) > KEYWORD_MAX_GRAPHEMES:
        violations.append(BadField("keyword", f"must be at most {KEYWORD_MAX_GRAPHEMES} characters"))
    _check_characters("keyword", request.keyword, violations)
    _check_enum(request.tone, TONES, "tone", violations)
    _check_enum(request.placement, PLACEMENTS, "placement", violations)
    _check_enum(request.caption_length, CAPTION_LENGTHS, "caption_length", violations)
    _check_enum(request.emoji_level, EMOJI_LEVELS, "emoji_level", violations)
    if not 0 <= request.variant_count <= MAX_VARIANTS:
        violations.append(BadField("variant_count", f"must be between 0 and {MAX_VARIANTS} (0 means 1)"))
    _check_model_id(request.target_model_id, violations)
    facts = _with_brand_name(_facts_from(request.facts, violations), request.brand_name, violations)
    if violations:
        raise invalid_fields(violations, error_reason_pb2.ERROR_REASON_EMPTY_KEYWORD if empty_keyword else None)
    return Brief(
        keyword=keyword,
        tone=TONES[request.tone],
        placement=PLACEMENTS[request.placement],
        target_model_id=request.target_model_id,
        facts=facts,
        caption_length=CAPTION_LENGTHS[request.caption_length],
        emoji_level=EMOJI_LEVELS[request.emoji_level],
        variant_count=request.variant_count or 1,
        product_photo=request.product_photo,
    )


def _facts_from(message: ad_pb2.MerchantFacts, violations: list[BadField]) -> MerchantFacts:
    """Merchant facts go into the copy verbatim, so each must be short and lawful on its own."""
    if len(message.extra) > MAX_EXTRA_FACTS:
        violations.append(BadField("facts.extra", f"at most {MAX_EXTRA_FACTS} facts"))
    named = {
        "facts.shop_name": message.shop_name,
        "facts.price": message.price,
        "facts.origin": message.origin,
        "facts.promotion": message.promotion,
        **{f"facts.extra[{i}]": extra for i, extra in enumerate(message.extra)},
    }
    for field, value in named.items():
        _check_characters(field, value, violations)
    cleaned = {field: _clean(value) for field, value in named.items()}
    for field, value in cleaned.items():
        if grapheme_count(value) > FACT_MAX_GRAPHEMES:
            violations.append(BadField(field, f"must be at most {FACT_MAX_GRAPHEMES} characters"))
        for claim in find_banned_claims(value, field):
            violations.append(BadField(field, f"'{claim.text}' cannot appear in a food ad: {claim.reason}"))
    return MerchantFacts(
        shop_name=cleaned["facts.shop_name"],
        price=cleaned["facts.price"],
        origin=cleaned["facts.origin"],
        promotion=cleaned["facts.promotion"],
        extra=tuple(v for f, v in cleaned.items() if f.startswith("facts.extra[") and v),
    )


def _with_brand_name(facts: MerchantFacts, brand_name: str, violations: list[BadField]) -> MerchantFacts:
    """The brand's name stands in for the shop's when the merchant gave no shop name: it is a fact they vouch
    for like the others, so the copy may state it and facts_used may list it."""
    _check_characters("brand_name", brand_name, violations)
    name = _clean(brand_name)
    if grapheme_count(name) > BRAND_NAME_MAX_GRAPHEMES:
        violations.append(BadField("brand_name", f"must be at most {BRAND_NAME_MAX_GRAPHEMES} characters"))
    for claim in find_banned_claims(name, "brand_name"):
        violations.append(BadField("brand_name", f"'{claim.text}' cannot appear in a food ad: {claim.reason}"))
    return facts if facts.shop_name or not name else replace(facts, shop_name=name)


def edit_request_from(request: pb.WriteEditInstructionRequest) -> EditRequest:
    """The validated edit request, or one INVALID_ARGUMENT naming every bad field."""
    violations: list[BadField] = []
    text = _clean(request.request)
    if not text:
        violations.append(BadField("request", "must not be empty or blank"))
    elif grapheme_count(text) > EDIT_REQUEST_MAX_GRAPHEMES:
        violations.append(BadField("request", f"must be at most {EDIT_REQUEST_MAX_GRAPHEMES} characters"))
    _check_characters("request", request.request, violations)
    _check_model_id(request.target_model_id, violations)
    if violations:
        raise invalid_fields(violations)
    return EditRequest(request=text, target_model_id=request.target_model_id)
