"""The copywriter engine: a backend writes, the rules make it safe; no gRPC in here."""

from __future__ import annotations

import logging

from adgen_copywriter.domain import (
    AdCopyDraft,
    BannedClaimError,
    Brief,
    CopyBackend,
    EditInstruction,
    EditRequest,
    LlmBadOutputError,
)
from adgen_copywriter.rules import finalize_copy, fit_prompt
from adgen_copywriter.target_models import QWEN_IMAGE_EDIT, profile_for

_LOGGER = logging.getLogger(__name__)


class CopyEngine:
    """Runs a backend and enforces the rules on whatever it wrote, so no backend is trusted alone."""

    def __init__(self, backend: CopyBackend) -> None:
        self.backend = backend

    async def generate_copy(self, brief: Brief) -> AdCopyDraft:
        """Copy that passed every rule, or a `CopyError` saying why there is none."""
        draft = await self.backend.write_copy(brief)
        finalized = finalize_copy(draft, brief)
        if finalized.violations:
            terms = ", ".join(dict.fromkeys(v.text for v in finalized.violations))
            _LOGGER.warning("copy rejected by the rules: %s", terms)
            raise BannedClaimError(
                f"The copy kept claims that food-advertising rules forbid or facts the merchant did not give: {terms}.",
                finalized.violations,
            )
        if not finalized.draft.image_prompts or not finalized.draft.caption:
            raise LlmBadOutputError("The copywriter returned no usable prompt or caption.")
        return finalized.draft

    async def write_edit_instruction(self, request: EditRequest) -> EditInstruction:
        """An English instruction fitted to the edit model's token budget."""
        written = await self.backend.write_edit_instruction(request)
        profile = profile_for(request.target_model_id, default=QWEN_IMAGE_EDIT)
        instruction = fit_prompt(" ".join(written.instruction.split()), profile.prompt_token_budget)
        if not instruction:
            raise LlmBadOutputError("The copywriter returned an empty edit instruction.")
        return EditInstruction(instruction, written.provenance)

    async def aclose(self) -> None:
        """Releases the backend's connections."""
        await self.backend.aclose()
