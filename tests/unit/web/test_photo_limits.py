"""The page takes photos up to the orchestrator's limit, says so, and tells a too-large photo from a broken one."""

from __future__ import annotations

import io

import grpc
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from adgen_client.errors import AdGenError, FieldViolation
from adgen_orchestrator.config import OrchestratorSettings
from adgen_web.cli import APP_PATH, streamlit_args
from adgen_web.config import WebSettings
from adgen_web.messages import describe_error, is_photo_too_large
from tests.unit.web.conftest import TOO_LARGE_INSTRUCTION, FakeAdService, orchestrator_refusal, png_of

_TIMEOUT_S = 30


def _invalid_image(description: str) -> AdGenError:
    return AdGenError(
        code=grpc.StatusCode.INVALID_ARGUMENT,
        message="Invalid request",
        reason="INVALID_IMAGE",
        field_violations=[FieldViolation("request.image.data", description, "INVALID_IMAGE")],
    )


@pytest.fixture
def edit_page(fake_ad_service: FakeAdService, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The page in edit mode, pointed at the fake; a test may set ADGEN_WEB_* variables before asking for it."""
    monkeypatch.setenv("ADGEN_WEB_TARGET", fake_ad_service.target)
    app = AppTest.from_file(str(APP_PATH), default_timeout=_TIMEOUT_S)
    app.run()
    app.radio(key="mode").set_value("사진 편집").run()
    assert not app.exception
    return app


def _submit_edit(app: AppTest, photo: bytes, instruction: str) -> None:
    app.file_uploader[0].upload("photo.png", photo, "image/png")
    app.text_area(key="instruction").input(instruction)
    next(button for button in app.button if button.label == "사진 편집하기").click()
    app.run()
    assert not app.exception


def test_the_page_and_the_orchestrator_default_to_the_same_photo_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADGEN_WEB_MAX_PHOTO_BYTES", raising=False)
    monkeypatch.delenv("ADGEN_ORCHESTRATOR_MAX_INPUT_BYTES", raising=False)
    assert WebSettings().max_photo_bytes == OrchestratorSettings().max_input_bytes == 20 * 1024 * 1024


@pytest.mark.parametrize(("limit_bytes", "megabytes"), [(20 * 1024 * 1024, 20), (5 * 1024 * 1024 + 1, 6)])
def test_streamlit_starts_with_the_photo_limit_instead_of_its_200_mb(limit_bytes: int, megabytes: int) -> None:
    args = streamlit_args([], WebSettings(max_photo_bytes=limit_bytes))
    assert f"--server.maxUploadSize={megabytes}" in args


def test_the_uploader_states_the_real_limit_and_enforces_it(edit_page: AppTest) -> None:
    uploader = edit_page.file_uploader[0]
    assert "최대 20MB" in uploader.label
    assert uploader.proto.max_upload_size_mb == 20


@pytest.fixture
def small_photo_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADGEN_WEB_MAX_PHOTO_BYTES", "1000")


def test_a_photo_over_the_limit_is_refused_in_korean_before_any_call(
    small_photo_limit: None, edit_page: AppTest, fake_ad_service: FakeAdService
) -> None:
    calls_before = len(fake_ad_service.servicer.edit_requests)
    _submit_edit(edit_page, b"\x89PNG" + bytes(2000), "배경을 바다로 바꿔줘")
    assert "사진이 너무 커요" in edit_page.error[0].value and "0.000954MB" in edit_page.error[0].value
    assert "읽을 수 없어요" not in edit_page.error[0].value
    assert len(fake_ad_service.servicer.edit_requests) == calls_before


def test_the_servers_too_large_refusal_is_told_as_too_large_not_unreadable(edit_page: AppTest) -> None:
    _submit_edit(edit_page, png_of(64, 48, "green"), TOO_LARGE_INSTRUCTION)
    error = edit_page.error[0].value
    assert "사진이 너무 커요" in error and "최대 20MB" in error
    assert "읽을 수 없어요" not in error and "limit" not in error


def test_the_orchestrators_byte_and_pixel_refusals_both_read_as_too_large() -> None:
    over_bytes = orchestrator_refusal(png_of(8, 8, "red"), max_bytes=16)
    over_pixels = orchestrator_refusal(png_of(8, 8, "red"), max_pixels=10)
    for description in (over_bytes, over_pixels):
        assert is_photo_too_large(_invalid_image(description)), description
        assert describe_error(_invalid_image(description)).problem == "사진이 너무 커요."


def test_an_undecodable_or_wrong_format_photo_still_reads_as_unreadable() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "GIF")
    for description in (orchestrator_refusal(b"not a photo"), orchestrator_refusal(buffer.getvalue())):
        assert not is_photo_too_large(_invalid_image(description)), description
        assert "읽을 수 없어요" in describe_error(_invalid_image(description)).problem


def test_a_missing_overlay_font_suggests_turning_the_overlays_off() -> None:
    error = AdGenError(code=grpc.StatusCode.FAILED_PRECONDITION, message="x", reason="FONT_UNAVAILABLE")
    message = describe_error(error)
    assert "글꼴" in message.problem and "헤드라인 글자 넣기" in message.next_step


def test_the_orchestrators_aspect_ratio_refusal_asks_for_a_crop_with_its_limit() -> None:
    description = orchestrator_refusal(png_of(900, 8, "red"))
    message = describe_error(_invalid_image(description))
    assert message.problem == "사진이 너무 길쭉해요." and "8:1" in message.next_step
    assert not is_photo_too_large(_invalid_image(description))
