"""Rules every draft passes before it leaves the service, whichever backend wrote it."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import regex

from adgen_copywriter.domain import AdCopyDraft, Brief, EmojiLevel, RuleViolation
from adgen_copywriter.target_models import PromptProfile, profile_for

MAX_HASHTAGS = 5
HOOK_MAX_GRAPHEMES = 125
HEADLINE_MAX_GRAPHEMES = 20
ALT_TEXT_MAX_GRAPHEMES = 250
ELLIPSIS = "…"

# ── graphemes and emoji ───────────────────────────────────────────────────────────────────────

_GRAPHEME = regex.compile(r"\X")
_EMOJI = regex.compile(r"\p{Extended_Pictographic}|\p{Regional_Indicator}")


def graphemes(text: str) -> list[str]:
    """User-perceived characters: an emoji ZWJ family or a flag counts once, like Instagram does."""
    return _GRAPHEME.findall(text)


def grapheme_count(text: str) -> int:
    """Length as people see it."""
    return len(graphemes(text))


def is_emoji(grapheme: str) -> bool:
    """Whether one grapheme is (or starts as) a pictographic emoji or a flag."""
    return _EMOJI.match(grapheme) is not None


def emoji_count(text: str) -> int:
    """Emoji in the text, counting each ZWJ sequence or flag once."""
    return sum(1 for g in graphemes(text) if is_emoji(g))


def limit_emoji(text: str, level: EmojiLevel) -> str:
    """Drops emoji past the level's allowance, keeping the earliest ones."""
    kept: list[str] = []
    seen = 0
    for grapheme in graphemes(text):
        if is_emoji(grapheme):
            seen += 1
            if seen > level.value:
                continue
        kept.append(grapheme)
    return _tidy_spaces("".join(kept))


def truncate_graphemes(text: str, limit: int) -> str:
    """Cuts to at most `limit` graphemes, at a word boundary when one is near, ending with '…'."""
    parts = graphemes(text)
    if len(parts) <= limit:
        return text
    head = "".join(parts[: limit - 1]).rstrip()
    boundary = max(head.rfind(" "), head.rfind("\n"))
    if boundary >= len(head) * 2 // 3:
        head = head[:boundary].rstrip()
    return head.rstrip(" ,.·") + ELLIPSIS


_SENTENCE_OR_LINE_END = regex.compile(r"(?<=[.!?。~…])\s+|\n+")


def truncate_at_sentence(text: str, limit: int) -> str:
    """Keeps whole sentences or lines up to `limit` graphemes, line breaks intact; falls back to a word cut."""
    if grapheme_count(text) <= limit:
        return text
    kept = ""
    for boundary in _SENTENCE_OR_LINE_END.finditer(text):
        candidate = text[: boundary.start()].rstrip()
        if grapheme_count(candidate) > limit:
            break
        kept = candidate
    return kept if kept else truncate_graphemes(text, limit)


def _tidy_spaces(text: str) -> str:
    lines = [regex.sub(r"[ \t]{2,}", " ", line).strip() for line in text.split("\n")]
    return regex.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# ── hashtags ──────────────────────────────────────────────────────────────────────────────────

_NOT_HASHTAG_CHAR = regex.compile(r"[^\p{L}\p{N}\p{M}_]+")


def normalize_hashtag(tag: str) -> str:
    """Instagram's hashtag alphabet: letters, digits and underscores, no '#', no spaces."""
    return _NOT_HASHTAG_CHAR.sub("", unicodedata.normalize("NFC", tag))


def normalize_hashtags(tags: Iterable[str], limit: int = MAX_HASHTAGS) -> tuple[str, ...]:
    """Unique (case-insensitively), non-empty, at most `limit`, in the order given."""
    seen: set[str] = set()
    kept: list[str] = []
    for tag in tags:
        normalized = normalize_hashtag(tag)
        key = normalized.casefold()
        if normalized and key not in seen:
            seen.add(key)
            kept.append(normalized)
    return tuple(kept[:limit])


