"""The AdGen Streamlit page: "광고 만들기" (create an ad) and "사진 편집" (edit a photo), through the SDK."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import grpc
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import ad_pb2
from adgen_client.client import AdGenClient
from adgen_client.errors import AdGenError
from adgen_client.requests import PLACEMENTS as PLACEMENT_NUMBERS
from adgen_client.requests import CreateAdOptions, EditAdOptions
from adgen_web.config import WebSettings
from adgen_web.downloads import copy_as_json, copy_as_text, hashtags_for_display, image_mime, image_suffix
from adgen_web.messages import UserMessage, describe_error, megabytes, photo_too_large
from adgen_web.page_language import make_page_korean
from adgen_web.preview import caption_html, placement_label, profile_row_html, shop_name
from adgen_web.progress import progress_fraction, progress_text
from adgen_web.text import plain
from adgen_wire.limits import MAX_VARIANTS

_LOGGER = logging.getLogger(__name__)

CREATE_MODE = "광고 만들기"
EDIT_MODE = "사진 편집"
TONES: dict[str, str] = {
    "친근하게": "friendly",
    "감성적으로": "emotional",
    "고급스럽게": "premium",
    "발랄하게": "playful",
    "정보 위주로": "informative",
}
PLACEMENTS: dict[str, str] = {
    "피드 정사각형 (1:1)": "feed-square",
    "피드 세로형 (4:5)": "feed-portrait",
    "스토리·릴스 (9:16)": "story",
}
PHOTO_TYPES = ["png", "jpg", "jpeg", "webp"]
MAX_PRODUCT_PHOTOS = 3
DEFAULT_PLACEMENT = "feed-square"
_CREATE_OUTCOME = "create_outcome"
_EDIT_OUTCOME = "edit_outcome"
# A stream that ended without its result event.
_STREAM_ENDED_EARLY = AdGenError(code=grpc.StatusCode.UNKNOWN, message="stream ended without a result")


@dataclass(frozen=True)
class CreateInput:
    """What the shop owner asked for on the create form."""

    keyword: str
    tone: str
    placements: tuple[str, ...]
    variant_count: int
    facts: ad_pb2.MerchantFacts | None
    ai_disclosure: bool
    overlay_headline: bool
    product_photos: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class EditOutcome:
    """A finished edit, with the photo it started from for the side-by-side view."""

    original: bytes
    result: ad_pb.EditAdResponse


@st.cache_resource(show_spinner=False, max_entries=1)
def adgen_client(connection_key: tuple[object, ...], _settings: WebSettings) -> AdGenClient:
    """One SDK client (and channel) per connection, shared by every browser session of this process; a new
    `connection_key` (another target, a rewritten token or CA file) replaces it. The token stays here, on the
    server side of the page: the browser never sees it."""
    return _settings.open_client()


def render_page() -> None:
    """The whole page: header, mode switch, then the chosen mode."""
    st.set_page_config(page_title="AdGen · 카페 광고 만들기", page_icon="🧃", layout="wide")
    settings = WebSettings()
    st.title("AdGen 광고 도우미")
    st.caption("상품 키워드만 적으면 인스타그램 광고 문구와 이미지를 만들어 드려요. 사진 편집도 할 수 있어요.")
    mode = st.radio("무엇을 할까요?", [CREATE_MODE, EDIT_MODE], horizontal=True, key="mode")
    client = adgen_client(settings.client_key(), settings)
    if mode == EDIT_MODE:
        edit_page(client, settings)
    else:
        create_page(client, settings)
    make_page_korean()  # Last, so its empty block sits below everything; the script stays active across reruns.


# ---- 광고 만들기 ----


def create_page(client: AdGenClient, settings: WebSettings) -> None:
    """The create form; on submit streams the ad live, then shows the kept result."""
    request = create_form(settings)
    if request is not None:
        if not request.keyword:
            st.warning("광고할 상품 키워드를 입력해 주세요. 예: 여름 느낌 딸기 생과일 주스")
        elif not request.placements:
            st.warning("게재 위치를 하나 이상 골라 주세요.")
        elif len(request.product_photos) > MAX_PRODUCT_PHOTOS:
            st.warning(f"상품 사진은 {MAX_PRODUCT_PHOTOS}장까지 올릴 수 있어요.")
        elif any(len(photo) > settings.max_photo_bytes for photo in request.product_photos):
            st.session_state[_CREATE_OUTCOME] = photo_too_large(settings.max_photo_bytes)
        else:
            st.session_state[_CREATE_OUTCOME] = stream_create(client, settings, request)
    outcome = st.session_state.get(_CREATE_OUTCOME)
    if isinstance(outcome, UserMessage):
        show_error(outcome)
    elif isinstance(outcome, ad_pb.CreateAdResponse):
        show_ad(outcome, str(st.session_state.get("shop_name", "")))


def create_form(settings: WebSettings | None = None) -> CreateInput | None:
    """The create form's values once submitted, else None."""
    settings = settings or WebSettings()
    limit = megabytes(settings.max_photo_bytes)
    with st.form("create_form"):
        keyword = st.text_input("상품 키워드", placeholder="예: 여름 느낌 딸기 생과일 주스", key="keyword")
        left, right = st.columns(2)
        tone = left.selectbox("말투", list(TONES), key="tone")
        variant_count = right.number_input(
            "시안 개수", min_value=1, max_value=MAX_VARIANTS, value=1, step=1, key="variants"
        )
        st.markdown("**게재 위치** (여러 개 고르면 같은 장면을 크기별로 만들어요)")
        placements: list[str] = []
        for column, (label, value) in zip(st.columns(len(PLACEMENTS)), PLACEMENTS.items(), strict=True):
            if column.checkbox(label, value=value == DEFAULT_PLACEMENT, key=f"placement_{value}"):
                placements.append(value)
        products = st.file_uploader(
            f"상품 사진 (선택, 최대 {MAX_PRODUCT_PHOTOS}장 · PNG, JPG, WEBP · 장당 최대 {limit})",
            type=PHOTO_TYPES,
            accept_multiple_files=True,
            key="product_photos",
            max_upload_size=settings.max_photo_megabytes,
            help="올린 상품은 그대로 두고 주변 장면만 만들어요. 배경이 투명한 PNG는 상품이 한 픽셀도 바뀌지 않아요.",
        )
        with st.expander("가게 정보 (선택) — 적은 내용만 문구에 들어가요"):
            shop_name = st.text_input("가게 이름", key="shop_name")
            price = st.text_input("가격", placeholder="예: 5,500원", key="price")
            origin = st.text_input("원산지", placeholder="예: 국내산 딸기", key="origin")
            promotion = st.text_input("행사", placeholder="예: 8월 한 달 1+1", key="promotion")
        ai_disclosure = st.checkbox("이미지에 'AI 생성' 표시 넣기", value=True, key="ai_disclosure")
        overlay_headline = st.checkbox("이미지에 헤드라인 글자 넣기", value=False, key="overlay_headline")
        if not st.form_submit_button("광고 만들기", type="primary"):
            return None
    facts = ad_pb2.MerchantFacts(
        shop_name=shop_name.strip(), price=price.strip(), origin=origin.strip(), promotion=promotion.strip()
    )
    return CreateInput(
        keyword=keyword.strip(),
        tone=TONES[str(tone)],
        placements=tuple(placements),
        variant_count=int(variant_count),
        facts=facts if facts.ByteSize() else None,
        ai_disclosure=ai_disclosure,
        overlay_headline=overlay_headline,
        product_photos=tuple(photo.getvalue() for photo in products or []),
    )


