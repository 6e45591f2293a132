"""The overlay font comes with the project's install; without any Korean font an overlay is FONT_UNAVAILABLE."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from PIL import ImageFont
from pydantic import ValidationError

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import ad_pb2
from adgen_client.errors import AdGenError
from adgen_orchestrator import overlay
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.overlay import (
    NOTO_CJK_PATHS,
    PRETENDARD_IN_CHECKOUT,
    FontUnavailableError,
    find_korean_font,
    has_hangul,
)
from adgen_runtime.settings import settings_problems

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def _story(*, overlay_headline: bool = False, ai_disclosure: bool = False) -> ad_pb.CreateAdRequest:
    return ad_pb.CreateAdRequest(
        keyword="여름 느낌 딸기 생과일 주스",
        placement=ad_pb2.PLACEMENT_STORY,
        width=270,
        height=480,
        overlay_headline=overlay_headline,
        ai_disclosure=ai_disclosure,
    )


@pytest.fixture
def no_korean_font(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without any of the fonts the overlay looks for."""
    monkeypatch.setattr(overlay, "DEFAULT_FONT_PATHS", (tmp_path / "Pretendard-Bold.otf", tmp_path / "Noto.ttc"))


def test_the_default_font_is_pretendard_from_the_projects_npm_install() -> None:
    source = find_korean_font()
    assert source.path == PRETENDARD_IN_CHECKOUT
    font = ImageFont.truetype(str(source.path), 40, index=source.index)
    assert font.getname() == ("Pretendard", "Bold")
    assert has_hangul(font)  # Each syllable drawn, none as the tofu box.


@pytest.mark.skipif(not NOTO_CJK_PATHS[0].is_file(), reason="Debian's fonts-noto-cjk is not installed")
def test_debians_noto_cjk_is_the_fallback_and_its_korean_face_is_chosen(tmp_path: Path) -> None:
    source = overlay._default_korean_font((tmp_path / "missing.otf", *NOTO_CJK_PATHS))
    font = ImageFont.truetype(str(source.path), 24, index=source.index)
    assert source.path == NOTO_CJK_PATHS[0] and font.getname()[0] == "Noto Sans CJK KR"


@pytest.mark.skipif(not DEJAVU.is_file(), reason="DejaVu Sans is not installed")
def test_a_font_without_hangul_is_not_taken_for_a_korean_one() -> None:
    assert not has_hangul(ImageFont.truetype(str(DEJAVU), 24))
    with pytest.raises(FontUnavailableError):
        find_korean_font(DEJAVU)


@pytest.mark.usefixtures("no_korean_font")
def test_without_any_font_the_error_tells_the_operator_how_to_install_one() -> None:
    with pytest.raises(FontUnavailableError, match=r"npm ci.*fonts-noto-cjk.*ADGEN_ORCHESTRATOR_OVERLAY_FONT_PATH"):
        find_korean_font()


def test_a_configured_file_that_is_no_font_stops_the_server_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_font = tmp_path / "headline.otf"
    not_a_font.write_bytes(b"not a font")
    monkeypatch.setenv("ADGEN_ORCHESTRATOR_OVERLAY_FONT_PATH", str(not_a_font))
    with pytest.raises(ValidationError) as raised:
        OrchestratorSettings()
    assert settings_problems(OrchestratorSettings, raised.value, {}) == [
        "ADGEN_ORCHESTRATOR_OVERLAY_FONT_PATH: is not a loadable OTF, TTF or TTC font with Hangul glyphs"
    ]


def test_a_configured_korean_font_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADGEN_ORCHESTRATOR_OVERLAY_FONT_PATH", str(PRETENDARD_IN_CHECKOUT))
    assert OrchestratorSettings().overlay_font_path == PRETENDARD_IN_CHECKOUT


@pytest.mark.usefixtures("no_korean_font")
@pytest.mark.parametrize(("headline", "badge"), [(True, False), (False, True)])
async def test_an_overlay_without_a_font_is_failed_precondition_font_unavailable_not_internal(
    ad_stub: ad_grpc.AdServiceAsyncStub, headline: bool, badge: bool
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ad_stub.CreateAd(_story(overlay_headline=headline, ai_disclosure=badge))
    error = AdGenError.from_rpc_error(raised.value)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "FONT_UNAVAILABLE"
    assert "without overlay_headline and ai_disclosure" in error.message
    assert "/" not in error.message and "npm" not in error.message  # No server paths or setup commands.


@pytest.mark.usefixtures("no_korean_font")
async def test_without_a_font_an_ad_without_overlays_is_still_made(ad_stub: ad_grpc.AdServiceAsyncStub) -> None:
    ad = await ad_stub.CreateAd(_story())
    assert len(ad.images) == 1 and ad.images[0].image.data
