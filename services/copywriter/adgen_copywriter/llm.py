"""The LLM backend: Chat Completions with a strict JSON schema on any OpenAI-compatible endpoint."""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from opentelemetry import trace
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, ValidationError

from adgen_copywriter.domain import (
    AdCopyDraft,
    BackendKind,
    Brief,
    EditInstruction,
    EditRequest,
    EmojiLevel,
    LlmBadOutputError,
    LlmMisconfiguredError,
    LlmRefusedError,
    LlmUnavailableError,
    Placement,
    Provenance,
    RuleViolation,
    Tone,
)
from adgen_copywriter.metrics import LlmMetrics
from adgen_copywriter.rules import (
    HEADLINE_MAX_GRAPHEMES,
    HOOK_MAX_GRAPHEMES,
    MAX_HASHTAGS,
    finalize_copy,
    strip_banned_terms,
)
from adgen_copywriter.target_models import QWEN_IMAGE_EDIT, PromptProfile, PromptStyle, profile_for

_LOGGER = logging.getLogger(__name__)

_Payload = TypeVar("_Payload", bound=BaseModel)


# ── the JSON the model must return ────────────────────────────────────────────────────────────


class CopyPayload(BaseModel):
    """The copy as the model returns it; lengths and counts are checked by the rules, not here."""

    model_config = ConfigDict(extra="forbid")

    image_prompts: list[str]
    caption: str
    hook: str
    hashtags: list[str]
    headline: str
    alt_text: str
    facts_used: list[str]


class EditPayload(BaseModel):
    """The edit instruction as the model returns it."""

    model_config = ConfigDict(extra="forbid")

    instruction: str


def _strict_schema(properties: dict[str, Any]) -> dict[str, Any]:
    """Strict structured outputs: every field required, nothing else allowed."""
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


_STRINGS = {"type": "array", "items": {"type": "string"}}
COPY_SCHEMA = _strict_schema(
    {
        "image_prompts": {**_STRINGS, "description": "English image prompts, one per composition variant."},
        "caption": {"type": "string", "description": "Korean caption in 해요체, starting with the hook."},
        "hook": {"type": "string", "description": "The caption's opening sentence, at most 125 characters."},
        "hashtags": {**_STRINGS, "description": "3 to 5 unique Korean or English hashtags without '#'."},
        "headline": {"type": "string", "description": "Short Korean headline for an image overlay."},
        "alt_text": {"type": "string", "description": "Korean alt text describing the image."},
        "facts_used": {**_STRINGS, "description": "The merchant facts the caption uses, copied verbatim."},
    }
)
EDIT_SCHEMA = _strict_schema({"instruction": {"type": "string", "description": "English edit instruction."}})

# ── prompts ───────────────────────────────────────────────────────────────────────────────────

_TONE_GUIDE = {
    Tone.FRIENDLY: "친근: warm and casual",
    Tone.EMOTIONAL: "감성: emotional and sensory",
    Tone.PREMIUM: "고급: refined and premium",
    Tone.PLAYFUL: "유머: playful and witty",
    Tone.INFORMATIVE: "정보: plain and informative",
}
_FRAME_GUIDE = {
    Placement.FEED_SQUARE: "a square 1:1 feed post",
    Placement.FEED_PORTRAIT: "a 4:5 portrait feed post; keep the subject inside the central 3:4 area",
    Placement.STORY: "a 9:16 story; keep the subject in the middle third and the top and bottom edges calm",
}
_EMOJI_GUIDE = {
    EmojiLevel.NONE: "no emoji at all",
    EmojiLevel.LIGHT: "at most 3 emoji",
    EmojiLevel.RICH: "emoji welcome",
}
_STYLE_GUIDE = {
    PromptStyle.NARRATIVE: "flowing narrative prose in the order subject, setting, details, lighting, camera and style",
    PromptStyle.DENSE: "one dense, comma-rich descriptive paragraph",
    PromptStyle.EDIT: "a concise edit instruction",
}
COMPOSITIONS = ("a hero close-up", "a top-down flat lay", "a lifestyle scene", "a minimal studio shot")

