"""The rules every draft passes: graphemes, hashtags, banned claims, invented facts, prompt fitting."""

from __future__ import annotations

import pytest

from adgen_copywriter.domain import (
    AdCopyDraft,
    BackendKind,
    Brief,
    CaptionLength,
    EmojiLevel,
    MerchantFacts,
    Provenance,
)
from adgen_copywriter.rules import (
    HOOK_MAX_GRAPHEMES,
    drawable_prompt,
    estimate_tokens,
    finalize_copy,
    find_banned_claims,
    find_invented_facts,
    fit_prompt,
    grapheme_count,
    limit_emoji,
    normalize_hashtags,
    strip_banned_terms,
    truncate_at_sentence,
    truncate_graphemes,
)
from adgen_copywriter.target_models import FLUX2_KLEIN, QWEN_IMAGE_EDIT, Z_IMAGE, profile_for

FAMILY = "👨‍👩‍👧‍👦"  # One grapheme made of seven code points (four people joined by ZWJ).
FLAG = "🇰🇷"  # One grapheme, two regional indicators.


def _draft(**overrides: object) -> AdCopyDraft:
    fields: dict[str, object] = {
        "image_prompts": ("A hero close-up of a strawberry juice on a cafe counter.",),
        "caption": "딸기 주스가 나왔어요.\n\n시원하게 즐겨 보세요.",
        "hook": "딸기 주스가 나왔어요.",
        "hashtags": ("딸기주스",),
        "headline": "딸기 주스",
        "alt_text": "딸기 주스 사진이에요.",
        "facts_used": (),
        "provenance": Provenance(BackendKind.LLM, "test-model"),
    }
    fields.update(overrides)
    return AdCopyDraft(**fields)  # type: ignore[arg-type]


def test_grapheme_count_treats_zwj_families_and_flags_as_one_character() -> None:
    assert grapheme_count(FAMILY) == 1
    assert grapheme_count(FLAG) == 1
    assert grapheme_count(f"딸기{FAMILY}{FLAG}주스") == 6
    assert len(FAMILY) == 7  # What a naive len() would have counted.


def test_truncation_never_splits_an_emoji_sequence() -> None:
    text = "가" * 10 + FAMILY * 10
    cut = truncate_graphemes(text, 15)
    assert grapheme_count(cut) <= 15
    assert cut.endswith("…")
    assert "\u200d…" not in cut and cut.count("\u200d") % 3 == 0


def test_a_caption_cut_to_its_budget_keeps_its_paragraph_breaks() -> None:
    caption = "딸기 주스가 나왔어요!\n\n시원하게 즐겨 보세요. 오늘만 만나요.\n\n내일도 들러 주세요."
    cut = truncate_at_sentence(caption, 30)
    assert cut == "딸기 주스가 나왔어요!\n\n시원하게 즐겨 보세요."
    assert grapheme_count(cut) <= 30


def test_emoji_are_capped_by_level_keeping_the_first_ones() -> None:
    text = f"딸기 🍓 주스 🥤 여름 {FAMILY} 최애 ✨"
    assert limit_emoji(text, EmojiLevel.NONE) == "딸기 주스 여름 최애"
    assert limit_emoji(text, EmojiLevel.LIGHT) == f"딸기 🍓 주스 🥤 여름 {FAMILY} 최애"


def test_hashtags_are_normalised_unique_and_at_most_five() -> None:
    tags = ["#딸기 주스", "딸기주스", "##Cafe", "cafe", "여름!", "", "#", "생과일", "카페스타그램", "extra"]
    assert normalize_hashtags(tags) == ("딸기주스", "Cafe", "여름", "생과일", "카페스타그램")


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("면역력을 높여 줘요", "면역"),
        ("다이어트에 딱이에요", "다이어트"),
        ("동네 최고의 주스", "최고"),
        ("판매량 1위 라떼", "1위"),
        ("동네 인기 3 위", "3 위"),
        ("국내 최초 딸기 빙수", "최초"),
        ("천연 재료로 만들어요", "천연"),
        ("슈퍼푸드 블루베리", "슈퍼푸드"),
        ("설탕 무첨가", "무첨가"),
        ("디톡스 주스", "디톡스"),
        ("감기 예방에 좋아요", "예방"),
        ("The best latte", "best"),
    ],
)
def test_banned_food_claims_are_detected_with_a_reason(text: str, term: str) -> None:
    found = find_banned_claims(text, "caption")
    assert [v.text.lower() for v in found] == [term.lower()]
    assert found[0].field == "caption" and found[0].reason


@pytest.mark.parametrize(
    "text",
    [
        "여름 느낌 딸기 생과일 주스로 기분 전환해요! 시원하고 달콤해요.",
        "최대한 시원하게 준비했어요.",
        "2층 창가 위치가 좋아요.",
    ],
)
def test_ordinary_cafe_copy_has_no_banned_claims(text: str) -> None:
    assert find_banned_claims(text, "caption") == []


def test_banned_terms_are_stripped_from_a_keyword() -> None:
    assert strip_banned_terms("다이어트 최고 샐러드") == "샐러드"