def create_options(request: CreateInput, settings: WebSettings, request_id: str) -> CreateAdOptions:
    """SDK options for one create call; size and steps come from the settings when set."""
    options: CreateAdOptions = {
        "tone": request.tone,
        "placement": request.placements[0],
        "variant_count": request.variant_count,
        "facts": request.facts,
        "request_id": request_id,
        "ai_disclosure": request.ai_disclosure,
        "overlay_headline": request.overlay_headline,
    }
    if len(request.placements) > 1:
        options["placements"] = list(request.placements)
    if request.product_photos:
        options["product_photos"] = list(request.product_photos)
    # An explicit size overrides one placement; several placements are each delivered at their own size.
    if settings.image_width and settings.image_height and len(request.placements) == 1:
        options["width"], options["height"] = settings.image_width, settings.image_height
    if settings.num_inference_steps is not None:
        options["num_inference_steps"] = settings.num_inference_steps
    return options


def stream_create(
    client: AdGenClient, settings: WebSettings, request: CreateInput
) -> ad_pb.CreateAdResponse | UserMessage:
    """Streams one ad, showing progress, the copy and each image as they arrive; returns the outcome."""
    request_id = uuid.uuid4().hex
    live = st.empty()
    with live.container():
        status = st.status("광고를 만드는 중이에요…", expanded=True)
        bars = [status.progress(0.0, text=f"시안 {i + 1}: 준비 중이에요") for i in range(request.variant_count)]
        copy_slot = status.empty()
        columns = st.columns(request.variant_count * len(request.placements))
        image_slots = {
            (variant, PLACEMENT_NUMBERS[placement]): columns[variant * len(request.placements) + offset].empty()
            for variant in range(request.variant_count)
            for offset, placement in enumerate(request.placements)
        }
    result: ad_pb.CreateAdResponse | None = None
    try:
        events = client.stream_create_ad(request.keyword, **create_options(request, settings, request_id))
        for event in events:
            kind = event.WhichOneof("event")
            if kind == "copy":
                copy_slot.markdown(f"✍️ 문구 완성: **{event.copy.headline}**")
            elif kind == "progress":
                _show_progress(bars, event.progress)
            elif kind == "image":
                _show_live_image(image_slots, event.image)
            elif kind == "result":
                result = event.result
    except AdGenError as error:
        _LOGGER.info("create failed: %s (request %s)", error, request_id)
        status.update(label="광고를 만들지 못했어요", state="error", expanded=False)
        return describe_error(error, request_id)
    live.empty()  # The kept result below shows the same images and copy in full.
    if result is None:
        return describe_error(_STREAM_ENDED_EARLY, request_id)
    return result


