"""The offline template backend: deterministic, Korean, honest, and within every rule."""

from __future__ import annotations

import pytest
import regex

from adgen_copywriter.domain import (
    BackendKind,
    Brief,
    CaptionLength,
    EditRequest,
    EmojiLevel,
    MerchantFacts,
    Placement,
    Tone,
)
from adgen_copywriter.glossary import covers, understand
from adgen_copywriter.rules import emoji_count, estimate_tokens, finalize_copy, grapheme_count
from adgen_copywriter.target_models import FLUX2_KLEIN
from adgen_copywriter.template import TEMPLATE_MODEL, TemplateBackend, josa, write_edit_instruction_text

KEYWORD = "여름 느낌 딸기 생과일 주스"
HANGUL = regex.compile(r"\p{Hangul}")
NEGATION = regex.compile(r"\b(no|not|without|avoid|never)\b", regex.IGNORECASE)


@pytest.fixture(scope="module")
def backend() -> TemplateBackend:
    return TemplateBackend()


async def test_same_brief_gives_the_same_copy(backend: TemplateBackend) -> None:
    brief = Brief(keyword=KEYWORD, variant_count=4)
    assert await backend.write_copy(brief) == await backend.write_copy(brief)


async def test_provenance_says_it_is_the_offline_template(backend: TemplateBackend) -> None:
    draft = await backend.write_copy(Brief(keyword=KEYWORD))
    assert draft.provenance.backend is BackendKind.TEMPLATE
    assert draft.provenance.model == TEMPLATE_MODEL == "offline-template-v1"
    assert (draft.provenance.prompt_tokens, draft.provenance.completion_tokens) == (0, 0)


async def test_prompts_name_the_product_in_english_without_hangul(backend: TemplateBackend) -> None:
    draft = await backend.write_copy(Brief(keyword=KEYWORD, variant_count=4))
    assert len(draft.image_prompts) == 4
    for prompt in draft.image_prompts:
        assert "strawberry juice" in prompt and "summer" in prompt.lower()
        assert not HANGUL.search(prompt)
        assert not NEGATION.search(prompt)
        assert "negative space in the upper third for a headline" in prompt


async def test_variants_use_distinct_compositions(backend: TemplateBackend) -> None:
    draft = await backend.write_copy(Brief(keyword=KEYWORD, variant_count=4))
    openings = [p.split(" of ")[0].split(":")[0] for p in draft.image_prompts]
    assert len(set(draft.image_prompts)) == 4
    assert openings[0].startswith("A hero close-up") and openings[1].startswith("A top-down flat lay")
    assert openings[2].startswith("A lifestyle scene") and openings[3].startswith("A minimal studio shot")


@pytest.mark.parametrize("placement", list(Placement))
@pytest.mark.parametrize("model_id", ["", "flux2-klein-9b", "z-image-turbo"])
async def test_prompts_fit_the_token_budget_with_room_for_the_chat_template(
    backend: TemplateBackend, placement: Placement, model_id: str
) -> None:
    brief = Brief(keyword=KEYWORD, placement=placement, target_model_id=model_id, variant_count=4)
    draft = await backend.write_copy(brief)
    for prompt in draft.image_prompts:
        assert estimate_tokens(prompt) <= FLUX2_KLEIN.prompt_token_budget
        assert 60 <= len(prompt.split()) <= 250


async def test_placement_shapes_the_frame(backend: TemplateBackend) -> None:
    story = await backend.write_copy(Brief(keyword=KEYWORD, placement=Placement.STORY))
    portrait = await backend.write_copy(Brief(keyword=KEYWORD, placement=Placement.FEED_PORTRAIT))
    assert "9:16" in story.image_prompts[0] and "4:5" in portrait.image_prompts[0]


async def test_z_image_gets_one_dense_paragraph(backend: TemplateBackend) -> None:
    draft = await backend.write_copy(Brief(keyword=KEYWORD, target_model_id="z-image-turbo"))
    assert draft.image_prompts[0].count(".") <= 2  # "f/2.8" and the final stop.
    assert draft.image_prompts[0].count(",") >= 10


