"""A small Korean→English cafe glossary, so offline prompts name the product in English."""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass

import regex

from adgen_copywriter.rules import graphemes, is_emoji


class TermKind(enum.Enum):
    """What a term contributes to the picture."""

    FLAVOR = "flavor"  # strawberry, matcha: what the product tastes of.
    PRODUCT = "product"  # juice, latte: the head noun.
    STYLE = "style"  # fresh-fruit, handmade: how it is made.
    SEASON = "season"  # summer: the mood of the setting.
    TEMPERATURE = "temperature"  # iced, hot.


@dataclass(frozen=True)
class Term:
    """One glossary entry: the English words and, for the edit model, what the thing looks like."""

    english: str
    kind: TermKind
    look: str = ""


GLOSSARY: dict[str, Term] = {
    # flavours and ingredients
    "딸기": Term("strawberry", TermKind.FLAVOR, "glossy red strawberries"),
    "망고": Term("mango", TermKind.FLAVOR, "golden mango cubes"),
    "바나나": Term("banana", TermKind.FLAVOR, "creamy banana slices"),
    "블루베리": Term("blueberry", TermKind.FLAVOR, "plump deep-blue blueberries"),
    "복숭아": Term("peach", TermKind.FLAVOR, "blush-pink peach slices"),
    "수박": Term("watermelon", TermKind.FLAVOR, "bright red watermelon with green rind"),
    "레몬": Term("lemon", TermKind.FLAVOR, "sunny yellow lemon wheels"),
    "자몽": Term("grapefruit", TermKind.FLAVOR, "ruby grapefruit segments"),
    "청포도": Term("green grape", TermKind.FLAVOR, "translucent green grapes"),
    "포도": Term("grape", TermKind.FLAVOR, "deep purple grapes"),
    "유자": Term("yuzu", TermKind.FLAVOR, "bright yellow yuzu peel"),
    "오렌지": Term("orange", TermKind.FLAVOR, "juicy orange segments"),
    "키위": Term("kiwi", TermKind.FLAVOR, "vivid green kiwi slices"),
    "체리": Term("cherry", TermKind.FLAVOR, "dark glossy cherries"),
    "초코": Term("chocolate", TermKind.FLAVOR, "rich dark chocolate"),
    "초콜릿": Term("chocolate", TermKind.FLAVOR, "rich dark chocolate"),
    "녹차": Term("green tea", TermKind.FLAVOR, "vivid green matcha"),
    "말차": Term("matcha", TermKind.FLAVOR, "vivid green matcha"),
    "바닐라": Term("vanilla", TermKind.FLAVOR, "cream with vanilla bean flecks"),
    "카라멜": Term("caramel", TermKind.FLAVOR, "amber caramel drizzle"),
    "캐러멜": Term("caramel", TermKind.FLAVOR, "amber caramel drizzle"),
    "흑당": Term("brown sugar", TermKind.FLAVOR, "dark brown-sugar syrup streaks"),
    "치즈": Term("cheese", TermKind.FLAVOR, "creamy cheese layer"),
    "크림": Term("cream", TermKind.FLAVOR, "soft whipped cream"),
    "요거트": Term("yogurt", TermKind.FLAVOR, "thick white yogurt"),
    "팥": Term("sweet red bean", TermKind.FLAVOR, "glossy sweet red beans"),
    "인절미": Term("injeolmi roasted soybean", TermKind.FLAVOR, "golden roasted soybean powder"),
    "고구마": Term("sweet potato", TermKind.FLAVOR, "golden sweet potato"),
    "단호박": Term("kabocha pumpkin", TermKind.FLAVOR, "bright orange kabocha"),
    "밤": Term("chestnut", TermKind.FLAVOR, "glazed chestnuts"),
    "꿀": Term("honey", TermKind.FLAVOR, "golden honey drizzle"),
    "민트": Term("mint", TermKind.FLAVOR, "fresh mint leaves"),
    "생강": Term("ginger", TermKind.FLAVOR, "fresh ginger slices"),
    # products
    "주스": Term("juice", TermKind.PRODUCT, "in a tall clear glass"),
    "쥬스": Term("juice", TermKind.PRODUCT, "in a tall clear glass"),
    "라떼": Term("latte", TermKind.PRODUCT, "creamy milk layered over it, in the same cup"),
    "커피": Term("coffee", TermKind.PRODUCT, "dark coffee in the same cup"),
    "아메리카노": Term("americano", TermKind.PRODUCT, "deep brown americano"),
    "에스프레소": Term("espresso", TermKind.PRODUCT, "espresso with golden crema"),
    "카푸치노": Term("cappuccino", TermKind.PRODUCT, "cappuccino with thick milk foam"),
    "콜드브루": Term("cold brew coffee", TermKind.PRODUCT, "dark cold brew over ice"),
    "에이드": Term("sparkling ade", TermKind.PRODUCT, "fizzy soda with ice"),
    "스무디": Term("smoothie", TermKind.PRODUCT, "thick blended smoothie"),
    "프라페": Term("frappé", TermKind.PRODUCT, "blended icy frappé"),
    "밀크티": Term("milk tea", TermKind.PRODUCT, "creamy milk tea"),
    "버블티": Term("bubble tea", TermKind.PRODUCT, "milk tea with tapioca pearls"),
    "차": Term("tea", TermKind.PRODUCT, "clear amber tea"),
    "티": Term("tea", TermKind.PRODUCT, "clear amber tea"),
    "청": Term("fruit syrup preserve", TermKind.PRODUCT, "fruit preserved in syrup in a glass jar"),
    "케이크": Term("cake", TermKind.PRODUCT, "a layered cake slice"),
    "케익": Term("cake", TermKind.PRODUCT, "a layered cake slice"),
    "빙수": Term("bingsu shaved-ice dessert", TermKind.PRODUCT, "a mound of fluffy shaved ice"),
    "와플": Term("waffle", TermKind.PRODUCT, "a golden waffle"),
    "크로플": Term("croffle", TermKind.PRODUCT, "a crisp croissant waffle"),
    "마카롱": Term("macaron", TermKind.PRODUCT, "pastel macarons"),
    "쿠키": Term("cookie", TermKind.PRODUCT, "chunky cookies"),
    "스콘": Term("scone", TermKind.PRODUCT, "a crumbly scone"),
    "베이글": Term("bagel", TermKind.PRODUCT, "a chewy bagel"),
    "크루아상": Term("croissant", TermKind.PRODUCT, "a flaky croissant"),
    "샌드위치": Term("sandwich", TermKind.PRODUCT, "a stacked sandwich"),
    "타르트": Term("tart", TermKind.PRODUCT, "a glazed tart"),
    "푸딩": Term("pudding", TermKind.PRODUCT, "a wobbly pudding"),
    "아이스크림": Term("ice cream", TermKind.PRODUCT, "scoops of ice cream"),
    "젤라또": Term("gelato", TermKind.PRODUCT, "scoops of gelato"),
    "빵": Term("bread", TermKind.PRODUCT, "freshly baked bread"),
    "디저트": Term("dessert", TermKind.PRODUCT, "a plated dessert"),
    "음료": Term("drink", TermKind.PRODUCT, "a drink in a clear glass"),
    "샐러드": Term("salad", TermKind.PRODUCT, "a bowl of crisp salad"),
    "브런치": Term("brunch plate", TermKind.PRODUCT, "a generous brunch plate"),
    "토스트": Term("toast", TermKind.PRODUCT, "golden toast"),
    "팬케이크": Term("pancakes", TermKind.PRODUCT, "a stack of fluffy pancakes"),
    "도넛": Term("donut", TermKind.PRODUCT, "a glazed donut"),
    "머핀": Term("muffin", TermKind.PRODUCT, "a domed muffin"),
    "마들렌": Term("madeleine", TermKind.PRODUCT, "shell-shaped madeleines"),
    "휘낭시에": Term("financier", TermKind.PRODUCT, "golden financiers"),
    "티라미수": Term("tiramisu", TermKind.PRODUCT, "a cocoa-dusted tiramisu"),
    "파이": Term("pie", TermKind.PRODUCT, "a lattice-top pie"),
    "핫초코": Term("hot chocolate", TermKind.PRODUCT, "steaming hot chocolate"),
    "식혜": Term("sikhye sweet rice drink", TermKind.PRODUCT, "pale sikhye with floating rice grains"),
    "떡": Term("rice cake", TermKind.PRODUCT, "soft Korean rice cakes"),
    # props a merchant may ask to swap, add or remove in a photo
    "빨대": Term("straw", TermKind.PRODUCT, "a drinking straw"),
    "컵": Term("cup", TermKind.PRODUCT, "a cup"),
    "잔": Term("glass", TermKind.PRODUCT, "a glass"),
    "유리컵": Term("clear glass", TermKind.PRODUCT, "a clear glass tumbler"),
    "종이컵": Term("paper cup", TermKind.PRODUCT, "a white paper cup"),
    "머그컵": Term("mug", TermKind.PRODUCT, "a ceramic mug"),
    "머그": Term("mug", TermKind.PRODUCT, "a ceramic mug"),
    "텀블러": Term("tumbler", TermKind.PRODUCT, "a reusable tumbler"),
    "접시": Term("plate", TermKind.PRODUCT, "a ceramic plate"),
    "쟁반": Term("tray", TermKind.PRODUCT, "a wooden tray"),
    "얼음": Term("ice cubes", TermKind.PRODUCT, "clear ice cubes"),
    "꽃": Term("flowers", TermKind.PRODUCT, "a few fresh flowers"),
    "냅킨": Term("napkin", TermKind.PRODUCT, "a folded napkin"),
    "숟가락": Term("spoon", TermKind.PRODUCT, "a small spoon"),
    "포크": Term("fork", TermKind.PRODUCT, "a small fork"),
    "휘핑크림": Term("whipped cream", TermKind.FLAVOR, "a swirl of whipped cream"),
    # how it is made
    "생과일": Term("fresh-fruit", TermKind.STYLE),
    "수제": Term("handmade", TermKind.STYLE),
    "홈메이드": Term("homemade", TermKind.STYLE),
    "제철": Term("in-season", TermKind.STYLE),
    "시그니처": Term("signature", TermKind.STYLE),
    "달콤한": Term("sweet", TermKind.STYLE),
    "상큼한": Term("zesty", TermKind.STYLE),
    "진한": Term("rich", TermKind.STYLE),
    "부드러운": Term("smooth", TermKind.STYLE),
    # temperature
    "아이스": Term("iced", TermKind.TEMPERATURE),
    "시원한": Term("ice-cold", TermKind.TEMPERATURE),
    "따뜻한": Term("warm", TermKind.TEMPERATURE),
    "핫": Term("hot", TermKind.TEMPERATURE),
    # seasons and moods
    "여름": Term("summer", TermKind.SEASON),
    "겨울": Term("winter", TermKind.SEASON),
    "봄": Term("spring", TermKind.SEASON),
    "가을": Term("autumn", TermKind.SEASON),
    "크리스마스": Term("christmas", TermKind.SEASON),
    "벚꽃": Term("cherry blossom", TermKind.SEASON),
}

