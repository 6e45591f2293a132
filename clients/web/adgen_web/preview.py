"""The Instagram-style frame around a generated post: profile row, action icons, and the caption cut at the hook."""

from __future__ import annotations

import base64
import html

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import ad_pb2
from adgen_web.downloads import hashtags_for_display

MORE = "더 보기"
SPONSORED = "광고"
DEFAULT_SHOP_NAME = "내 가게"
PLACEMENT_LABELS: dict[ad_pb2.Placement.ValueType, str] = {
    ad_pb2.PLACEMENT_FEED_SQUARE: "피드 1:1",
    ad_pb2.PLACEMENT_FEED_PORTRAIT: "피드 4:5",
    ad_pb2.PLACEMENT_STORY: "스토리·릴스 9:16",
}

# Scoped under .adgen-post so nothing leaks into Streamlit's own widgets.
_STYLE = """<style>
.adgen-post{font-family:-apple-system,"Pretendard","Noto Sans KR",sans-serif;font-size:14px;color:#262626}
.adgen-post .row{display:flex;align-items:center;gap:8px;padding:6px 2px}
.adgen-post .avatar{width:32px;height:32px;border-radius:50%;display:flex;align-items:center;justify-content:center;
 color:#fff;font-weight:700;background:linear-gradient(45deg,#f9ce34,#ee2a7b,#6228d7)}
.adgen-post .name{font-weight:600}
.adgen-post .sponsored{color:#737373;font-size:12px}
.adgen-post .dots{margin-left:auto;color:#262626;font-weight:700;letter-spacing:1px}
.adgen-post .icons{display:flex;gap:14px;padding:4px 2px}
.adgen-post .icons img{width:24px;height:24px}
.adgen-post .icons .save{margin-left:auto}
.adgen-post details summary{list-style:none;cursor:pointer}
.adgen-post details summary::-webkit-details-marker{display:none}
.adgen-post .more{color:#737373}
.adgen-post details[open] .more{display:none}
.adgen-post details[open] .hook-only{display:none}
.adgen-post .tags{color:#00376b;margin-top:4px}
</style>"""

_ICONS = {
    "like": '<path d="M12 21s-7-4.6-9.3-9A5.3 5.3 0 0 1 12 6a5.3 5.3 0 0 1 9.3 6c-2.3 4.4-9.3 9-9.3 9z"/>',
    "comment": '<path d="M20.7 16.4A9 9 0 1 0 17 20.2L21 21z"/>',
    "share": '<path d="M22 3 9.2 10.1M22 3l-7 18-4-8.3L2 9.4z"/>',
    "save": '<path d="M19 21 12 16 5 21V3h14z"/>',
}


_ICON_NAMES = {"like": "좋아요", "comment": "댓글", "share": "공유", "save": "저장"}


def shop_name(ad_facts_name: str, brand_name: str = "") -> str:
    """The account name the post is shown under: the brand, else the shop, else a placeholder."""
    return (brand_name or ad_facts_name).strip() or DEFAULT_SHOP_NAME


def profile_row_html(name: str) -> str:
    """The row above the image: avatar with the name's first letter, the name, "광고" and the menu dots."""
    initial = html.escape(name[:1])
    return (
        f'{_STYLE}<div class="adgen-post"><div class="row"><div class="avatar">{initial}</div>'
        f'<div><div class="name">{html.escape(name)}</div><div class="sponsored">{SPONSORED}</div></div>'
        '<div class="dots">···</div></div></div>'
    )


def _icon(name: str) -> str:
    # An <img> of an SVG data URI: Streamlit's st.html sanitizer drops inline <svg> but keeps images.
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#262626" '
        f'stroke-width="2" stroke-linejoin="round">{_ICONS[name]}</svg>'
    )
    source = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
    return f'<img class="{name}" src="{source}" alt="{_ICON_NAMES[name]}">'


def caption_html(name: str, copy: ad_pb.AdCopy) -> str:
    """The rows below the image: the action icons, then the caption cut at its hook with "더 보기", which opens
    to the whole caption and the hashtags."""
    icons = "".join(_icon(icon) for icon in ("like", "comment", "share"))
    parts = [f'{_STYLE}<div class="adgen-post"><div class="icons">{icons}{_icon("save")}</div>']
    tags = " ".join(html.escape(tag) for tag in hashtags_for_display(copy))
    hook, caption = copy.hook.strip(), copy.caption.strip()
    owner = f'<span class="name">{html.escape(name)}</span> '
    if not hook or caption == hook:
        parts.append(f"<div>{owner}{_text(caption or hook)}</div>")
        if tags:
            parts.append(f'<div class="tags">{tags}</div>')
    else:
        # The hook is the caption's opening when the copywriter kept it so; then the rest follows it.
        rest, hook_class = (caption[len(hook) :], "") if caption.startswith(hook) else (caption, ' class="hook-only"')
        parts.append(
            f"<details><summary>{owner}<span{hook_class}>{_text(hook)}</span>"
            f'<span class="more">… {MORE}</span></summary>'
            f'<span class="rest">{_text(rest)}</span><div class="tags">{tags}</div></details>'
        )
    parts.append("</div>")
    return "".join(parts)


def _text(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def placement_label(placement: ad_pb2.Placement.ValueType) -> str:
    return PLACEMENT_LABELS.get(placement, PLACEMENT_LABELS[ad_pb2.PLACEMENT_FEED_SQUARE])
