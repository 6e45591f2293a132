"""Long photos end to end on the live services: 8:1 is edited by every edit model, anything longer is
INVALID_IMAGE on the photo, from the orchestrator and from the diffusion service alike."""

from __future__ import annotations

import io
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status
from PIL import Image

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as df_grpc
from adgen.type.v1 import image_pb2
from adgen_wire.channel import create_aio_channel
from tests.live_services import Services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EDIT_MODELS = ["qwen-image-edit-2511", "flux2-klein-4b"]


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "orange").save(buffer, "PNG")
    return buffer.getvalue()


async def _refusal(call: Any) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    status: status_pb2.Status | None = await rpc_status.aio.from_call(call)
    assert status is not None
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    for detail in status.details:
        if not detail.Unpack(info):
            detail.Unpack(bad)
    return raised.value.code(), str(info.reason), [str(v.field) for v in bad.field_violations]


@pytest.mark.parametrize("model_id", EDIT_MODELS)
@pytest.mark.parametrize(("width", "height"), [(800, 100), (100, 800)])
async def test_an_eight_to_one_photo_is_edited_and_delivered_at_its_size(
    services: Services, model_id: str, width: int, height: int
) -> None:
    request = ad_pb.EditAdRequest(
        image=image_pb2.Image(data=_png(width, height)), instruction="밝게 해 줘", model_id=model_id, seed=1
    )
    request.num_inference_steps = 2
    async with create_aio_channel(services.orchestrator) as channel:
        edited = await ad_grpc.AdServiceStub(channel).EditAd(request, timeout=240)
    with Image.open(io.BytesIO(edited.image.data)) as decoded:
        assert decoded.size == (width, height)


@pytest.mark.parametrize("model_id", EDIT_MODELS)
async def test_a_longer_photo_is_invalid_image_from_the_orchestrator(services: Services, model_id: str) -> None:
    request = ad_pb.EditAdRequest(image=image_pb2.Image(data=_png(900, 100)), instruction="밝게", model_id=model_id)
    async with create_aio_channel(services.orchestrator) as channel:
        refusal = await _refusal(ad_grpc.AdServiceStub(channel).EditAd(request, timeout=60))
    assert refusal == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_IMAGE", ["image.data"])


@pytest.mark.parametrize("model_id", EDIT_MODELS)
@pytest.mark.parametrize(("width", "height"), [(8000, 8), (801, 100)])
async def test_a_longer_photo_is_invalid_image_from_the_diffusion_service(
    services: Services, model_id: str, width: int, height: int
) -> None:
    request = df_pb.EditRequest(
        model_id=model_id, image=image_pb2.Image(data=_png(width, height)), instruction="make it brighter"
    )
    async with create_aio_channel(services.diffusion) as channel:
        stub = df_grpc.DiffusionServiceStub(channel)
        refusal = await _refusal(stub.Edit(request, timeout=60))
        stream = stub.StreamEdit(df_pb.StreamEditRequest(request=request), timeout=60)
        with pytest.raises(aio.AioRpcError) as raised:
            async for _ in stream:
                pass
    assert refusal == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_IMAGE", ["image.data"])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
