"""Model-written text shown on the page as itself, never interpreted as Markdown."""

from __future__ import annotations

import re

_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def plain(text: str) -> str:
    """`text` with every Markdown special character escaped: a caption cannot inject links or images."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", text)