# Emoji that name a product unambiguously; other emoji are left out of prompts.
EMOJI_GLOSSARY: dict[str, Term] = {
    "🍓": GLOSSARY["딸기"],
    "🥭": GLOSSARY["망고"],
    "🍌": GLOSSARY["바나나"],
    "🫐": GLOSSARY["블루베리"],
    "🍑": GLOSSARY["복숭아"],
    "🍉": GLOSSARY["수박"],
    "🍋": GLOSSARY["레몬"],
    "🍊": GLOSSARY["오렌지"],
    "🥝": GLOSSARY["키위"],
    "🍒": GLOSSARY["체리"],
    "🍫": GLOSSARY["초코"],
    "☕": GLOSSARY["커피"],
    "🧋": GLOSSARY["버블티"],
    "🍵": GLOSSARY["말차"],
    "🍰": GLOSSARY["케이크"],
    "🧇": GLOSSARY["와플"],
    "🍪": GLOSSARY["쿠키"],
    "🥐": GLOSSARY["크루아상"],
    "🍦": GLOSSARY["아이스크림"],
    "🍧": GLOSSARY["빙수"],
}

# Particles Korean nouns take in requests ("딸기를", "라떼로"); stripped before lookup.
_PARTICLES = ("으로", "로", "을", "를", "이", "가", "은", "는", "에", "와", "과", "랑", "의", "도")
_LONGEST_FIRST = sorted(GLOSSARY, key=len, reverse=True)