def _show_progress(bars: list[DeltaGenerator], update: ad_pb.VariantProgress) -> None:
    if 0 <= update.variant_index < len(bars):
        text = f"시안 {update.variant_index + 1}: {progress_text(update.progress)}"
        bars[update.variant_index].progress(progress_fraction(update.progress), text=text)


def _show_live_image(slots: dict[tuple[int, ad_pb2.Placement.ValueType], DeltaGenerator], image: ad_pb.AdImage) -> None:
    # A server without placements leaves AdImage.placement unset: its one placement's slot.
    slot = slots.get((image.variant_index, image.placement)) or next(
        (slot for (variant, _), slot in slots.items() if variant == image.variant_index), None
    )
    if slot is not None:
        slot.image(image.image.data, caption=f"시안 {image.variant_index + 1} · {placement_label(image.placement)}")


def show_ad(ad: ad_pb.CreateAdResponse, name: str = "") -> None:
    """The finished ad: each variant as Instagram would show it, its placements side by side with their
    downloads, then the copy with its downloads."""
    seconds = ad.total_duration.ToTimedelta().total_seconds()
    variants = sorted({image.variant_index for image in ad.images})
    st.success(f"광고가 완성됐어요! 시안 {len(variants)}개 · 이미지 {len(ad.images)}장 · {seconds:.1f}초")
    account = shop_name(name)
    for variant in variants:
        images = [image for image in ad.images if image.variant_index == variant]
        if len(variants) > 1:
            st.markdown(f"**시안 {variant + 1}**")
        for column, image in zip(st.columns(max(len(images), 1)), images, strict=False):
            with column:
                show_post(ad, image, account, several=len(images) > 1)
    show_copy(ad)


def show_post(ad: ad_pb.CreateAdResponse, image: ad_pb.AdImage, account: str, *, several: bool) -> None:
    """One image in a feed frame: profile row, the image, action icons, the caption cut at the hook."""
    number = image.variant_index + 1
    label = placement_label(image.placement)
    where = f" · {label}" if several or image.placement else ""
    with st.container(border=True):
        st.html(profile_row_html(account))
        st.image(image.image.data, caption=f"시안 {number}{where}", alt=ad.copy.alt_text or None)
        st.html(caption_html(account, ad.copy))
    suffix = f"-{image.placement}" if several else ""
    st.download_button(
        f"시안 {number} 이미지 받기" + (f" ({label})" if several else ""),
        data=image.image.data,
        file_name=f"adgen-{ad.request_id[:8]}-{number}{suffix}.{image_suffix(image.image)}",
        mime=image_mime(image.image),
        on_click="ignore",
        key=f"download_image_{number}{suffix}",
    )