COPY_SYSTEM_PROMPT = f"""You write Instagram ads for small Korean cafes and bakeries. Reply with JSON only.

Korean copy:
- Write the caption, hook, headline and alt text in natural Korean, polite 해요체, in the requested tone.
- The hook is the caption's first sentence, at most {HOOK_MAX_GRAPHEMES} characters; the caption starts with it.
- The headline is at most {HEADLINE_MAX_GRAPHEMES} characters. Give {MAX_HASHTAGS} or fewer unique hashtags without '#'.
- State only the merchant facts you are given (price, origin, promotion, shop name, extras); copy them verbatim
  and list the ones you used in facts_used. Never invent a price, a discount, a promotion, an origin or a
  certification.
- Food-advertising law (식품표시광고법 제8조, 표시광고법) forbids: disease, medicine-like or health claims
  (면역, 다이어트, 디톡스, 치료, 예방, 혈당, 피로 회복 …); unproven superlatives and exclusives (최고, 1위, 최초,
  최대, 유일 …); 천연, 슈퍼푸드, 무첨가. Never use them, not even in hashtags.

English image prompts:
- Each prompt shows the product in a different composition; never write Korean in them (the image model
  cannot draw Hangul; Korean text is overlaid later).
- The image model ignores negative prompts: describe only what should be seen, positively; never write "no",
  "without" or "avoid".
- Leave clean, uncluttered negative space in the upper third of the frame for a headline.
- Photorealistic, appetizing commercial food photography.
- When the request says "product_photo": true, the merchant's own photo of the product is placed into the
  image exactly as photographed. Then each prompt describes only the scene around it: the surface it stands
  on, the background, the light, the props, and a clear, open space at the centre where the product goes.
  Never describe the product itself: not its kind, name, colour, contents, garnish, glass or packaging.
  The alt text then says the scene was made with AI around the shop's product photo."""

EDIT_SYSTEM_PROMPT = """You turn a cafe owner's short photo-edit request (Korean or English) into one English
instruction for the Qwen-Image-Edit model. Reply with JSON only.
- Use the model's style: "Replace Y with X: <X's key visual features>; keep <what stays> unchanged." Likewise
  "Add X …" or "Remove Y …".
- Be concise and concrete: name positions, colours and materials.
- Always say what stays unchanged: the background, lighting, camera angle and framing, unless the request
  changes one of them.
- Text shown in the image goes in English double quotes, exactly as written; never translate it."""


def copy_request_message(brief: Brief, profile: PromptProfile) -> str:
    """The user turn for one brief: everything the model needs, as JSON plus prompt guidance."""
    facts = brief.facts
    request = {
        # The same keyword the template writes from: banned claims in it never reach the model.
        "keyword": strip_banned_terms(brief.keyword) or brief.keyword,
        "tone": _TONE_GUIDE[brief.tone],
        "caption_max_characters": brief.caption_length.value,
        "emoji": _EMOJI_GUIDE[brief.emoji_level],
        "merchant_facts": {
            "shop_name": facts.shop_name,
            "price": facts.price,
            "origin": facts.origin,
            "promotion": facts.promotion,
            "extra": list(facts.extra),
        },
    }
    if brief.product_photo:
        request["product_photo"] = True
    compositions = ", ".join(COMPOSITIONS[: brief.variant_count])
    words = profile.prompt_token_budget // 3
    scene_only = (
        " The product photo goes into the image as it is: describe only the scene around it, never the product."
        if brief.product_photo
        else ""
    )
    return (
        f"Ad request:\n{json.dumps(request, ensure_ascii=False, indent=2)}\n\n"
        f"Write exactly {brief.variant_count} image prompt(s), in this order of compositions: {compositions}. "
        f"Frame each for {_FRAME_GUIDE[brief.placement]}. The image model ({profile.family}) reads at most "
        f"{profile.max_sequence_tokens} tokens, so keep each prompt between 60 and {min(words, 160)} words, written as "
        f"{_STYLE_GUIDE[profile.style]}.{scene_only}"
    )


