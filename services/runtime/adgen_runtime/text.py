"""The one rule for the characters a caller's text field may hold."""

from __future__ import annotations

import unicodedata

from adgen_runtime.errors import BadField

# Tab, line feed and carriage return are whitespace a pasted text may hold; each field decides whether to
# keep them or fold them into spaces.
_WHITESPACE_CONTROLS = frozenset("\t\n\r")
# Invisible direction overrides and isolates: they make a published caption read otherwise than it was checked.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Not characters at all (and not allowed in XML, where our image labels carry text).
_NONCHARACTERS = frozenset("\ufffe\uffff")
CONTROL_CHARACTERS_RULE = "must not contain control characters"


def forbidden_characters(text: str) -> list[str]:
    """The characters of `text` no caller's text may hold, first occurrences in order: control
    characters (C0, DEL, C1) other than tab, line feed and carriage return, bidi overrides, noncharacters."""
    found: dict[str, None] = {}
    for char in text:
        if char in _WHITESPACE_CONTROLS:
            continue
        if unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS or char in _NONCHARACTERS:
            found.setdefault(char)
    return list(found)


def control_character_violation(field: str, text: str) -> BadField | None:
    """A violation naming `field` and the first characters it must not hold, or None when it is clean.

    Refused, not stripped: such characters are never part of what a merchant typed. They come from a
    broken encoding or a hostile caller, and the caller should learn which, rather than get copy made
    from a silently altered text.
    """
    found = forbidden_characters(text)
    if not found:
        return None
    named = ", ".join(f"U+{ord(char):04X}" for char in found[:3])
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return BadField(field, f"{CONTROL_CHARACTERS_RULE} (found {named}{more})")