async def test_unknown_keyword_still_gets_a_good_product_prompt_without_hangul(backend: TemplateBackend) -> None:
    draft = await backend.write_copy(Brief(keyword="할머니 손맛 식혜 말고 쌍화차"))
    prompt = draft.image_prompts[0]
    assert not HANGUL.search(prompt)
    assert "close-up" in prompt and "cafe" in prompt


async def test_caption_is_korean_polite_and_starts_with_the_hook(backend: TemplateBackend) -> None:
    draft = await backend.write_copy(Brief(keyword=KEYWORD))
    assert KEYWORD in draft.caption and draft.caption.startswith(draft.hook)
    assert grapheme_count(draft.hook) <= 125
    # 해요체: every sentence of the caption ends in -요 (before punctuation and emoji).
    sentences = [s for s in regex.split(r"(?<=[.!?])\s+|\n+", draft.caption) if HANGUL.search(s)]
    endings = [regex.sub(r"[^\p{Hangul}]+$", "", s) for s in sentences]
    assert all(e.endswith("요") or e.endswith("죠") for e in endings), endings


async def test_each_tone_writes_a_different_caption_and_headline(backend: TemplateBackend) -> None:
    drafts = [await backend.write_copy(Brief(keyword=KEYWORD, tone=tone)) for tone in Tone]
    assert len({d.caption for d in drafts}) == len(Tone)
    assert len({d.hook for d in drafts}) == len(Tone)
    assert len({d.headline for d in drafts}) == len(Tone)


@pytest.mark.parametrize("tone", list(Tone))
@pytest.mark.parametrize("length", list(CaptionLength))
@pytest.mark.parametrize("emoji", list(EmojiLevel))
async def test_template_copy_always_passes_the_rules(
    backend: TemplateBackend, tone: Tone, length: CaptionLength, emoji: EmojiLevel
) -> None:
    facts = MerchantFacts(shop_name="하루카페", price="5,500원", origin="논산 딸기", promotion="1+1 이벤트 (7월 한정)")
    brief = Brief(keyword=KEYWORD, tone=tone, caption_length=length, emoji_level=emoji, facts=facts)
    draft = await backend.write_copy(brief)
    finalized = finalize_copy(draft, brief)
    assert finalized.violations == ()
    assert finalized.draft == draft  # Nothing needed fixing.
    assert grapheme_count(draft.caption) <= length.value
    assert emoji_count(draft.caption) <= emoji.value
    assert 1 <= len(draft.hashtags) <= 5 and all("#" not in t and " " not in t for t in draft.hashtags)


async def test_only_merchant_facts_are_stated_and_listed_verbatim(backend: TemplateBackend) -> None:
    facts = MerchantFacts(shop_name="하루카페", price="5,500원", origin="논산 딸기", promotion="1+1 이벤트 (7월 한정)")
    draft = await backend.write_copy(Brief(keyword=KEYWORD, facts=facts))
    assert draft.facts_used == ("하루카페", "5,500원", "논산 딸기", "1+1 이벤트 (7월 한정)")
    assert all(fact in draft.caption for fact in draft.facts_used)
    bare = await backend.write_copy(Brief(keyword=KEYWORD))
    assert bare.facts_used == () and "원" not in regex.sub(r"[가-힣]원", "", bare.caption)


async def test_short_caption_keeps_facts_before_optional_lines(backend: TemplateBackend) -> None:
    facts = MerchantFacts(price="5,500원")
    draft = await backend.write_copy(Brief(keyword=KEYWORD, facts=facts, caption_length=CaptionLength.SHORT))
    assert "5,500원" in draft.caption and grapheme_count(draft.caption) <= 125


