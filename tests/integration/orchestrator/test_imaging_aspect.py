"""Long photos are refused before any downstream call; shapes a model cannot render are cropped, not stretched."""

from __future__ import annotations

import io

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status
from PIL import Image, ImageDraw

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import image_pb2
from adgen_orchestrator.imaging import deliver, read_photo
from adgen_orchestrator.provenance import ContentLabel, SourceType
from adgen_orchestrator.sizing import Size, SizeRules, generation_size
from adgen_runtime.photos import InvalidImageError
from tests.integration.orchestrator.conftest import FakeStack
from tests.support.orchestrator_fakes import png

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 40_000_000}
LABEL = ContentLabel(SourceType.GENERATED, "flux2-klein-4b", 1, "strawberries")
RED, WHITE = (255, 0, 0), (255, 255, 255)


def _delivered(render: Image.Image, size: Size) -> Image.Image:
    image = deliver(render, size, image_pb2.IMAGE_FORMAT_PNG, LABEL).image
    return Image.open(io.BytesIO(image.data)).convert("RGB")


def test_a_photo_up_to_eight_to_one_is_read_and_a_longer_one_refused() -> None:
    # Every ratio case of the shared check is in tests/unit/runtime/test_photos.py; read_photo runs it.
    assert read_photo(png(800, 100), **LIMITS).size == Size(800, 100)
    with pytest.raises(InvalidImageError, match="an aspect ratio of 9:1; photos up to 8:1 can be edited"):
        read_photo(png(900, 100), **LIMITS)


async def test_edit_ad_refuses_a_long_photo_before_the_copywriter_or_the_gpu(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    request = ad_pb.EditAdRequest(image=image_pb2.Image(data=png(900, 100)), instruction="밝게 해 줘")
    call = ad_stub.StreamEditAd(ad_pb.StreamEditAdRequest(request=request))
    with pytest.raises(aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad)
    assert info.reason == "INVALID_IMAGE" and [v.field for v in bad.field_violations] == ["request.image.data"]
    assert fake_stack.copywriter.calls == [] and fake_stack.diffusion.calls == []


def test_a_banner_beyond_the_models_sides_is_cropped_from_the_render_not_squashed() -> None:
    delivered = Size(2048, 64)
    rendered = generation_size(delivered, SizeRules(multiple=16, min_side=256, max_side=2048))
    assert rendered == Size(2048, 256)
    render = Image.new("RGB", (rendered.width, rendered.height), WHITE)
    ImageDraw.Draw(render).rectangle((0, 64, 2047, 191), fill=RED)  # The middle half of the render's height.
    banner = _delivered(render, delivered)
    assert banner.size == (2048, 64)
    # A squash would bring the white top and bottom quarters into the banner; the crop keeps the middle only.
    assert banner.getpixel((1024, 0)) == RED and banner.getpixel((1024, 63)) == RED


def test_a_render_a_grid_step_off_the_delivered_shape_is_resized_whole() -> None:
    render = Image.new("RGB", (320, 208), WHITE)  # The 1.54:1 grid size nearest a 3:2 photo.
    ImageDraw.Draw(render).rectangle((0, 0, 3, 207), fill=RED)  # A mark at the left edge.
    edited = _delivered(render, Size(120, 80))
    assert edited.size == (120, 80)
    red, _, _ = edited.getpixel((0, 40))  # type: ignore[misc]
    assert red > 200 and edited.getpixel((0, 40)) != WHITE, "nothing was cropped off the edge"
