"""The offline backend: deterministic, rule-based copy and prompts, honest that it is a template."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import regex

from adgen_copywriter.domain import (
    AdCopyDraft,
    BackendKind,
    Brief,
    CaptionLength,
    EditInstruction,
    EditRequest,
    EmojiLevel,
    Placement,
    Provenance,
    Tone,
)
from adgen_copywriter.glossary import GLOSSARY, TermKind, Understood, covers, understand
from adgen_copywriter.rules import grapheme_count, normalize_hashtags, strip_banned_terms
from adgen_copywriter.target_models import PromptProfile, PromptStyle, profile_for

TEMPLATE_MODEL = "offline-template-v1"
PROVENANCE = Provenance(BackendKind.TEMPLATE, TEMPLATE_MODEL)

# ── Korean grammar ────────────────────────────────────────────────────────────────────────────


def _final_consonant(word: str) -> int | None:
    """The last letter's final consonant index (0 = none), or None when that letter is not Hangul.

    Trailing emoji and punctuation are skipped: "딸기 라떼 🍓" takes the particle of "떼".
    """
    letters = regex.findall(r"[\p{L}\p{N}]", word)
    if not letters or not regex.match(r"[가-힣]", letters[-1]):
        return None
    return (ord(letters[-1]) - 0xAC00) % 28


def josa(word: str, after_consonant: str, after_vowel: str) -> str:
    """The word with the particle its last syllable calls for ("딸기를", "주스를", "빙수로")."""
    final = _final_consonant(word)
    if after_vowel == "로":
        if final is None:
            return f"{word}(으)로"
        return f"{word}{'으로' if final not in (0, 8) else '로'}"
    if final is None:
        return f"{word}{after_consonant}({after_vowel})"
    return f"{word}{after_consonant if final else after_vowel}"


# ── image prompts ─────────────────────────────────────────────────────────────────────────────

_SEASON_MOODS = {
    "summer": "Bright summer daylight, beads of condensation, crushed ice and a breezy, refreshing mood",
    "winter": "A cozy winter mood with a warm tungsten glow, soft knit textures and a gentle curl of steam",
    "spring": "Fresh spring morning light with soft pastel tones and a few scattered blossoms",
    "autumn": "Warm autumn afternoon light with amber tones and a few fallen maple leaves",
    "christmas": "A festive holiday mood with warm fairy-light bokeh and deep red and green accents",
    "cherry blossom": "Pale pink cherry blossom petals drifting through soft spring light",
}
_DEFAULT_MOOD = "An inviting cafe atmosphere with soft natural window light and warm, fresh colours"
# Around a product photo the mood must not describe the product (its ice, condensation or steam).
_SCENE_MOODS = {
    **_SEASON_MOODS,
    "summer": "Bright summer daylight with cool, fresh colours and a breezy, refreshing mood",
    "winter": "A cozy winter mood with a warm tungsten glow and soft knit textures in the background",
}

_FRAMES = {
    Placement.FEED_SQUARE: "Square 1:1 frame with clean, uncluttered negative space in the upper third for a headline",
    Placement.FEED_PORTRAIT: (
        "Vertical 4:5 frame with the subject inside the central 3:4 area and clean, uncluttered negative "
        "space in the upper third for a headline"
    ),
    Placement.STORY: (
        "Tall 9:16 vertical frame with the subject in the middle third, calm plain background along the top "
        "and bottom edges, and clean negative space in the upper third for a headline"
    ),
}


@dataclass(frozen=True)
class Composition:
    """One variant's way of showing the product, or (`scene`, `scene_camera`) of framing the merchant's own
    product photo: the setting alone, with open space where the photographed product goes."""

    name_ko: str
    write: Callable[[str, str], str]  # (subject with article, setting details) -> opening sentence
    camera: str
    finish: str
    scene: str
    scene_camera: str


COMPOSITIONS: tuple[Composition, ...] = (
    Composition(
        "클로즈업",
        lambda subject, garnish: (
            f"A hero close-up of {subject}{garnish}, filling the lower two-thirds of the frame on a light oak "
            "cafe counter"
        ),
        "Shot at eye level with an 85mm lens at f/2.8, shallow depth of field, crisp focus on the product and a "
        "softly blurred cafe interior behind",
        "Fresh, appetizing commercial food photography with true-to-life colours",
        "A light oak cafe counter filling the lower two-thirds of the frame, with a clear, open spot at its centre "
        "where the product stands",
        "Shot at eye level with an 85mm lens at f/2.8, shallow depth of field, the open spot in crisp focus and a "
        "softly blurred cafe interior behind",
    ),
    Composition(
        "탑뷰",
        lambda subject, garnish: (
            f"A top-down flat lay of {subject}{garnish}, centred on a pale linen tablecloth with a small ceramic "
            "dish and a folded napkin arranged around it"
        ),
        "Shot directly overhead with even, diffused daylight and soft shadows",
        "Clean editorial food styling with vivid natural colours",
        "A top-down view of a pale linen tablecloth with a small ceramic dish and a folded napkin arranged around a "
        "clear, open space at its centre where the product lies",
        "Shot directly overhead with even, diffused daylight and soft shadows",
    ),
    Composition(
        "라이프스타일",
        lambda subject, garnish: (
            f"A lifestyle scene on a sunlit cafe table by a large window: {subject}{garnish}, a hand gently "
            "reaching for it, with an open notebook and a small potted plant nearby"
        ),
        "Shot at a 45-degree angle with a 35mm lens in natural light with warm tones",
        "Authentic, candid Instagram lifestyle photography",
        "A sunlit cafe table by a large window, an open notebook and a small potted plant at its edges and a clear, "
        "open space at its centre where the product stands",
        "Shot at a 45-degree angle with a 35mm lens in natural light with warm tones",
    ),
    Composition(
        "미니멀 스튜디오",
        lambda subject, garnish: (
            f"A minimal studio shot of {subject}{garnish}, centred on a seamless pastel backdrop that echoes its "
            "colours, casting one soft shadow"
        ),
        "Shot straight on with a 100mm lens under a large soft box, crisp edges and smooth gradients",
        "Modern, premium product photography",
        "A seamless pastel backdrop with a smooth, low plinth at the centre of the frame, its clear top open for "
        "the product",
        "Shot straight on with a 100mm lens under a large soft box, crisp edges, smooth gradients and one soft shadow",
    ),
)
# Around a product photo: the finish of the scene alone, true to the photographed product's colours.
_SCENE_FINISH = "Clean commercial product photography setting with true-to-life colours and realistic contact shadows"


def _with_article(phrase: str) -> str:
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def describe_subject(understood: Understood, *, default_head: str = "cafe treat") -> tuple[str, str]:
    """English subject phrase (with article) and a garnish clause, from what the glossary read.

    Latin-script words the merchant typed stay together as a name ("Dirty Chai"); they are the
    product when their last word names one, a modifier otherwise.
    """
    latin = " ".join(understood.latin_words)
    latin_is_product = bool(latin) and understood.latin_words[-1].lower() in _ENGLISH_PRODUCT_WORDS
    products = understood.of_kind(TermKind.PRODUCT) + ([latin] if latin_is_product else [])
    modifiers = [
        *understood.of_kind(TermKind.TEMPERATURE),
        *understood.of_kind(TermKind.STYLE),
        *([latin] if latin and not latin_is_product else []),
        *understood.of_kind(TermKind.FLAVOR),
    ]
    if not products and not modifiers:
        return "an appetizing signature cafe drink or dessert", ""
    head = products[0] if products else default_head
    subject = " ".join(part for part in [*dict.fromkeys(modifiers), head] if part)
    if len(products) > 1:
        subject += " served with " + " and ".join(_with_article(p) for p in products[1:])
    looks = [t.look for t in understood.terms if t.kind is TermKind.FLAVOR and t.look]
    garnish = f", garnished with {looks[0]}" if looks else ""
    return _with_article(subject), garnish


_ENGLISH_PRODUCT_WORDS = frozenset(
    {t.english for t in GLOSSARY.values() if t.kind is TermKind.PRODUCT}
    | {"ade", "tea", "coffee", "latte", "juice", "cake", "smoothie", "dessert", "drink", "chai", "mocha", "bagel"}
)


def write_image_prompt(understood: Understood, composition: Composition, brief: Brief, profile: PromptProfile) -> str:
    """One prompt: subject → setting and mood → camera → frame and headline space → style. With a product
    photo: the setting and its open space → mood → camera → frame → style, never the product itself."""
    seasons = understood.of_kind(TermKind.SEASON)
    if brief.product_photo:
        mood = _SCENE_MOODS.get(seasons[0], _DEFAULT_MOOD) if seasons else _DEFAULT_MOOD
        sentences = [composition.scene, mood, composition.scene_camera, _FRAMES[brief.placement], _SCENE_FINISH]
    else:
        subject, garnish = describe_subject(understood)
        mood = _SEASON_MOODS.get(seasons[0], _DEFAULT_MOOD) if seasons else _DEFAULT_MOOD
        sentences = [composition.write(subject, garnish), mood, composition.camera, _FRAMES[brief.placement],
                     composition.finish]  # fmt: skip
    if profile.style is PromptStyle.DENSE:
        return _dense_paragraph(sentences)
    return " ".join(f"{s}." for s in sentences)


def _dense_paragraph(sentences: list[str]) -> str:
    """Z-Image reads one comma-rich descriptive paragraph best."""
    rest = [s[:1].lower() + s[1:] for s in sentences[1:]]
    return ", ".join([sentences[0], *rest]) + "."


# ── Korean copy ───────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Voice:
    """How one tone opens, talks and closes; {kw} is the keyword, {shop} the shop."""

    hook: Callable[[str], str]
    body: tuple[str, ...]
    long_body: tuple[str, ...]
    closing: str
    headline: Callable[[str], str]
    emoji: tuple[str, ...]


VOICES: dict[Tone, Voice] = {
    Tone.FRIENDLY: Voice(
        hook=lambda kw: f"오늘은 {josa(kw, '으', '로')} 기분 전환해요!",
        body=("{at_shop}정성껏 준비한 {kw_obj} 만나 보세요.", "가볍게 들러서 편하게 즐겨 주세요."),
        long_body=("친구와 함께 와도, 혼자 쉬어 가도 좋아요.", "주문할 때 편하게 물어봐 주세요."),
        closing="오늘 들러 주실 거죠?",
        headline=lambda core: f"{core} 어때요?",
        emoji=("😊", "✨", "💛"),
    ),
    Tone.EMOTIONAL: Voice(
        hook=lambda kw: f"{josa(kw, '과', '와')} 함께하는 작은 여유를 느껴 보세요.",
        body=("바쁜 하루 사이, 잠시 쉬어 가도 괜찮아요.", "{at_shop}천천히 머물다 가세요."),
        long_body=(
            "창가에 앉아 좋아하는 노래를 들으며 한 모금, 한 입 음미해 보세요.",
            "오늘의 기분을 조금 더 말랑하게 만들어 줄 거예요.",
        ),
        closing="오늘의 여유, 여기서 시작해요.",
        headline=lambda core: f"오늘의 {core}",
        emoji=("🌿", "☁️", "🤍"),
    ),
    Tone.PREMIUM: Voice(
        hook=lambda kw: f"공들여 완성한 {josa(kw, '을', '를')} 소개해요.",
        body=("{at_shop}재료와 맛의 균형을 세심하게 다듬었어요.", "천천히 음미할수록 깊이가 느껴져요."),
        long_body=(
            "차분한 공간에서 온전히 나만을 위한 시간을 보내 보세요.",
            "소중한 분과 함께하는 자리에도 잘 어울려요.",
        ),
        closing="특별한 시간을 누려 보세요.",
        headline=lambda core: core,
        emoji=("✨", "🥂", "🤎"),
    ),
    Tone.PLAYFUL: Voice(
        hook=lambda kw: f"{kw} 등장! 이건 못 참죠?",
        body=("한 입 먹으면 기분이 말랑말랑해지는 마법이에요.", "{at_shop}기다리고 있을게요, 어서 오세요!"),
        long_body=("사진 찍는 건 필수, 나눠 먹는 건 선택이에요.", "오늘 고민은 메뉴판 앞에서 끝내요."),
        closing="친구 태그하고 같이 가요!",
        headline=lambda core: f"{core} 출동!",
        emoji=("🤤", "🎉", "😆"),
    ),
    Tone.INFORMATIVE: Voice(
        hook=lambda kw: f"{josa(kw, '을', '를')} 소개해요.",
        body=("{at_shop}주문하실 수 있어요.", "메뉴판에서 자세히 확인해 보세요."),
        long_body=("메뉴 구성은 매장 사정에 따라 달라질 수 있어요.", "궁금한 점은 직원에게 편하게 물어봐 주세요."),
        closing="자세한 내용은 매장에 문의해 주세요.",
        headline=lambda core: f"{core} 안내",
        emoji=("📌", "☕", "🗓️"),
    ),
}

_FOOD_EMOJI = {
    "strawberry": "🍓",
    "mango": "🥭",
    "peach": "🍑",
    "watermelon": "🍉",
    "lemon": "🍋",
    "coffee": "☕",
    "latte": "☕",
    "cake": "🍰",
    "chocolate": "🍫",
    "bingsu shaved-ice dessert": "🍧",
    "matcha": "🍵",
}


def _display_keyword(keyword: str) -> str:
    cleaned = strip_banned_terms(" ".join(unicodedata.normalize("NFC", keyword).split()))
    return cleaned or "오늘의 메뉴"


def _core(keyword: str) -> str:
    """The keyword short enough for a headline: the last words that fit in 9 graphemes."""
    words = keyword.split()
    core = words[-1]
    for word in reversed(words[:-1]):
        if grapheme_count(f"{word} {core}") > 9:
            break
        core = f"{word} {core}"
    return core


def _fact_lines(brief: Brief) -> list[tuple[str, str]]:
    """(line, verbatim fact) pairs for every fact the merchant gave."""
    facts = brief.facts
    lines = [
        (f"가격: {facts.price}", facts.price),
        (f"재료: {facts.origin}", facts.origin),
        (f"혜택: {facts.promotion}", facts.promotion),
        *[(extra, extra) for extra in facts.extra],
    ]
    return [(f"· {line}", fact) for line, fact in lines if fact]


def _emoji_for(voice: Voice, understood: Understood, level: EmojiLevel) -> list[str]:
    if level is EmojiLevel.NONE:
        return []
    food = [_FOOD_EMOJI[t.english] for t in understood.terms if t.english in _FOOD_EMOJI]
    pool = list(dict.fromkeys([*food[:1], *voice.emoji]))
    return pool[:2] if level is EmojiLevel.LIGHT else pool


def write_caption(brief: Brief, keyword: str, understood: Understood) -> tuple[str, str, tuple[str, ...]]:
    """(caption, hook, facts used): hook first, then whatever fits the budget in priority order."""
    voice = VOICES[brief.tone]
    emoji = _emoji_for(voice, understood, brief.emoji_level)
    shop = brief.facts.shop_name
    fill = {"kw": keyword, "kw_obj": josa(keyword, "을", "를"), "at_shop": f"{shop}에서 " if shop else ""}
    hook = voice.hook(keyword) + (f" {emoji[0]}" if emoji else "")
    body = [line.format(**fill) for line in voice.body]
    if brief.caption_length is CaptionLength.LONG:
        body += list(voice.long_body)
    if brief.emoji_level is EmojiLevel.RICH:
        body = [f"{line} {emoji[(i + 2) % len(emoji)]}" for i, line in enumerate(body)]
    closing = voice.closing + (f" {emoji[1 % len(emoji)]}" if emoji else "")
    facts = _fact_lines(brief)
    # Priority when the budget is tight: hook, facts, closing, body lines. The AI disclosure is the
    # orchestrator's option (the operator serving the ad carries that duty), so none is added here.
    candidates: list[tuple[str, str, str]] = [("facts", line, fact) for line, fact in facts]
    candidates += [("closing", closing, ""), *[("body", line, "") for line in body]]
    chosen: list[tuple[str, str, str]] = []
    for candidate in candidates:
        trial = _assemble(hook, [*chosen, candidate])
        if grapheme_count(trial) <= brief.caption_length.value:
            chosen.append(candidate)
    caption = _assemble(hook, chosen)
    shop_used = (shop,) if shop and shop in caption else ()
    return caption, hook, (*shop_used, *(fact for kind, _, fact in chosen if kind == "facts"))


def _assemble(hook: str, parts: list[tuple[str, str, str]]) -> str:
    """Canonical order whatever the priority: hook / body / facts / closing."""
    order = ("body", "facts", "closing")
    paragraphs = [hook]
    for kind in order:
        lines = [line for k, line, _ in parts if k == kind]
        if lines:
            paragraphs.append("\n".join(lines) if kind == "facts" else " ".join(lines))
    return "\n\n".join(paragraphs)


def write_hashtags(keyword: str, brief: Brief, understood: Understood) -> tuple[str, ...]:
    """Keyword, shop, season and two evergreen cafe tags; normalised and capped at 5 by rules."""
    words = keyword.split()
    squashed = "".join(words)
    main = squashed if grapheme_count(squashed) <= 15 else "".join(words[-2:])
    seasons = {"summer": "여름카페", "winter": "겨울카페", "spring": "봄카페", "autumn": "가을카페"}
    season_tags = [seasons[s] for s in understood.of_kind(TermKind.SEASON) if s in seasons]
    return normalize_hashtags([main, brief.facts.shop_name, *season_tags, "카페스타그램", "오늘의메뉴", "카페추천"])


# ── edit instructions (Qwen-Image-Edit style) ─────────────────────────────────────────────────

KEEP_SCENE = "keep the background, lighting, camera angle and framing unchanged"
KEEP_PRODUCT = "keep the product, its position, the lighting on it, the camera angle and framing unchanged"

_REPLACE = regex.compile(r"^(?P<a>.+?)\s*(?:을|를)\s*(?P<b>.+?)\s*(?:으로|로)\s*(?:바꿔|바꾸|변경|교체|대체)")
_ADD = regex.compile(r"^(?P<b>.+?)\s*(?:을|를)?\s*(?:추가|넣어|올려|얹어|곁들여)")
_REMOVE = regex.compile(r"^(?P<a>.+?)\s*(?:을|를)?\s*(?:빼|지워|없애|제거|치워)")
_BRIGHTER = regex.compile(r"밝게|화사하게")


def _english_noun(phrase: str) -> tuple[str, str] | None:
    """(English noun phrase, what it looks like) when the glossary reads the whole phrase, else None."""
    understood = understand(phrase)
    if understood.is_empty or not covers(phrase):
        return None
    subject, _ = describe_subject(understood, default_head="")
    noun = subject.split(" ", 1)[1]
    looks = [t.look for t in understood.terms if t.look]
    return noun, ", ".join(dict.fromkeys(looks))


def _background_look(phrase: str) -> str | None:
    understood = understand(phrase)
    seasons = understood.of_kind(TermKind.SEASON)
    if seasons:
        return f"a {seasons[0]} cafe setting: {_SEASON_MOODS.get(seasons[0], _DEFAULT_MOOD).lower()}"
    noun = _english_noun(phrase)
    return f"a {noun[0]} setting" if noun else None


def write_edit_instruction_text(request: str) -> str:
    """Korean requests in the common shapes become Qwen-style instructions; English passes through."""
    text = " ".join(unicodedata.normalize("NFC", request).split())
    if not regex.search(r"\p{Hangul}", text):
        sentence = text.rstrip(" .")
        sentence = sentence[:1].upper() + sentence[1:]
        return f"{sentence}; {KEEP_SCENE}." if "keep" not in sentence.lower() else f"{sentence}."
    if match := _REPLACE.match(text):
        target, wanted = match.group("a"), match.group("b")
        if target.strip() == "배경":
            background = _background_look(wanted) or f'the setting the merchant describes as "{wanted}"'
            return f"Replace the background with {background}; {KEEP_PRODUCT}."
        old, new = _english_noun(target), _english_noun(wanted)
        if old and new:
            look = f": {new[1]}, same size and position" if new[1] else ", same size and position"
            return f"Replace the {old[0]} with {_with_article(new[0])}{look}; {KEEP_SCENE}."
    elif (match := _REMOVE.match(text)) and (old := _english_noun(match.group("a"))):
        return f"Remove the {old[0]} and fill its area with the surrounding surface; {KEEP_SCENE}."
    elif (match := _ADD.match(text)) and (new := _english_noun(match.group("b"))):
        thing = new[1] or _with_article(new[0])
        return f"Add {thing} beside the main product, matching its lighting; {KEEP_SCENE}."
    elif _BRIGHTER.search(text):
        return f"Make the photo brighter and fresher with soft, natural daylight; {KEEP_SCENE} otherwise."
    # The edit model's Qwen2.5-VL encoder reads Korean, so an unmatched request goes through quoted.
    keep = KEEP_PRODUCT if "배경" in text else KEEP_SCENE  # Never ask to keep what the merchant wants changed.
    return f'Edit the photo as the merchant asks: "{text}"; {keep}.'


# ── the backend ───────────────────────────────────────────────────────────────────────────────


class TemplateBackend:
    """Deterministic offline copywriter: same brief, same copy. No language model is involved."""

    async def write_copy(self, brief: Brief) -> AdCopyDraft:
        keyword = _display_keyword(brief.keyword)
        understood = understand(keyword)
        profile = profile_for(brief.target_model_id)
        prompts = tuple(
            write_image_prompt(understood, composition, brief, profile)
            for composition in COMPOSITIONS[: brief.variant_count]
        )
        caption, hook, facts_used = write_caption(brief, keyword, understood)
        first = COMPOSITIONS[0].name_ko
        made = "매장 상품 사진에 AI로 배경을 만든" if brief.product_photo else "AI로 생성한"
        return AdCopyDraft(
            image_prompts=prompts,
            caption=caption,
            hook=hook,
            hashtags=write_hashtags(keyword, brief, understood),
            headline=VOICES[brief.tone].headline(_core(keyword)),
            alt_text=f"{made} {keyword} 광고 이미지예요. {first} 구도이고, 위쪽에 제목을 넣을 여백이 있어요.",
            facts_used=facts_used,
            provenance=PROVENANCE,
        )

    async def write_edit_instruction(self, request: EditRequest) -> EditInstruction:
        return EditInstruction(write_edit_instruction_text(request.request), PROVENANCE)

    async def aclose(self) -> None:
        """Nothing to release."""
