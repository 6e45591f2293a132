"""A product ad in three placements through the three real services (tiny twins), over the SDK."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from adgen.type.v1 import ad_pb2
from adgen_client import AsyncAdGenClient
from adgen_orchestrator.sizing import PLACEMENT_SIZES
from tests.live_services import Services
from tests.support.product_photos import cut_out_png, product_unchanged

pytestmark = [pytest.mark.integration, pytest.mark.slow]
KEYWORD = "여름 느낌 딸기 생과일 주스"


async def test_a_cut_out_product_is_unchanged_pixel_for_pixel_in_feed_portrait_and_story(services: Services) -> None:
    photo = cut_out_png()
    async with AsyncAdGenClient(services.orchestrator, timeout=300) as client:
        ad = await client.create_ad(
            KEYWORD,
            product_photos=[photo],
            placements=["feed-square", "feed-portrait", "story"],
            num_inference_steps=2,
            seed=21,
        )  # No output_format: a cut-out product ad is written as PNG by default.
    # FLUX.2 klein's reference-image edit drew each scene (the default text-to-image model can edit).
    assert ad.model_id == "flux2-klein-4b"
    assert [image.placement for image in ad.images] == [
        ad_pb2.PLACEMENT_FEED_SQUARE,
        ad_pb2.PLACEMENT_FEED_PORTRAIT,
        ad_pb2.PLACEMENT_STORY,
    ]
    for image in ad.images:
        size = PLACEMENT_SIZES[image.placement]
        with Image.open(io.BytesIO(image.image.data)) as decoded:
            assert decoded.format == "PNG" and decoded.size == (size.width, size.height)
        assert product_unchanged(image.image.data, photo, image.placement)
        assert image.seed == 21
    assert len({image.image_prompt for image in ad.images}) == 1
