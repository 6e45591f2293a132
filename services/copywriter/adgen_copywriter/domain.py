"""What the copywriter works with, free of gRPC: briefs, drafts, edit instructions, backends."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Tone(enum.Enum):
    """Voice of the copy; every tone writes polite 해요체."""

    FRIENDLY = "friendly"
    EMOTIONAL = "emotional"
    PREMIUM = "premium"
    PLAYFUL = "playful"
    INFORMATIVE = "informative"


class Placement(enum.Enum):
    """Instagram placement; decides the frame the image prompt composes for."""

    FEED_SQUARE = "feed_square"
    FEED_PORTRAIT = "feed_portrait"
    STORY = "story"


class CaptionLength(enum.Enum):
    """Caption budget in graphemes."""

    SHORT = 125
    MEDIUM = 400
    LONG = 1000


class EmojiLevel(enum.Enum):
    """How many emoji a caption may carry: the value is the cap, counted in graphemes."""

    NONE = 0
    LIGHT = 3
    RICH = 12


class BackendKind(enum.Enum):
    """Which kind of backend wrote a draft."""

    TEMPLATE = "template"
    LLM = "llm"


@dataclass(frozen=True)
class MerchantFacts:
    """Facts the merchant vouches for: the only prices, origins and promotions copy may state."""

    shop_name: str = ""
    price: str = ""
    origin: str = ""
    promotion: str = ""
    extra: tuple[str, ...] = ()

    def all_facts(self) -> tuple[str, ...]:
        """Every non-empty fact, in a stable order."""
        return tuple(f for f in (self.shop_name, self.price, self.origin, self.promotion, *self.extra) if f)


@dataclass(frozen=True)
class Brief:
    """One copy request, already validated and with defaults applied."""

    keyword: str
    tone: Tone = Tone.FRIENDLY
    placement: Placement = Placement.FEED_SQUARE
    target_model_id: str = ""
    facts: MerchantFacts = field(default_factory=MerchantFacts)
    caption_length: CaptionLength = CaptionLength.MEDIUM
    emoji_level: EmojiLevel = EmojiLevel.LIGHT
    variant_count: int = 1
    # The merchant's own product photo goes into the image: prompts describe only the scene around it.
    product_photo: bool = False


@dataclass(frozen=True)
class Provenance:
    """Who wrote a draft and what it cost."""

    backend: BackendKind
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class AdCopyDraft:
    """Copy as a backend wrote it; `rules.finalize_copy` makes it safe to return."""

    image_prompts: tuple[str, ...]
    caption: str
    hook: str
    hashtags: tuple[str, ...]
    headline: str
    alt_text: str
    facts_used: tuple[str, ...]
    provenance: Provenance


@dataclass(frozen=True)
class EditRequest:
    """A merchant's edit request for a photo, in Korean or English."""

    request: str
    target_model_id: str = ""


@dataclass(frozen=True)
class EditInstruction:
    """An English instruction written for an edit model."""

    instruction: str
    provenance: Provenance


@dataclass(frozen=True)
class RuleViolation:
    """One rule the copy breaks, with the offending text and a reason a person can act on."""

    rule: str
    field: str
    text: str
    reason: str


class CopyBackend(Protocol):
    """Writes drafts; `TemplateBackend` offline, `LlmBackend` through an OpenAI-compatible model."""

    async def write_copy(self, brief: Brief) -> AdCopyDraft:
        """Writes a draft for the brief; rules are applied afterwards by the caller."""
        ...

    async def write_edit_instruction(self, request: EditRequest) -> EditInstruction:
        """Turns a merchant's edit request into an English instruction for the edit model."""
        ...

    async def aclose(self) -> None:
        """Releases connections."""
        ...


class CopyError(Exception):
    """Base of the copywriter's expected failures; the servicer maps each to a status."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LlmRefusedError(CopyError):
    """The language model declined the request."""


class LlmBadOutputError(CopyError):
    """The language model's output stayed truncated or invalid after a repair retry."""


class LlmUnavailableError(CopyError):
    """The endpoint was unreachable, rate-limited or failing after retries."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LlmMisconfiguredError(CopyError):
    """The endpoint refused the service's key, model or request (a 4xx): configuration no retry can fix."""


class BannedClaimError(CopyError):
    """The copy kept a claim food-advertising law forbids, or a fact the merchant never gave."""

    def __init__(self, message: str, violations: Sequence[RuleViolation]) -> None:
        super().__init__(message)
        self.violations = tuple(violations)