async def test_keyword_with_emoji_and_mixed_scripts(backend: TemplateBackend) -> None:
    keyword = "딸기🍓 Dirty Chai 라떼 👨‍👩‍👧 여름"
    brief = Brief(keyword=keyword, variant_count=2)
    draft = await backend.write_copy(brief)
    assert finalize_copy(draft, brief).violations == ()
    assert keyword in draft.caption
    for prompt in draft.image_prompts:
        assert "strawberry" in prompt and "Dirty Chai" in prompt and "latte" in prompt
        assert not HANGUL.search(prompt) and "👨" not in prompt


async def test_banned_words_in_the_keyword_never_reach_the_copy(backend: TemplateBackend) -> None:
    brief = Brief(keyword="다이어트 최고 딸기 주스")
    draft = await backend.write_copy(brief)
    assert finalize_copy(draft, brief).violations == ()
    assert "다이어트" not in draft.caption and "최고" not in draft.caption


def test_glossary_reads_compounds_particles_and_emoji() -> None:
    understood = understand("딸기라떼를 🍰")
    assert [t.english for t in understood.terms] == ["strawberry", "latte", "cake"]


def test_glossary_reads_a_long_run_of_overlapping_terms_without_backtracking_blowup() -> None:
    # 청포도 is both one term and 청+포도; with an unknown syllable at the end, backtracking tried
    # 2^n splits (18 repeats took seconds, a 500-grapheme edit request would never finish).
    assert not covers("청포도" * 160 + "쀍")
    assert covers("청포도" * 160)
    assert write_edit_instruction_text("청포도" * 160 + "쀍를 빼줘").startswith("Edit the photo as the merchant asks")


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("주스", "주스를"),
        ("빙수", "빙수로"),
        ("케이크", "케이크를"),
        ("빵", "빵으로"),
        ("라떼 🍓", "라떼 🍓를"),
        ("Latte", "Latte(으)로"),
    ],
)
def test_particles_follow_the_last_syllable(word: str, expected: str) -> None:
    particle = ("으", "로") if expected.endswith("로") else ("을", "를")
    assert josa(word, *particle) == expected


@pytest.mark.parametrize(
    ("request_text", "expected"),
    [
        (
            "커피를 딸기 라떼로 바꿔줘",
            "Replace the coffee with a strawberry latte: glossy red strawberries, creamy milk layered over it, "
            "in the same cup, same size and position; keep the background, lighting, camera angle and framing "
            "unchanged.",
        ),
        ("빨대 빼줘", "Remove the straw and fill its area with the surrounding surface; keep the background, "
         "lighting, camera angle and framing unchanged."),
        ("make the cup blue", "Make the cup blue; keep the background, lighting, camera angle and framing unchanged."),
    ],
)  # fmt: skip
def test_edit_requests_become_qwen_style_instructions(request_text: str, expected: str) -> None:
    assert write_edit_instruction_text(request_text) == expected


def test_background_swaps_keep_the_product_unchanged() -> None:
    instruction = write_edit_instruction_text("배경을 겨울 느낌으로 바꿔줘")
    assert instruction.startswith("Replace the background with a winter cafe setting")
    assert "keep the product" in instruction


@pytest.mark.parametrize("request_text", ["배경을 해변으로 바꿔줘", "배경 좀 더 아늑한 느낌 나게 해줘"])
def test_background_requests_never_ask_to_keep_the_background(request_text: str) -> None:
    instruction = write_edit_instruction_text(request_text)
    assert "keep the background" not in instruction
    assert "keep the product" in instruction


def test_english_instruction_that_says_what_to_keep_passes_through() -> None:
    assert write_edit_instruction_text("Add ice cubes; keep everything else as is") == (
        "Add ice cubes; keep everything else as is."
    )


async def test_unmatched_korean_request_is_quoted_for_the_edit_model(backend: TemplateBackend) -> None:
    written = await backend.write_edit_instruction(EditRequest("분위기를 좀 더 아늑하게"))
    assert written.instruction.startswith('Edit the photo as the merchant asks: "분위기를 좀 더 아늑하게"')
    assert written.provenance.backend is BackendKind.TEMPLATE