def show_copy(ad: ad_pb.CreateAdResponse) -> None:
    """Headline, hook, caption and #hashtags, and the copy as text and JSON files."""
    copy = ad.copy
    st.subheader(plain(copy.headline) if copy.headline else "광고 문구")
    if copy.hook:
        st.markdown(f"**첫 줄(더보기 전에 보이는 부분):** {plain(copy.hook)}")
    st.markdown("**캡션** (오른쪽 위 버튼으로 복사할 수 있어요)")
    st.code(copy.caption, language=None, wrap_lines=True)
    st.markdown(" ".join(f"`{tag}`" for tag in hashtags_for_display(copy)))
    left, right = st.columns(2)
    stem = f"adgen-{ad.request_id[:8]}-copy"
    left.download_button(
        "문구 받기 (텍스트)", copy_as_text(copy), f"{stem}.txt", "text/plain", on_click="ignore", key="copy_txt"
    )
    right.download_button(
        "문구 받기 (JSON)", copy_as_json(copy), f"{stem}.json", "application/json", on_click="ignore", key="copy_json"
    )


# ---- 사진 편집 ----


def edit_page(client: AdGenClient, settings: WebSettings) -> None:
    """The edit form; on submit streams the edit, then shows original and edited side by side."""
    limit = megabytes(settings.max_photo_bytes)
    with st.form("edit_form"):
        photo = st.file_uploader(
            f"상품 사진 (PNG, JPG, WEBP · 최대 {limit})",
            type=PHOTO_TYPES,
            key="photo",
            max_upload_size=settings.max_photo_megabytes,
            help=f"{limit}보다 큰 사진은 올릴 수 없어요. 휴대폰 사진이 크면 스크린숏으로 올려 주세요.",
        )
        instruction = st.text_area(
            "어떻게 바꿀까요? (한국어나 영어)", placeholder="예: 배경을 여름 바다로 바꿔줘", key="instruction"
        )
        submitted = st.form_submit_button("사진 편집하기", type="primary")
    if submitted:
        if photo is None:
            st.warning("편집할 사진을 먼저 올려 주세요.")
        elif not instruction.strip():
            st.warning("어떻게 바꿀지 적어 주세요. 예: 컵을 빨간색으로 바꿔줘")
        elif photo.size > settings.max_photo_bytes:
            # Streamlit's uploader rounds the limit up to whole MB; the server takes exactly max_photo_bytes.
            st.session_state[_EDIT_OUTCOME] = photo_too_large(settings.max_photo_bytes)
        else:
            st.session_state[_EDIT_OUTCOME] = stream_edit(client, settings, photo.getvalue(), instruction.strip())
    outcome = st.session_state.get(_EDIT_OUTCOME)
    if isinstance(outcome, UserMessage):
        show_error(outcome)
    elif isinstance(outcome, EditOutcome):
        show_edit(outcome)


def stream_edit(
    client: AdGenClient, settings: WebSettings, photo: bytes, instruction: str
) -> EditOutcome | UserMessage:
    """Streams one edit with a progress bar; returns the outcome."""
    request_id = uuid.uuid4().hex
    options: EditAdOptions = {"request_id": request_id}
    if settings.num_inference_steps is not None:
        options["num_inference_steps"] = settings.num_inference_steps
    live = st.empty()
    bar = live.progress(0.0, text="사진을 보내는 중이에요")
    result: ad_pb.EditAdResponse | None = None
    try:
        for event in client.stream_edit_ad(photo, instruction, **options):
            if event.WhichOneof("event") == "progress":
                bar.progress(progress_fraction(event.progress), text=progress_text(event.progress))
            elif event.WhichOneof("event") == "result":
                result = event.result
    except AdGenError as error:
        _LOGGER.info("edit failed: %s (request %s)", error, request_id)
        live.empty()
        return describe_error(error, request_id, photo_limit_bytes=settings.max_photo_bytes)
    live.empty()
    if result is None:
        return describe_error(_STREAM_ENDED_EARLY, request_id)
    return EditOutcome(original=photo, result=result)


def show_edit(outcome: EditOutcome) -> None:
    """Original and edited photo side by side, and the edited one's download."""
    edited = outcome.result.image
    st.success("사진 편집이 끝났어요!")
    before, after = st.columns(2)
    before.image(outcome.original, caption="원본")
    after.image(edited.data, caption="편집한 사진")
    after.download_button(
        "편집한 사진 받기",
        data=edited.data,
        file_name=f"adgen-edit-{outcome.result.request_id[:8]}.{image_suffix(edited)}",
        mime=image_mime(edited),
        on_click="ignore",
        key="download_edited",
    )


def show_error(message: UserMessage) -> None:
    """An error as the shop owner reads it: what happened, what to do, and the id for support."""
    st.error(f"{message.problem}\n\n{message.next_step}", icon="⚠️")
    if message.request_id:
        st.caption(f"요청 번호: {message.request_id}")


if __name__ == "__main__":
    render_page()
