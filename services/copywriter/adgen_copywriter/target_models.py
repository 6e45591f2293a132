"""What the copywriter knows about each image model's prompt reader: budget, template, habits."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

_LOGGER = logging.getLogger(__name__)

DEFAULT_TEXT_TO_IMAGE_MODEL = "flux2-klein-4b"
DEFAULT_EDIT_MODEL = "qwen-image-edit-2511"


class PromptStyle(enum.Enum):
    """How a model likes its prompt written."""

    NARRATIVE = "narrative"  # FLUX.2: prose, subject → setting → details → lighting → camera.
    DENSE = "dense"  # Z-Image: one dense, comma-rich descriptive paragraph.
    EDIT = "edit"  # Qwen-Image-Edit: "Replace Y with X: …; keep … unchanged."


@dataclass(frozen=True)
class PromptProfile:
    """The prompt reader of one model family."""

    family: str
    style: PromptStyle
    # The text encoder truncates here silently, chat template included.
    max_sequence_tokens: int
    # Tokens the model's chat template adds around the prompt (estimated high).
    template_tokens: int
    # Distilled / CFG-free models ignore negative prompts, so everything is phrased positively.
    reads_negative_prompt: bool

    @property
    def prompt_token_budget(self) -> int:
        """Tokens left for the prompt itself once the chat template is counted."""
        return self.max_sequence_tokens - self.template_tokens


# Flux2Klein wraps the prompt in Qwen3's chat template with an empty think block (about 15 tokens).
FLUX2_KLEIN = PromptProfile("flux2-klein", PromptStyle.NARRATIVE, 512, 32, reads_negative_prompt=False)
# ZImage uses the same Qwen3 template (enable_thinking=True, so a little shorter).
Z_IMAGE = PromptProfile("z-image", PromptStyle.DENSE, 512, 32, reads_negative_prompt=False)
# QwenImageEditPlus adds a long system template (about 70 tokens) and vision tokens outside the budget.
QWEN_IMAGE_EDIT = PromptProfile("qwen-image-edit", PromptStyle.EDIT, 512, 96, reads_negative_prompt=True)

_FAMILIES: tuple[PromptProfile, ...] = (FLUX2_KLEIN, Z_IMAGE, QWEN_IMAGE_EDIT)


def profile_for(model_id: str, *, default: PromptProfile = FLUX2_KLEIN) -> PromptProfile:
    """The profile of a registry id such as "flux2-klein-9b-fp8"; unknown ids get `default`.

    The diffusion service owns the registry, so an id unknown here is not an error: the
    prompt is still written, for the default reader.
    """
    normalized = model_id.strip().lower()
    if not normalized:
        return default
    for profile in _FAMILIES:
        if normalized.startswith(profile.family) or f"-{profile.family}" in normalized:
            return profile
    _LOGGER.info("no prompt profile for model id %r; writing for %s", normalized, default.family)
    return default
