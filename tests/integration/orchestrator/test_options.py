"""CreateAd/EditAd options: quality preference picks the model, headline overlay, AI disclosure."""

from __future__ import annotations

import io

from PIL import Image, ImageChops

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import ad_pb2, image_pb2
from adgen_orchestrator.ad_pipeline import AI_DISCLOSURE_LINE
from adgen_orchestrator.overlay import Box, safe_zone_for
from tests.integration.orchestrator.conftest import FakeStack
from tests.support.orchestrator_fakes import png

KEYWORD = "여름 느낌 딸기 생과일 주스"
PLAIN = Image.new("RGB", (270, 480), "pink")  # What the fake diffusion draws, at the story size used below.


def _story(*, overlay_headline: bool = False, ai_disclosure: bool = False) -> ad_pb.CreateAdRequest:
    return ad_pb.CreateAdRequest(
        keyword=KEYWORD,
        placement=ad_pb2.PLACEMENT_STORY,
        width=270,
        height=480,
        seed=1,
        output_format=image_pb2.IMAGE_FORMAT_PNG,  # Lossless: any changed pixel is drawn text.
        overlay_headline=overlay_headline,
        ai_disclosure=ai_disclosure,
    )


def _changed_box(data: bytes, plain: Image.Image = PLAIN) -> Box | None:
    """Where the delivered image differs from the plain generated one (None: nowhere)."""
    with Image.open(io.BytesIO(data)) as image:
        box = ImageChops.difference(image.convert("RGB"), plain).getbbox()
    return Box(*box) if box else None


async def test_quality_preference_picks_the_configured_model_and_model_id_wins(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    def request(preference: ad_pb.QualityPreference.ValueType, model_id: str = "") -> ad_pb.CreateAdRequest:
        return ad_pb.CreateAdRequest(
            keyword=KEYWORD, width=64, height=64, quality_preference=preference, model_id=model_id
        )

    quality = await ad_stub.CreateAd(request(ad_pb.QUALITY_PREFERENCE_QUALITY))
    fast = await ad_stub.CreateAd(request(ad_pb.QUALITY_PREFERENCE_FAST))
    explicit = await ad_stub.CreateAd(request(ad_pb.QUALITY_PREFERENCE_QUALITY, model_id="flux2-klein-4b"))
    assert [quality.model_id, fast.model_id, explicit.model_id] == ["z-image-turbo", "flux2-klein-4b", "flux2-klein-4b"]
    assert [call.request.model_id for call in fake_stack.diffusion.calls] == [
        "z-image-turbo",
        "flux2-klein-4b",
        "flux2-klein-4b",
    ]


async def test_plain_ads_have_no_text_drawn_and_no_disclosure_line(ad_stub: ad_grpc.AdServiceAsyncStub) -> None:
    ad = await ad_stub.CreateAd(_story())
    assert _changed_box(ad.images[0].image.data) is None
    assert AI_DISCLOSURE_LINE not in ad.copy.caption


async def test_overlay_headline_draws_text_in_the_top_of_the_safe_zone(ad_stub: ad_grpc.AdServiceAsyncStub) -> None:
    ad = await ad_stub.CreateAd(_story(overlay_headline=True))
    drawn = _changed_box(ad.images[0].image.data)
    zone = safe_zone_for(ad_pb2.PLACEMENT_STORY).box(270, 480)
    assert drawn is not None and zone.contains(drawn)
    assert drawn.bottom <= zone.top + (zone.bottom - zone.top) // 3 + 1
    assert AI_DISCLOSURE_LINE not in ad.copy.caption


async def test_ai_disclosure_adds_the_caption_line_and_a_badge_in_the_bottom_corner(
    ad_stub: ad_grpc.AdServiceAsyncStub,
) -> None:
    ad = await ad_stub.CreateAd(_story(ai_disclosure=True))
    assert ad.copy.caption.endswith("\n\n" + AI_DISCLOSURE_LINE)
    badge = _changed_box(ad.images[0].image.data)
    zone = safe_zone_for(ad_pb2.PLACEMENT_STORY).box(270, 480)
    assert badge is not None and zone.contains(badge)
    assert badge.left > 270 // 2 and badge.top > 480 // 2


async def test_edit_ad_with_ai_disclosure_badges_the_photo_at_its_original_size(
    ad_stub: ad_grpc.AdServiceAsyncStub,
) -> None:
    request = ad_pb.EditAdRequest(instruction="밝게 해줘", ai_disclosure=True, output_format=image_pb2.IMAGE_FORMAT_PNG)
    request.image.data = png(300, 200)
    edited = await ad_stub.EditAd(request)
    plain = Image.new("RGB", (300, 200), "red")  # The fake edit output, resized back to the original size.
    with Image.open(io.BytesIO(edited.image.data)) as image:
        assert image.size == (300, 200)
    badge = _changed_box(edited.image.data, plain)
    assert badge is not None and badge.left > 150 and badge.top > 100
