"""The page is Korean throughout: `<html lang="ko">`, and Streamlit's own English texts rewritten in Korean."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import streamlit
from streamlit.testing.v1 import AppTest

from adgen_web.cli import APP_PATH
from adgen_web.page_language import STREAMLIT_TEXTS_IN_KOREAN, korean_page_script
from tests.unit.web.conftest import FakeAdService

STREAMLIT_BUNDLE = "\n".join(
    path.read_text(errors="replace") for path in (Path(streamlit.__file__).parent / "static").rglob("*.js")
)
# Per pattern: an English text as the page shows it, then the pieces of Streamlit's frontend that write it.
ENGLISH_EXAMPLES = {
    r"^Upload$": ("Upload", "`Upload`"),
    r"^Drag and drop a file here$": ("Drag and drop a file here", "`Drag and drop a file here`"),
    r"^(\S+) per file$": ("20MB per file", " per file`"),
    r"^File must be (\S+) or smaller\.$": ("File must be 20.0MB or smaller.", "File must be "),
    r"^(\S+) files are not allowed\.$": ("image/gif files are not allowed.", " files are not allowed."),
    r"^Error:$": ("Error:", "Error:"),
    r"^Add files$": ("Add files", "Add files"),
    r"^Remove (.+)$": ("Remove cup.png", "Remove "),
    r"^Press Enter to submit form$": ("Press Enter to submit form", "submit form`", "`Press Enter to ${e}`"),
    r"^Press (⌘|Ctrl)\+Enter to submit form$": (
        "Press Ctrl+Enter to submit form",
        "submit form`",
        "`Press ${r()?`⌘`:`Ctrl`}+Enter to ${e}`",
    ),
    r"^Running\.\.\.$": ("Running...", "Running..."),
    r"^Stop$": ("Stop", "Stop"),
    r"^Skip to main content$": ("Skip to main content", "Skip to main content"),
    r"^Main menu$": ("Main menu", "Main menu"),
    r"^file upload$": ("file upload", "file upload"),
    r"^Link to heading$": ("Link to heading", "Link to heading"),
    r"^Help for (.+)$": ("Help for 상품 사진", "Help for "),
}
HANGUL = re.compile(r"[가-힣]")


def test_every_translated_text_has_an_example_checked_below() -> None:
    assert {pattern for pattern, _ in STREAMLIT_TEXTS_IN_KOREAN} == set(ENGLISH_EXAMPLES)


@pytest.mark.parametrize(("pattern", "replacement"), STREAMLIT_TEXTS_IN_KOREAN)
def test_each_english_text_is_still_in_streamlits_frontend_and_becomes_korean(pattern: str, replacement: str) -> None:
    example, *in_bundle = ENGLISH_EXAMPLES[pattern]
    # If a Streamlit upgrade rewords a text, this fails instead of the page silently turning English again.
    assert all(snippet in STREAMLIT_BUNDLE for snippet in in_bundle)
    korean = re.sub(pattern, re.sub(r"\$(\d)", r"\\\1", replacement), example)
    assert korean != example and HANGUL.search(korean)


def test_the_script_sets_the_document_language_to_korean_and_carries_every_rule() -> None:
    script = korean_page_script()
    assert 'document.documentElement.lang = "ko";' in script
    assert "RULES" not in script
    assert all(
        pattern.replace("\\", "\\\\") in script and korean in script for pattern, korean in STREAMLIT_TEXTS_IN_KOREAN
    )


def test_the_page_runs_the_script_through_st_html(
    fake_ad_service: FakeAdService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADGEN_WEB_TARGET", fake_ad_service.target)
    app = AppTest.from_file(str(APP_PATH), default_timeout=30)
    app.run()
    (element,) = app.get("html")
    assert element.proto.unsafe_allow_javascript and element.proto.body == korean_page_script()