# ── banned food-advertising claims ────────────────────────────────────────────────────────────

_EXCLUSIVE = "an exclusive or superlative claim needs objective proof (표시광고법)"
_NATURAL = "'천연' and similar purity claims on food are restricted (식약처 고시)"
_SUPERFOOD = "'슈퍼푸드' is an unsubstantiated claim (식약처 고시)"
_ADDITIVE = "'무첨가' claims mislead when the additive is not allowed anyway (식약처 고시)"
_HEALTH = "disease, medicine-like or health claims are banned for ordinary food (식품표시광고법 제8조)"


@dataclass(frozen=True)
class BannedTerm:
    """A pattern food-ad law forbids, and why."""

    pattern: regex.Pattern[str]
    reason: str


def _terms(reason: str, *patterns: str) -> list[BannedTerm]:
    return [BannedTerm(regex.compile(p, regex.IGNORECASE), reason) for p in patterns]


BANNED_TERMS: tuple[BannedTerm, ...] = (
    *_terms(_EXCLUSIVE, r"최고", r"최상급?", r"최초", r"최대(?!한)", r"(?<!\d)\d{1,2}\s*위(?!치)", r"일위",
            r"넘버\s*원", r"\bno\.?\s*1\b", r"유일", r"독보적", r"\bbest\b", r"\bnumber\s*one\b"),
    *_terms(_NATURAL, r"천연", r"100\s*%\s*자연", r"무공해", r"\bnatural\b"),
    *_terms(_SUPERFOOD, r"슈퍼\s*푸드", r"\bsuper\s*food"),
    *_terms(_ADDITIVE, r"무첨가", r"무방부제", r"무색소", r"첨가물\s*(없|zero|제로|0)", r"\badditive[- ]free\b"),
    *_terms(_HEALTH, r"면역", r"다이어트", r"디톡스", r"해독", r"치료", r"예방", r"완치", r"질병", r"질환", r"항암",
            r"항산화", r"혈압", r"혈당", r"당뇨", r"콜레스테롤", r"체지방", r"체중\s*감량", r"살\s*빠", r"지방\s*분해",
            r"피로\s*회복", r"노화\s*방지", r"안티\s*에이징", r"염증", r"변비", r"소화\s*촉진", r"숙취\s*해소",
            r"건강\s*기능", r"약효", r"특효", r"만병", r"건강에\s*좋", r"몸에\s*좋", r"\bdetox", r"\bdiet\b",
            r"\bimmun", r"\bcures?\b", r"\bheal(s|ing)?\b", r"\banti-?aging\b", r"\bweight\s*loss\b"),
)  # fmt: skip


def find_banned_claims(text: str, field: str) -> list[RuleViolation]:
    """Every banned claim in the text, one violation per distinct term."""
    found: dict[str, RuleViolation] = {}
    for term in BANNED_TERMS:
        for match in term.pattern.finditer(text):
            found.setdefault(
                match.group(0).casefold(), RuleViolation("banned_claim", field, match.group(0), term.reason)
            )
    return list(found.values())


def strip_banned_terms(text: str) -> str:
    """The text without banned terms: the template uses it so a keyword cannot smuggle one in."""
    for term in BANNED_TERMS:
        text = term.pattern.sub(" ", text)
    return _tidy_spaces(text)


# ── invented facts: prices, promotions, origins, certifications ───────────────────────────────