@pytest.mark.parametrize(
    ("text", "invented"),
    [
        ("단돈 4,900원!", "4,900원"),
        ("지금 30% 할인", "30%"),
        ("오늘만 1+1", "1+1"),
        ("제주 감귤로 만들었어요", "제주"),
        ("국내산 우유만 써요", "국내산"),
        ("음료 무료 증정", "무료"),
    ],
)
def test_prices_promotions_and_origins_the_merchant_did_not_give_are_reported(text: str, invented: str) -> None:
    found = [v.text for v in find_invented_facts(text, "caption", ["하루카페", "여름 딸기 주스"])]
    assert invented in found


def test_facts_the_merchant_gave_may_be_stated_even_formatted_differently() -> None:
    vouched = ["5500원", "논산 딸기", "1+1 이벤트 (7월 한정)", "제주 말차 라떼"]
    text = "논산 딸기로 만든 주스, 5,500원이에요. 1+1 이벤트 중이에요. 제주 말차 라떼도 있어요."
    assert find_invented_facts(text, "caption", vouched) == []


def test_token_estimate_is_high_for_english_and_counts_hangul_and_emoji() -> None:
    sentence = "A hero close-up of a fresh strawberry juice on a light oak counter."
    # A Qwen BPE tokenizer needs about 16 tokens here; the estimate must never be lower.
    assert estimate_tokens(sentence) >= 16
    assert estimate_tokens("딸기") == 4
    assert estimate_tokens(FAMILY) == 4
    assert estimate_tokens("2026") == 4


def test_fitting_keeps_the_subject_sentence_first_and_drops_trailing_detail() -> None:
    subject = "A hero close-up of a strawberry juice on a cafe counter."
    prompt = " ".join([subject, *[f"Detail sentence number {i} about light and props." for i in range(200)]])
    assert estimate_tokens(prompt) > FLUX2_KLEIN.prompt_token_budget
    fitted = fit_prompt(prompt, FLUX2_KLEIN.prompt_token_budget)
    assert fitted.startswith(subject)
    assert estimate_tokens(fitted) <= FLUX2_KLEIN.prompt_token_budget
    assert fitted.endswith(".")


def test_fitting_cuts_words_when_even_the_subject_sentence_is_too_long() -> None:
    prompt = "A strawberry juice " + "with ice " * 400 + "on a counter."
    fitted = fit_prompt(prompt, 100)
    assert fitted.startswith("A strawberry juice with ice")
    assert estimate_tokens(fitted) <= 100


def test_prompt_budgets_leave_room_for_the_chat_template() -> None:
    assert FLUX2_KLEIN.prompt_token_budget < 512 and Z_IMAGE.prompt_token_budget < 512
    assert profile_for("flux2-klein-9b-fp8") is FLUX2_KLEIN
    assert profile_for("z-image-turbo") is Z_IMAGE
    assert profile_for("qwen-image-edit-2511") is QWEN_IMAGE_EDIT
    assert profile_for("") is FLUX2_KLEIN and profile_for("someone-elses-model") is FLUX2_KLEIN


def test_drawable_prompts_lose_hangul_and_negations_for_cfg_free_models() -> None:
    prompt = 'A strawberry latte with the word "딸기" on the cup, no people, without clutter, soft light.'
    drawn = drawable_prompt(prompt, FLUX2_KLEIN)
    assert "딸기" not in drawn and "no people" not in drawn and "without" not in drawn
    assert drawn.startswith("A strawberry latte") and "soft light" in drawn


def test_finalize_trims_hashtags_fits_lengths_and_makes_the_hook_the_captions_opening() -> None:
    brief = Brief(keyword="딸기 주스", caption_length=CaptionLength.SHORT, emoji_level=EmojiLevel.NONE)
    long_caption = "딸기 주스가 나왔어요 🍓. " + "정말 시원하고 달콤해요. " * 30
    draft = _draft(
        caption=long_caption,
        hook="완전히 다른 문장이에요.",
        hashtags=("a", "b", "c", "d", "e", "f"),
        headline="아주아주 긴 헤드라인이 여기에 들어가면 잘려야 해요",
    )
    finalized = finalize_copy(draft, brief)
    result = finalized.draft
    assert finalized.violations == ()
    assert len(result.hashtags) == 5
    assert grapheme_count(result.caption) <= CaptionLength.SHORT.value and "🍓" not in result.caption
    assert result.caption.startswith(result.hook.rstrip("…")) and grapheme_count(result.hook) <= HOOK_MAX_GRAPHEMES
    assert grapheme_count(result.headline) <= 20


def test_finalize_keeps_only_facts_the_merchant_gave_and_reports_invented_ones() -> None:
    brief = Brief(keyword="딸기 주스", facts=MerchantFacts(price="5,500원"))
    draft = _draft(
        caption="딸기 주스 5,500원이에요. 오늘만 20% 할인!",
        facts_used=("5,500원", "20% 할인"),
    )
    finalized = finalize_copy(draft, brief)
    assert finalized.draft.facts_used == ("5,500원",)
    assert {v.text for v in finalized.violations} >= {"20%", "할인"}
    assert all(v.rule == "invented_fact" for v in finalized.violations)