def rule_repair_message(violations: list[RuleViolation]) -> str:
    """Tells the model exactly what to fix, once."""
    lines = [f'- {v.field}: "{v.text}" — {v.reason}' for v in violations]
    return (
        "Your copy breaks these rules:\n"
        + "\n".join(lines)
        + "\nRewrite the whole answer without them. Use only the merchant facts given, verbatim."
    )


# ── the backend ───────────────────────────────────────────────────────────────────────────────


@dataclass
class _Usage:
    """Tokens summed over every attempt, and the model name the endpoint last answered with."""

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, completion: ChatCompletion) -> None:
        # The endpoint names the exact snapshot it ran (e.g. gpt-4o-mini-2024-07-18).
        self.model = completion.model or self.model
        if completion.usage is not None:
            # The SDK does not validate replies; some compatible servers send null counts.
            self.prompt_tokens += completion.usage.prompt_tokens or 0
            self.completion_tokens += completion.usage.completion_tokens or 0


class LlmBackend:
    """Writes copy with a language model; one repair retry for bad JSON and one for broken rules."""

    def __init__(
        self,
        client: AsyncOpenAI,
        model: str,
        *,
        temperature: float | None = 0.7,
        unavailable_retry_after_s: float = 5.0,
        metrics: LlmMetrics | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.metrics = metrics or LlmMetrics(CollectorRegistry())
        self._tracer = tracer or trace.NoOpTracer()
        self._backend = client.base_url.host or "unknown"
        # HTTP requests sent by the current completion: more than one means the SDK retried.
        self._attempts: contextvars.ContextVar[list[int]] = contextvars.ContextVar("llm_attempts")
        self.temperature = temperature
        self.unavailable_retry_after_s = unavailable_retry_after_s

    async def write_copy(self, brief: Brief) -> AdCopyDraft:
        profile = profile_for(brief.target_model_id)
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": COPY_SYSTEM_PROMPT},
            {"role": "user", "content": copy_request_message(brief, profile)},
        ]
        usage = _Usage(self.model)

        def enough_prompts(payload: CopyPayload) -> str | None:
            if len([p for p in payload.image_prompts if p.strip()]) < brief.variant_count:
                return f"Write exactly {brief.variant_count} non-empty image prompts."
            return None if payload.caption.strip() else "The caption must not be empty."

        payload, raw = await self._structured(messages, "ad_copy", COPY_SCHEMA, CopyPayload, usage, enough_prompts)
        violations = finalize_copy(self._draft(payload, usage), brief).violations
        if violations:
            _LOGGER.info("LLM copy broke %d rule(s); asking for one repair", len(violations))
            self.metrics.retries.labels(self._backend, self.model, "rules").inc()
            messages += [
                {"role": "assistant", "content": raw},
                {"role": "user", "content": rule_repair_message(list(violations))},
            ]
            payload, _ = await self._structured(messages, "ad_copy", COPY_SCHEMA, CopyPayload, usage, enough_prompts)
        return self._draft(payload, usage)

    async def write_edit_instruction(self, request: EditRequest) -> EditInstruction:
        profile = profile_for(request.target_model_id, default=QWEN_IMAGE_EDIT)
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": EDIT_SYSTEM_PROMPT},
            {
                "role": "user",
                "content": f"Edit model: {profile.family}. Request: {json.dumps(request.request, ensure_ascii=False)}",
            },
        ]
        usage = _Usage(self.model)

        def not_empty(payload: EditPayload) -> str | None:
            return None if payload.instruction.strip() else "The instruction must not be empty."

        payload, _ = await self._structured(messages, "edit_instruction", EDIT_SCHEMA, EditPayload, usage, not_empty)
        return EditInstruction(payload.instruction.strip(), self._provenance(usage))

    async def aclose(self) -> None:
        await self.client.close()

    def _provenance(self, usage: _Usage) -> Provenance:
        return Provenance(BackendKind.LLM, usage.model, usage.prompt_tokens, usage.completion_tokens)

    def _draft(self, payload: CopyPayload, usage: _Usage) -> AdCopyDraft:
        return AdCopyDraft(
            image_prompts=tuple(p.strip() for p in payload.image_prompts if p.strip()),
            caption=payload.caption.strip(),
            hook=payload.hook.strip(),
            hashtags=tuple(payload.hashtags),
            headline=payload.headline,
            alt_text=payload.alt_text,
            facts_used=tuple(f.strip() for f in payload.facts_used),
            provenance=self._provenance(usage),
        )

    async def _structured(
        self,
        messages: list[ChatCompletionMessageParam],
        name: str,
        schema: dict[str, Any],
        payload_type: type[_Payload],
        usage: _Usage,
        check: Callable[[_Payload], str | None],
    ) -> tuple[_Payload, str]:
        """One schema-valid payload and its raw JSON, allowing one repair of truncated or invalid output.

        `messages` grows with the repair turns so a later rule repair sees the whole exchange.
        """
        for attempt in range(2):
            completion = await self._complete(messages, name, schema)
            usage.add(completion)
            if not completion.choices:
                # Some OpenAI-compatible servers answer 200 with no choice when generation fails.
                _LOGGER.info("LLM reply had no choices on attempt %d", attempt + 1)
                continue
            choice = completion.choices[0]
            if choice.message.refusal or choice.finish_reason == "content_filter":
                _LOGGER.info("LLM refused the request")
                raise LlmRefusedError("The language model declined to write this; rephrase the request.")
            raw = choice.message.content or ""
            problem = _problem_with(raw, choice.finish_reason, payload_type, check)
            if problem is None:
                return payload_type.model_validate_json(raw), raw
            _LOGGER.info("LLM output unusable on attempt %d: %s", attempt + 1, problem)
            if attempt == 0:
                self.metrics.retries.labels(self._backend, self.model, "output").inc()
            messages += [
                {"role": "assistant", "content": raw},
                {"role": "user", "content": f"{problem} Reply again with the complete JSON object only."},
            ]
        raise LlmBadOutputError("The language model kept returning unusable output; try again.")

    def count_attempt(self) -> None:
        """The HTTP client's request hook: one more request for the completion in progress."""
        attempts = self._attempts.get(None)
        if attempts is not None:
            attempts[0] += 1

    async def _complete(
        self, messages: list[ChatCompletionMessageParam], name: str, schema: dict[str, Any]
    ) -> ChatCompletion:
        """One call, timed and counted; the SDK retries connection errors, timeouts, 429 and 5xx first."""
        attempts = [0]
        token = self._attempts.set(attempts)
        started = time.perf_counter()
        outcome = "error"
        # A client span per completion (GenAI semantic conventions), its HTTP retries inside it.
        with self._tracer.start_as_current_span(f"chat {self.model}", kind=trace.SpanKind.CLIENT) as span:
            span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": self.model})
            span.set_attribute("server.address", self._backend)
            try:
                completion = await self._create(messages, name, schema)
                outcome = "ok"
                self._count_tokens(completion, span)
                return completion
            finally:
                self._attempts.reset(token)
                elapsed_s = time.perf_counter() - started
                self.metrics.duration.labels(self._backend, self.model, outcome).observe(elapsed_s)
                if attempts[0] > 1:
                    self.metrics.retries.labels(self._backend, self.model, "http").inc(attempts[0] - 1)

    def _count_tokens(self, completion: ChatCompletion, span: trace.Span) -> None:
        if completion.usage is None:
            return
        prompt, written = completion.usage.prompt_tokens or 0, completion.usage.completion_tokens or 0
        self.metrics.tokens.labels(self._backend, self.model, "prompt").inc(prompt)
        self.metrics.tokens.labels(self._backend, self.model, "completion").inc(written)
        span.set_attributes({"gen_ai.usage.input_tokens": prompt, "gen_ai.usage.output_tokens": written})

    async def _create(
        self, messages: list[ChatCompletionMessageParam], name: str, schema: dict[str, Any]
    ) -> ChatCompletion:
        try:
            return await self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=openai.omit if self.temperature is None else self.temperature,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": name, "strict": True, "schema": schema},
                },
            )
        except openai.APITimeoutError as error:
            _LOGGER.warning("LLM request timed out after retries")
            raise self._unavailable("The language model did not answer in time; try again shortly.") from error
        except openai.APIConnectionError as error:
            _LOGGER.warning("LLM endpoint unreachable after retries")
            raise self._unavailable("The language model endpoint is unreachable; try again shortly.") from error
        except openai.APIStatusError as error:
            status = error.status_code
            if status in (408, 409, 429) or status >= 500:
                _LOGGER.warning("LLM endpoint answered HTTP %d after retries", status)
                retry_after = _retry_after_s(error.response.headers) or self.unavailable_retry_after_s
                raise self._unavailable(
                    "The language model is busy or failing; try again later.", retry_after
                ) from error
            # Any other 4xx is our configuration (key, model name, json_schema support), not the caller's
            # request: the SDK does not retry it, and neither may anyone downstream.
            raise _misconfigured(status) from error
        except openai.APIError as error:
            _LOGGER.warning("LLM response could not be read: %s", type(error).__name__)
            raise LlmBadOutputError("The language model returned an unreadable response.") from error

    def _unavailable(self, message: str, retry_after_s: float | None = None) -> LlmUnavailableError:
        return LlmUnavailableError(
            message, retry_after_s if retry_after_s is not None else self.unavailable_retry_after_s
        )