_PRICE = regex.compile(r"(?:₩\s*)?\d[\d,.]*\s*(?:만\s*원|천\s*원|원|won\b)|₩\s*\d[\d,.]*", regex.IGNORECASE)
_PERCENT = regex.compile(r"\d+(?:\.\d+)?\s*(?:%|퍼센트|프로)")
_BUNDLE = regex.compile(r"\d\s*\+\s*\d")
_PROMOTION_WORDS = regex.compile(
    r"할인|세일|반값|무료|공짜|증정|사은품|쿠폰|적립|특가|이벤트|프로모션|\bsale\b|\bfree\b"
)
_ORIGIN_WORDS = regex.compile(
    r"(?:국내|국|수입|외국|미국|중국|칠레|페루|베트남|태국|필리핀|브라질|콜롬비아|에티오피아|케냐|일본|뉴질랜드|호주|"
    r"프랑스|이탈리아|스페인|멕시코|과테말라)산|제주|논산|성주|청송|보성|하동|담양|나주|고창|의성|충주|영동|상주|산청|"
    r"해남|완도|고흥|예가체프|시다모|하와이|코나|산지\s*직송|직송|유기농|무농약|친환경|\bhaccp\b|\borganic\b",
    regex.IGNORECASE,
)

_FACT_PATTERNS: tuple[tuple[regex.Pattern[str], str], ...] = (
    (_PRICE, "a price the merchant did not give"),
    (_PERCENT, "a percentage the merchant did not give"),
    (_BUNDLE, "a bundle offer the merchant did not give"),
    (_PROMOTION_WORDS, "a promotion the merchant did not give"),
    (_ORIGIN_WORDS, "an origin or certification the merchant did not give"),
)


def _squash(text: str) -> str:
    return regex.sub(r"[\s,]", "", unicodedata.normalize("NFC", text)).casefold()


def find_invented_facts(text: str, field: str, vouched: Sequence[str]) -> list[RuleViolation]:
    """Prices, promotions and origins in the text that no vouched-for text (facts, keyword) contains."""
    sources = _squash(" ".join(vouched))
    found: dict[str, RuleViolation] = {}
    for pattern, reason in _FACT_PATTERNS:
        for match in pattern.finditer(text):
            if _squash(match.group(0)) not in sources:
                found.setdefault(match.group(0), RuleViolation("invented_fact", field, match.group(0), reason))
    return list(found.values())


# ── image prompts: token estimate, fitting, positive phrasing ─────────────────────────────────

