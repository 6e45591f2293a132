"""CopywriterService over gRPC: validate, call the engine, map domain ↔ proto and errors."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Container

import regex

from adgen.copywriter.v1 import copywriter_service_pb2 as pb
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as pb_grpc
from adgen.type.v1 import ad_pb2, error_reason_pb2
from adgen_copywriter.domain import (
    BackendKind,
    BannedClaimError,
    Brief,
    CaptionLength,
    CopyError,
    EditRequest,
    EmojiLevel,
    LlmBadOutputError,
    LlmMisconfiguredError,
    LlmRefusedError,
    LlmUnavailableError,
    MerchantFacts,
    Placement,
    Provenance,
    Tone,
)
from adgen_copywriter.engine import CopyEngine
from adgen_copywriter.rules import find_banned_claims, grapheme_count
from adgen_runtime import Context
from adgen_runtime.errors import (
    BadField,
    FailedPrecondition,
    Internal,
    ServiceError,
    Unavailable,
    invalid_fields,
)
from adgen_runtime.text import control_character_violation

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = "adgen.copywriter.v1.CopywriterService"
KEYWORD_MAX_GRAPHEMES = 100
EDIT_REQUEST_MAX_GRAPHEMES = 500
FACT_MAX_GRAPHEMES = 200
MAX_EXTRA_FACTS = 10
MAX_VARIANTS = 4
_MODEL_ID = regex.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

_TONES = {
    ad_pb2.TONE_UNSPECIFIED: Tone.FRIENDLY,
    ad_pb2.TONE_FRIENDLY: Tone.FRIENDLY,
    ad_pb2.TONE_EMOTIONAL: Tone.EMOTIONAL,
    ad_pb2.TONE_PREMIUM: Tone.PREMIUM,
    ad_pb2.TONE_PLAYFUL: Tone.PLAYFUL,
    ad_pb2.TONE_INFORMATIVE: Tone.INFORMATIVE,
}
_PLACEMENTS = {
    ad_pb2.PLACEMENT_UNSPECIFIED: Placement.FEED_SQUARE,
    ad_pb2.PLACEMENT_FEED_SQUARE: Placement.FEED_SQUARE,
    ad_pb2.PLACEMENT_FEED_PORTRAIT: Placement.FEED_PORTRAIT,
    ad_pb2.PLACEMENT_STORY: Placement.STORY,
}
_LENGTHS = {
    ad_pb2.CAPTION_LENGTH_UNSPECIFIED: CaptionLength.MEDIUM,
    ad_pb2.CAPTION_LENGTH_SHORT: CaptionLength.SHORT,
    ad_pb2.CAPTION_LENGTH_MEDIUM: CaptionLength.MEDIUM,
    ad_pb2.CAPTION_LENGTH_LONG: CaptionLength.LONG,
}
_EMOJI = {
    ad_pb2.EMOJI_LEVEL_UNSPECIFIED: EmojiLevel.LIGHT,
    ad_pb2.EMOJI_LEVEL_NONE: EmojiLevel.NONE,
    ad_pb2.EMOJI_LEVEL_LIGHT: EmojiLevel.LIGHT,
    ad_pb2.EMOJI_LEVEL_RICH: EmojiLevel.RICH,
}
_BACKENDS = {BackendKind.TEMPLATE: pb.BACKEND_TEMPLATE, BackendKind.LLM: pb.BACKEND_LLM}


class CopywriterServicer(pb_grpc.CopywriterServiceServicer):
    """Thin adapter over `CopyEngine`."""

    def __init__(self, engine: CopyEngine) -> None:
        self.engine = engine

    async def GenerateCopy(self, request: pb.GenerateCopyRequest, context: Context) -> pb.GenerateCopyResponse:
        brief = brief_from_request(request)
        try:
            draft = await self.engine.generate_copy(brief)
        except CopyError as error:
            raise status_error(error) from error
        return pb.GenerateCopyResponse(
            image_prompts=draft.image_prompts,
            caption=draft.caption,
            hook=draft.hook,
            hashtags=draft.hashtags,
            headline=draft.headline,
            alt_text=draft.alt_text,
            facts_used=draft.facts_used,
            provenance=provenance_message(draft.provenance),
        )

    async def WriteEditInstruction(
        self, request: pb.WriteEditInstructionRequest, context: Context
    ) -> pb.WriteEditInstructionResponse:
        edit = edit_request_from(request)
        try:
            written = await self.engine.write_edit_instruction(edit)
        except CopyError as error:
            raise status_error(error) from error
        return pb.WriteEditInstructionResponse(
            instruction=written.instruction, provenance=provenance_message(written.provenance)
        )


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
    _check_enum(request.tone, _TONES, "tone", violations)
    _check_enum(request.placement, _PLACEMENTS, "placement", violations)
    _check_enum(request.caption_length, _LENGTHS, "caption_length", violations)
    _check_enum(request.emoji_level, _EMOJI, "emoji_level", violations)
    if not 0 <= request.variant_count <= MAX_VARIANTS:
        violations.append(BadField("variant_count", f"must be between 0 and {MAX_VARIANTS} (0 means 1)"))
    _check_model_id(request.target_model_id, violations)
    facts = _facts_from(request.facts, violations)
    if violations:
        raise invalid_fields(violations, error_reason_pb2.ERROR_REASON_EMPTY_KEYWORD if empty_keyword else None)
    return Brief(
        keyword=keyword,
        tone=_TONES[request.tone],
        placement=_PLACEMENTS[request.placement],
        target_model_id=request.target_model_id,
        facts=facts,
        caption_length=_LENGTHS[request.caption_length],
        emoji_level=_EMOJI[request.emoji_level],
        variant_count=request.variant_count or 1,
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


def provenance_message(provenance: Provenance) -> pb.CopyProvenance:
    """Who wrote it and what it cost, for the response."""
    return pb.CopyProvenance(
        backend=_BACKENDS[provenance.backend],
        model=provenance.model,
        prompt_tokens=provenance.prompt_tokens,
        completion_tokens=provenance.completion_tokens,
    )


def status_error(error: CopyError) -> ServiceError:
    """The status a caller gets for each expected failure; messages were written for callers."""
    reasons = error_reason_pb2
    if isinstance(error, BannedClaimError):
        terms = ", ".join(dict.fromkeys(v.text for v in error.violations))
        return FailedPrecondition(reasons.ERROR_REASON_BANNED_CLAIM, error.message, metadata={"terms": terms})
    if isinstance(error, LlmRefusedError):
        return FailedPrecondition(reasons.ERROR_REASON_LLM_REFUSED, error.message)
    if isinstance(error, LlmMisconfiguredError):
        # Not UNAVAILABLE: a retry cannot fix a refused key, so callers must not be told to retry.
        return FailedPrecondition(reasons.ERROR_REASON_LLM_MISCONFIGURED, error.message)
    if isinstance(error, LlmUnavailableError):
        return Unavailable(reasons.ERROR_REASON_LLM_UNAVAILABLE, error.message, retry_after_s=error.retry_after_s)
    if isinstance(error, LlmBadOutputError):
        return Internal(reasons.ERROR_REASON_LLM_BAD_OUTPUT, error.message)
    _LOGGER.error("unmapped copy error %s", type(error).__name__)
    return Internal(reasons.ERROR_REASON_INTERNAL, "The copywriter failed unexpectedly.")
