"""CopywriterService domain ↔ proto: enum tables, the provenance message and the status of each CopyError."""

from __future__ import annotations

import logging

from adgen.copywriter.v1 import copywriter_service_pb2 as pb
from adgen.type.v1 import ad_pb2, error_reason_pb2
from adgen_copywriter.domain import (
    AdCopyDraft,
    BackendKind,
    BannedClaimError,
    CaptionLength,
    CopyError,
    EditInstruction,
    EmojiLevel,
    LlmBadOutputError,
    LlmMisconfiguredError,
    LlmRefusedError,
    LlmUnavailableError,
    Placement,
    Provenance,
    Tone,
)
from adgen_runtime.errors import FailedPrecondition, Internal, ServiceError, Unavailable

_LOGGER = logging.getLogger(__name__)

# Domain enums are not proto enums: UNSPECIFIED maps to the documented default.
TONES = {
    ad_pb2.TONE_UNSPECIFIED: Tone.FRIENDLY,
    ad_pb2.TONE_FRIENDLY: Tone.FRIENDLY,
    ad_pb2.TONE_EMOTIONAL: Tone.EMOTIONAL,
    ad_pb2.TONE_PREMIUM: Tone.PREMIUM,
    ad_pb2.TONE_PLAYFUL: Tone.PLAYFUL,
    ad_pb2.TONE_INFORMATIVE: Tone.INFORMATIVE,
}
PLACEMENTS = {
    ad_pb2.PLACEMENT_UNSPECIFIED: Placement.FEED_SQUARE,
    ad_pb2.PLACEMENT_FEED_SQUARE: Placement.FEED_SQUARE,
    ad_pb2.PLACEMENT_FEED_PORTRAIT: Placement.FEED_PORTRAIT,
    ad_pb2.PLACEMENT_STORY: Placement.STORY,
}
CAPTION_LENGTHS = {
    ad_pb2.CAPTION_LENGTH_UNSPECIFIED: CaptionLength.MEDIUM,
    ad_pb2.CAPTION_LENGTH_SHORT: CaptionLength.SHORT,
    ad_pb2.CAPTION_LENGTH_MEDIUM: CaptionLength.MEDIUM,
    ad_pb2.CAPTION_LENGTH_LONG: CaptionLength.LONG,
}
EMOJI_LEVELS = {
    ad_pb2.EMOJI_LEVEL_UNSPECIFIED: EmojiLevel.LIGHT,
    ad_pb2.EMOJI_LEVEL_NONE: EmojiLevel.NONE,
    ad_pb2.EMOJI_LEVEL_LIGHT: EmojiLevel.LIGHT,
    ad_pb2.EMOJI_LEVEL_RICH: EmojiLevel.RICH,
}
_BACKENDS = {BackendKind.TEMPLATE: pb.BACKEND_TEMPLATE, BackendKind.LLM: pb.BACKEND_LLM}


def generate_copy_response(draft: AdCopyDraft) -> pb.GenerateCopyResponse:
    """The engine's draft as the GenerateCopy response."""
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


def edit_instruction_response(written: EditInstruction) -> pb.WriteEditInstructionResponse:
    """The engine's instruction as the WriteEditInstruction response."""
    return pb.WriteEditInstructionResponse(
        instruction=written.instruction, provenance=provenance_message(written.provenance)
    )


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
