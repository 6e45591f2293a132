"""Create Ad with product photos and several placements, shown as Instagram posts, under AppTest."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import ad_pb2, image_pb2
from adgen_web.cli import APP_PATH
from adgen_web.preview import MORE, caption_html, profile_row_html
from tests.unit.web.conftest import PLACEMENT_HEIGHTS, FakeAdService, png_of

_TIMEOUT_S = 30
COPY = ad_pb.AdCopy(
    caption="올여름 첫 딸기 한 잔\n매일 아침 갈아 만든 생딸기 주스예요.",
    hook="올여름 첫 딸기 한 잔",
    hashtags=["딸기주스", "여름음료"],
)


@pytest.fixture
def page(fake_ad_service: FakeAdService, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("ADGEN_WEB_TARGET", fake_ad_service.target)
    monkeypatch.setenv("ADGEN_WEB_IMAGE_WIDTH", "128")
    monkeypatch.setenv("ADGEN_WEB_IMAGE_HEIGHT", "128")
    monkeypatch.setenv("ADGEN_WEB_MAX_PHOTO_BYTES", "100000")
    app = AppTest.from_file(str(APP_PATH), default_timeout=_TIMEOUT_S)
    app.run()
    assert not app.exception
    return app


def _submit(app: AppTest) -> None:
    next(button for button in app.button if button.label == "광고 만들기").click()
    app.run()
    assert not app.exception


def _html(app: AppTest) -> str:
    return "".join(str(element.proto.body) for element in app.get("html"))


def test_the_caption_is_cut_at_the_hook_with_more_and_opens_to_the_rest_and_the_hashtags() -> None:
    shown = caption_html("하루카페", COPY)
    summary, _, opened = shown.partition("</summary>")
    assert "올여름 첫 딸기 한 잔" in summary and MORE in summary and "생딸기" not in summary
    assert "매일 아침 갈아 만든 생딸기 주스예요." in opened and "#딸기주스 #여름음료" in opened
    assert "<br>" in opened  # The caption's line break survives.


def test_a_caption_no_longer_than_its_hook_shows_whole_without_more() -> None:
    shown = caption_html("하루카페", ad_pb.AdCopy(caption="딸기 한 잔", hook="딸기 한 잔", hashtags=["딸기"]))
    assert MORE not in shown and "딸기 한 잔" in shown and "#딸기" in shown


def test_shop_names_and_captions_are_escaped_not_run_as_html() -> None:
    assert "<script>" not in profile_row_html("<script>alert(1)</script>")
    copy = ad_pb.AdCopy(caption="<img src=x onerror=alert(1)> 맛있어요", hook="<img src=x onerror=alert(1)>")
    assert "<img src=x" not in caption_html("가게", copy)


def test_several_placements_and_product_photos_reach_the_request_and_show_side_by_side(
    page: AppTest, fake_ad_service: FakeAdService
) -> None:
    photos = [png_of(40, 60, "green"), png_of(30, 30, "blue")]
    page.text_input(key="keyword").input("딸기 생과일 주스")
    page.text_input(key="shop_name").input("하루카페")
    page.checkbox(key="placement_story").check()
    page.file_uploader(key="product_photos").set_value(
        [("a.png", photos[0], "image/png"), ("b.png", photos[1], "image/png")]
    )
    _submit(page)

    sent = fake_ad_service.servicer.create_requests[-1]
    assert list(sent.placements) == [ad_pb2.PLACEMENT_FEED_SQUARE, ad_pb2.PLACEMENT_STORY]
    assert [photo.data for photo in sent.product_photos] == photos
    assert sent.output_format == image_pb2.IMAGE_FORMAT_UNSPECIFIED  # The server picks PNG for a cut-out product.
    # Each placement keeps its own size: the demo size setting applies to one placement only.
    assert (sent.width, sent.height) == (0, 0)
    images = list(page.get("image"))
    assert len(images) == 2
    captions = [image.proto.imgs[0].caption for image in images]
    assert captions == ["시안 1 · 피드 1:1", "시안 1 · 스토리·릴스 9:16"]
    shown = _html(page)
    assert shown.count("하루카페") >= 4  # Profile row and caption owner, in both frames.
    assert MORE in shown and "#딸기주스" in shown
    labels = [element.proto.label for element in page.get("download_button")]
    assert labels[:2] == ["시안 1 이미지 받기 (피드 1:1)", "시안 1 이미지 받기 (스토리·릴스 9:16)"]
    assert PLACEMENT_HEIGHTS[ad_pb2.PLACEMENT_STORY] != PLACEMENT_HEIGHTS[ad_pb2.PLACEMENT_FEED_SQUARE]


def test_one_placement_keeps_the_demo_size_and_sends_no_placement_list(
    page: AppTest, fake_ad_service: FakeAdService
) -> None:
    page.text_input(key="keyword").input("아이스 아메리카노")
    page.checkbox(key="placement_feed-square").uncheck()
    page.checkbox(key="placement_feed-portrait").check()
    _submit(page)
    sent = fake_ad_service.servicer.create_requests[-1]
    assert sent.placement == ad_pb2.PLACEMENT_FEED_PORTRAIT and not sent.placements
    assert (sent.width, sent.height) == (128, 128) and not sent.product_photos and not sent.output_format


def test_no_placement_chosen_is_caught_before_any_call(page: AppTest, fake_ad_service: FakeAdService) -> None:
    calls_before = len(fake_ad_service.servicer.create_requests)
    page.text_input(key="keyword").input("딸기 주스")
    page.checkbox(key="placement_feed-square").uncheck()
    _submit(page)
    assert "게재 위치를 하나 이상" in page.warning[0].value
    assert len(fake_ad_service.servicer.create_requests) == calls_before


def test_more_than_three_product_photos_are_caught_before_any_call(
    page: AppTest, fake_ad_service: FakeAdService
) -> None:
    calls_before = len(fake_ad_service.servicer.create_requests)
    page.text_input(key="keyword").input("딸기 주스")
    files = [(f"{i}.png", png_of(10, 10, "red"), "image/png") for i in range(4)]
    page.file_uploader(key="product_photos").set_value(files)
    _submit(page)
    assert "3장까지" in page.warning[0].value
    assert len(fake_ad_service.servicer.create_requests) == calls_before


def test_a_product_photo_over_the_byte_limit_is_refused_on_the_page(
    page: AppTest, fake_ad_service: FakeAdService
) -> None:
    calls_before = len(fake_ad_service.servicer.create_requests)
    page.text_input(key="keyword").input("딸기 주스")
    page.file_uploader(key="product_photos").set_value([("big.png", b"x" * 100_001, "image/png")])
    _submit(page)
    assert "사진이 너무 커요" in page.error[0].value
    assert len(fake_ad_service.servicer.create_requests) == calls_before


def test_the_action_icons_are_images_the_page_sanitizer_keeps() -> None:
    shown = caption_html("하루카페", COPY)
    assert shown.count('src="data:image/svg+xml;base64,') == 4 and "<svg" not in shown
    assert all(f'alt="{name}"' in shown for name in ("좋아요", "댓글", "공유", "저장"))