def _misconfigured(status: int) -> LlmMisconfiguredError:
    """What to fix for a 4xx that no retry can fix; the endpoint's own error text is never repeated (OpenAI's
    401 message quotes part of the key)."""
    if status in (401, 403):
        _LOGGER.error("LLM endpoint refused the API key (HTTP %d); check ADGEN_COPYWRITER_LLM_API_KEY", status)
        return LlmMisconfiguredError(
            f"The language model endpoint refused the copywriter's credentials (HTTP {status}); check "
            "ADGEN_COPYWRITER_LLM_API_KEY (or OPENAI_API_KEY)."
        )
    if status == 404:
        _LOGGER.error("LLM endpoint answered 404; check ADGEN_COPYWRITER_LLM_MODEL and the base URL")
        return LlmMisconfiguredError(
            "The language model endpoint does not know the configured model (HTTP 404); check "
            "ADGEN_COPYWRITER_LLM_MODEL and ADGEN_COPYWRITER_LLM_BASE_URL (or OPENAI_BASE_URL)."
        )
    _LOGGER.error("LLM endpoint rejected the request with HTTP %d; check the model and its settings", status)
    return LlmMisconfiguredError(
        f"The language model endpoint rejected the copywriter's request (HTTP {status}); check that "
        "ADGEN_COPYWRITER_LLM_MODEL supports json_schema response formats and ADGEN_COPYWRITER_LLM_TEMPERATURE."
    )


def _problem_with(
    raw: str, finish_reason: str, payload_type: type[_Payload], check: Callable[[_Payload], str | None]
) -> str | None:
    """What is wrong with one reply, phrased for the model, or None when it is usable."""
    if finish_reason == "length":
        return "Your reply was cut off before the JSON ended. Be more concise."
    try:
        payload = payload_type.model_validate_json(raw)
    except ValidationError:
        return "Your reply was not valid JSON matching the schema."
    return check(payload)


def _retry_after_s(headers: Any) -> float | None:
    """The server's Retry-After (seconds or retry-after-ms), if it sent a usable one."""
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if seconds > 0:
            return seconds
    return None
