"""The page logic under Streamlit's AppTest, against the scripted fake AdService."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from adgen_web.cli import APP_PATH
from tests.unit.web.conftest import BROKEN_INSTRUCTION, BUSY_KEYWORD, FakeAdService, png_of

_TIMEOUT_S = 30


@pytest.fixture
def page(fake_ad_service: FakeAdService, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The page, pointed at the fake, asking for 128×128 images in 2 steps, after its first run."""
    monkeypatch.setenv("ADGEN_WEB_TARGET", fake_ad_service.target)
    monkeypatch.setenv("ADGEN_WEB_IMAGE_WIDTH", "128")
    monkeypatch.setenv("ADGEN_WEB_IMAGE_HEIGHT", "128")
    monkeypatch.setenv("ADGEN_WEB_NUM_INFERENCE_STEPS", "2")
    app = AppTest.from_file(str(APP_PATH), default_timeout=_TIMEOUT_S)
    app.run()
    assert not app.exception
    return app


def _submit(app: AppTest, label: str) -> None:
    next(button for button in app.button if button.label == label).click()
    app.run()
    assert not app.exception


def _images(app: AppTest) -> list[object]:
    return list(app.get("image"))


def _download_labels(app: AppTest) -> list[str]:
    return [element.proto.label for element in app.get("download_button")]


def test_page_opens_in_create_mode_with_korean_labels(page: AppTest) -> None:
    assert page.radio(key="mode").value == "광고 만들기"
    assert page.text_input(key="keyword").label == "상품 키워드"
    # Create mode's one uploader is the optional product photos'.
    assert [uploader.label.startswith("상품 사진 (선택") for uploader in page.file_uploader] == [True]


def test_mode_switch_shows_the_photo_upload_form(page: AppTest) -> None:
    page.radio(key="mode").set_value("사진 편집").run()
    assert page.file_uploader[0].label.startswith("상품 사진")
    assert page.text_area(key="instruction") is not None


def test_empty_keyword_is_caught_before_any_call(page: AppTest, fake_ad_service: FakeAdService) -> None:
    calls_before = len(fake_ad_service.servicer.create_requests)
    page.text_input(key="keyword").input("   ")
    _submit(page, "광고 만들기")
    assert "상품 키워드를 입력해 주세요" in page.warning[0].value
    assert len(fake_ad_service.servicer.create_requests) == calls_before


def test_create_streams_an_ad_and_shows_images_copy_hashtags_and_downloads(
    page: AppTest, fake_ad_service: FakeAdService
) -> None:
    page.text_input(key="keyword").input("여름 느낌 딸기 생과일 주스")
    page.selectbox(key="tone").set_value("감성적으로")
    page.number_input(key="variants").set_value(2)
    page.text_input(key="shop_name").input("딸기네 카페")
    page.text_input(key="price").input("5,500원")
    _submit(page, "광고 만들기")

    sent = fake_ad_service.servicer.create_requests[-1]
    assert sent.keyword == "여름 느낌 딸기 생과일 주스" and sent.variant_count == 2
    assert (sent.width, sent.height, sent.num_inference_steps) == (128, 128, 2)
    assert sent.facts.shop_name == "딸기네 카페" and sent.facts.price == "5,500원" and not sent.facts.origin
    assert sent.request_id and sent.tone == 2  # TONE_EMOTIONAL
    assert "광고가 완성됐어요" in page.success[0].value
    assert len(_images(page)) == 2
    assert page.subheader[0].value == "딸기 가득 여름"
    assert any("올여름 첫 딸기 한 잔" in markdown.value for markdown in page.markdown)
    assert any("`#딸기주스` `#여름음료`" in markdown.value for markdown in page.markdown)
    assert page.code[0].value.startswith("여름 느낌 딸기 생과일 주스")
    assert _download_labels(page) == [
        "시안 1 이미지 받기",
        "시안 2 이미지 받기",
        "문구 받기 (텍스트)",
        "문구 받기 (JSON)",
    ]


def test_the_finished_ad_stays_on_the_page_after_an_unrelated_rerun(page: AppTest) -> None:
    page.text_input(key="keyword").input("아이스 아메리카노")
    _submit(page, "광고 만들기")
    page.run()
    assert len(_images(page)) == 1 and "광고가 완성됐어요" in page.success[0].value


def test_queue_full_is_shown_in_korean_with_the_retry_delay_and_request_id(page: AppTest) -> None:
    page.text_input(key="keyword").input(BUSY_KEYWORD)
    _submit(page, "광고 만들기")
    assert "대기열이 가득 찼어요" in page.error[0].value and "7초 뒤에 다시 시도" in page.error[0].value
    assert "GPU" not in page.error[0].value
    assert page.caption[-1].value.startswith("요청 번호: ")
    assert not _images(page)


def test_edit_without_a_photo_asks_for_one_before_any_call(page: AppTest, fake_ad_service: FakeAdService) -> None:
    calls_before = len(fake_ad_service.servicer.edit_requests)
    page.radio(key="mode").set_value("사진 편집").run()
    page.text_area(key="instruction").input("배경을 바다로 바꿔줘")
    _submit(page, "사진 편집하기")
    assert "사진을 먼저 올려 주세요" in page.warning[0].value
    assert len(fake_ad_service.servicer.edit_requests) == calls_before


def test_edit_shows_original_and_edited_side_by_side_with_a_download(
    page: AppTest, fake_ad_service: FakeAdService
) -> None:
    photo = png_of(64, 48, "green")
    page.radio(key="mode").set_value("사진 편집").run()
    page.file_uploader[0].upload("cup.png", photo, "image/png")
    page.text_area(key="instruction").input("컵을 파란색으로 바꿔줘")
    _submit(page, "사진 편집하기")

    sent = fake_ad_service.servicer.edit_requests[-1]
    assert sent.image.data == photo and sent.instruction == "컵을 파란색으로 바꿔줘"
    assert sent.num_inference_steps == 2 and sent.request_id
    assert "사진 편집이 끝났어요" in page.success[0].value
    assert len(_images(page)) == 2
    assert _download_labels(page) == ["편집한 사진 받기"]


def test_an_unreadable_photo_is_shown_as_the_korean_invalid_image_message(page: AppTest) -> None:
    page.radio(key="mode").set_value("사진 편집").run()
    page.file_uploader[0].upload("broken.png", b"not a png", "image/png")
    page.text_area(key="instruction").input(BROKEN_INSTRUCTION)
    _submit(page, "사진 편집하기")
    assert "사진 파일을 읽을 수 없어요" in page.error[0].value
    assert "decoded" not in page.error[0].value
