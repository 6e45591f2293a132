"""Korean for what Streamlit itself draws: the page's `lang`, the uploader's and the forms' own texts."""

from __future__ import annotations

import json

import streamlit as st

# Streamlit 1.67 has no locale setting: index.html says lang="en", and these texts are fixed English strings in
# its frontend (none is a widget parameter). Each pattern matches one whole text node or aria-label.
STREAMLIT_TEXTS_IN_KOREAN: tuple[tuple[str, str], ...] = (
    (r"^Upload$", "사진 올리기"),
    (r"^Drag and drop a file here$", "여기에 사진을 끌어다 놓으세요"),
    (r"^(\S+) per file$", "최대 $1"),
    (r"^File must be (\S+) or smaller\.$", "사진이 너무 커요. $1 이하의 사진만 올릴 수 있어요."),
    (r"^(\S+) files are not allowed\.$", "$1 파일은 올릴 수 없어요. PNG, JPG, WEBP 사진을 올려 주세요."),
    (r"^Error:$", "오류:"),
    (r"^Add files$", "사진 올리기"),
    (r"^Remove (.+)$", "$1 지우기"),
    (r"^Press Enter to submit form$", "Enter 키를 누르면 보내져요"),
    (r"^Press (⌘|Ctrl)\+Enter to submit form$", "$1+Enter 키를 누르면 보내져요"),
    (r"^Running\.\.\.$", "처리하는 중…"),
    (r"^Stop$", "중지"),
    (r"^Skip to main content$", "본문으로 건너뛰기"),
    (r"^Main menu$", "메뉴"),
    (r"^file upload$", "사진 올리기"),
    (r"^Link to heading$", "제목 링크"),
    (r"^Help for (.+)$", "$1 도움말"),
)

# Runs once per browser tab (the guard), then keeps translating as Streamlit re-renders; a text no pattern
# matches stays as Streamlit wrote it, so a Streamlit upgrade can at worst bring English back, never break the page.
_SCRIPT = """
<script>
(() => {
  document.documentElement.lang = "ko";
  if (window.adgenKorean) return;
  window.adgenKorean = true;
  const rules = RULES.map(([pattern, replacement]) => [new RegExp(pattern), replacement]);
  const translate = (text) => {
    const trimmed = (text || "").trim();
    for (const [pattern, replacement] of rules) {
      if (pattern.test(trimmed)) return trimmed.replace(pattern, replacement);
    }
    return null;
  };
  const visit = (node) => {
    if (node.nodeType === Node.TEXT_NODE) {
      const korean = translate(node.nodeValue);
      if (korean !== null) node.nodeValue = korean;
      return;
    }
    if (node.nodeType !== Node.ELEMENT_NODE) return;
    for (const element of [node, ...node.querySelectorAll("[aria-label]")]) {
      const korean = element.hasAttribute("aria-label") ? translate(element.getAttribute("aria-label")) : null;
      if (korean !== null) element.setAttribute("aria-label", korean);
    }
    const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
    for (let text = walker.nextNode(); text; text = walker.nextNode()) visit(text);
  };
  visit(document.body);
  new MutationObserver((changes) => {
    for (const change of changes) {
      if (change.type === "childList") change.addedNodes.forEach(visit);
      else visit(change.target);
    }
  }).observe(document.body, {
    childList: true, subtree: true, characterData: true, attributes: true, attributeFilter: ["aria-label"],
  });
})();
</script>
"""


def korean_page_script() -> str:
    """The script, with the translations as a JSON array of [pattern, replacement] pairs."""
    rules = json.dumps([list(rule) for rule in STREAMLIT_TEXTS_IN_KOREAN], ensure_ascii=False)
    return _SCRIPT.replace("RULES", rules).strip()


def make_page_korean() -> None:
    """Sets `<html lang="ko">` and puts Streamlit's own texts in Korean, through st.html's script support.

    The script is this module's constant, never user input: the reason st.html may run it.
    """
    st.html(korean_page_script(), unsafe_allow_javascript=True)