@dataclass(frozen=True)
class Understood:
    """What the glossary made of a keyword, in English and in order."""

    terms: tuple[Term, ...]
    # Latin-script words the merchant wrote themselves, kept as they are.
    latin_words: tuple[str, ...]

    def of_kind(self, kind: TermKind) -> list[str]:
        """English words of one kind, without repeats."""
        return list(dict.fromkeys(t.english for t in self.terms if t.kind is kind))

    @property
    def is_empty(self) -> bool:
        return not self.terms and not self.latin_words


def understand(text: str) -> Understood:
    """Reads a Korean (or mixed) keyword with the glossary; unknown Hangul is skipped, never kept."""
    text = unicodedata.normalize("NFC", text)
    terms: list[Term] = []
    latin: list[str] = []
    for token in text.split():
        for grapheme in graphemes(token):
            if is_emoji(grapheme) and grapheme.rstrip("\ufe0f") in EMOJI_GLOSSARY:
                terms.append(EMOJI_GLOSSARY[grapheme.rstrip("\ufe0f")])
        for word in regex.findall(r"[A-Za-z][A-Za-z'-]*", token):
            latin.append(word)
        hangul = "".join(regex.findall(r"\p{Hangul}+", token))
        if hangul:
            terms += _segment(hangul)
    return Understood(tuple(terms), tuple(latin))


