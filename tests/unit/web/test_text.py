"""Text written by a language model is shown as itself, never as Markdown."""

from __future__ import annotations

from adgen_web.text import plain


def test_links_and_images_in_model_text_are_escaped() -> None:
    assert plain("[클릭](http://evil.example) ![x](y.png)") == (
        "\\[클릭\\]\\(http://evil\\.example\\) \\!\\[x\\]\\(y\\.png\\)"
    )


def test_emphasis_headers_and_html_are_escaped_but_korean_and_emoji_stay() -> None:
    assert plain("# **딸기** <b>주스</b> 🍓") == "\\# \\*\\*딸기\\*\\* \\<b\\>주스\\</b\\> 🍓"