_TOKEN_PIECE = regex.compile(r"[A-Za-z]+|\d|\s+|\X")


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate of Qwen-family BPE tokens, so a fitted prompt is never cut.

    English words cost ceil(letters / 3) (real BPE: about one token per 4-5 letters), digits
    one each (Qwen splits numbers into digits), whitespace nothing (BPE merges it into the
    next word, which already costs at least one), Hangul/CJK two per character, emoji four
    per grapheme and any other symbol one.
    """
    total = 0
    for piece in _TOKEN_PIECE.findall(text):
        if piece[0].isspace():
            continue
        if piece.isascii() and piece.isalpha():
            total += math.ceil(len(piece) / 3)
        elif is_emoji(piece):
            total += 4
        elif regex.match(r"[\p{Hangul}\p{Han}\p{Hiragana}\p{Katakana}]", piece):
            total += 2 * len(piece)
        else:
            total += 1
    return total


def fit_prompt(prompt: str, budget_tokens: int) -> str:
    """Trims whole sentences from the end until the prompt fits; the first (the subject) stays."""
    if estimate_tokens(prompt) <= budget_tokens:
        return prompt
    sentences = regex.split(r"(?<=[.!?;])\s+", prompt.strip())
    if estimate_tokens(sentences[0]) > budget_tokens:
        return _cut_words(sentences[0], budget_tokens)
    return " ".join(_longest_prefix(sentences, budget_tokens))


def _cut_words(text: str, budget_tokens: int) -> str:
    words = _longest_prefix(text.split(), budget_tokens - estimate_tokens("."))
    return " ".join(words).rstrip(",;:") + "."


def _longest_prefix(pieces: list[str], budget_tokens: int) -> list[str]:
    """The leading pieces that fit; estimates add up across spaces, so each piece is counted once."""
    kept: list[str] = []
    for piece in pieces:
        budget_tokens -= estimate_tokens(piece)
        if budget_tokens < 0:
            break
        kept.append(piece)
    return kept


_NEGATION = regex.compile(r"\b(no|not|without|avoid|never|don't|do not|nothing|none)\b", regex.IGNORECASE)
_HANGUL_RUN = regex.compile(r"[\p{Hangul}]+")


def drawable_prompt(prompt: str, profile: PromptProfile) -> str:
    """What an image model can use: no Hangul (it cannot draw it) and, for CFG-free models, no
    negated clauses (they read "no people" as "people")."""
    text = _HANGUL_RUN.sub("", prompt)
    text = regex.sub(r"[\"'“”‘’]\s*[\"'“”‘’]", "", text)
    if not profile.reads_negative_prompt:
        clauses = regex.split(r"(?<=[,.;])\s+", text)
        text = " ".join(c for c in clauses if not _NEGATION.search(c))
    return _tidy_spaces(regex.sub(r"\s+([,.;])", r"\1", text))


# ── the whole pass ────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class FinalizedCopy:
    """A draft with every safe fix applied, and the violations no fix can make safe."""

    draft: AdCopyDraft
    violations: tuple[RuleViolation, ...]


def finalize_copy(draft: AdCopyDraft, brief: Brief) -> FinalizedCopy:
    """Applies the deterministic fixes, then reports banned claims and invented facts.

    Fixed here (safe): hashtags normalised, deduplicated and capped at 5; emoji capped by level;
    caption, hook, headline and alt text cut to their budgets; prompts made drawable and fitted
    to the target model's token budget; the hook made the caption's real opening; facts_used
    limited to facts the merchant actually gave. Reported (unsafe to fix silently): banned
    claims and invented prices, promotions and origins.
    """
    profile = profile_for(brief.target_model_id)
    caption = truncate_at_sentence(limit_emoji(draft.caption, brief.emoji_level), brief.caption_length.value)
    hook = _hook_for(caption, limit_emoji(draft.hook, brief.emoji_level))
    prompts = tuple(
        dict.fromkeys(fit_prompt(drawable_prompt(p, profile), profile.prompt_token_budget) for p in draft.image_prompts)
    )
    given = brief.facts.all_facts()
    fixed = replace(
        draft,
        image_prompts=tuple(p for p in prompts if p)[: brief.variant_count],
        caption=caption,
        hook=hook,
        hashtags=normalize_hashtags(draft.hashtags),
        headline=truncate_graphemes(limit_emoji(draft.headline.strip(), EmojiLevel.NONE), HEADLINE_MAX_GRAPHEMES),
        alt_text=truncate_graphemes(draft.alt_text.strip(), ALT_TEXT_MAX_GRAPHEMES),
        facts_used=tuple(dict.fromkeys(f for f in draft.facts_used if f in given)),
    )
    return FinalizedCopy(fixed, tuple(check_copy(fixed, brief)))


def check_copy(draft: AdCopyDraft, brief: Brief) -> list[RuleViolation]:
    """Banned claims and invented facts in every Korean field and hashtag."""
    vouched = [*brief.facts.all_facts(), brief.keyword]
    fields = {
        "caption": draft.caption,
        "hook": draft.hook,
        "headline": draft.headline,
        "alt_text": draft.alt_text,
        **{f"hashtags[{i}]": tag for i, tag in enumerate(draft.hashtags)},
    }
    violations: list[RuleViolation] = []
    for field, text in fields.items():
        violations += find_banned_claims(text, field)
        violations += find_invented_facts(text, field, vouched)
    return violations


def _hook_for(caption: str, proposed: str) -> str:
    """The hook is what shows before "more", so it must be the caption's own opening."""
    proposed = proposed.strip()
    if proposed and caption.startswith(proposed) and grapheme_count(proposed) <= HOOK_MAX_GRAPHEMES:
        return proposed
    first_paragraph = caption.split("\n", 1)[0].strip()
    return truncate_at_sentence(first_paragraph, HOOK_MAX_GRAPHEMES)