def covers(phrase: str) -> bool:
    """Whether every Hangul word of the phrase is made entirely of glossary terms."""
    words = regex.findall(r"\p{Hangul}+", unicodedata.normalize("NFC", phrase))
    return all(_segment_fully(w) or _segment_fully(_strip_particle(w)) for w in words)


def _segment(word: str) -> list[Term]:
    """Splits a run of Hangul into glossary terms: whole-word first, else known parts of two or
    more syllables (one-syllable entries such as 차 or 빵 only count when the whole word is known)."""
    whole = _segment_fully(word) or _segment_fully(_strip_particle(word))
    if whole is not None:
        return whole
    found: list[Term] = []
    position = 0
    while position < len(word):
        match = next((k for k in _LONGEST_FIRST if len(k) >= 2 and word.startswith(k, position)), None)
        if match is None:
            position += 1
            continue
        found.append(GLOSSARY[match])
        position += len(match)
    return found


def _segment_fully(word: str) -> list[Term] | None:
    """The word as glossary terms end to end (longest term first at each point), or None.

    Solved from the end backwards so each position is tried once: plain backtracking is
    exponential on runs such as "청포도청포도…" (청+포도 or 청포도) followed by an unknown syllable.
    """
    if not word:
        return None
    # tails[i]: terms covering word[i:], or None when none do; tails[len(word)] is the empty end.
    tails: list[tuple[Term, ...] | None] = [None] * len(word) + [()]
    for start in range(len(word) - 1, -1, -1):
        for key in _LONGEST_FIRST:
            tail = tails[start + len(key)] if word.startswith(key, start) else None
            if tail is not None:
                tails[start] = (GLOSSARY[key], *tail)
                break
    whole = tails[0]
    return list(whole) if whole is not None else None


def _strip_particle(word: str) -> str:
    for particle in _PARTICLES:
        if word.endswith(particle) and len(word) > len(particle):
            return word[: -len(particle)]
    return word
