"""Control characters against the live services: refused by each of them and by the HTTP edge; an ad made
from text with line breaks has clean copy and an image label that parses."""

from __future__ import annotations

import base64
import io
import xml.etree.ElementTree as ET
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status
from PIL import Image

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.copywriter.v1 import copywriter_service_pb2 as cw_pb
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as cw_grpc
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as df_grpc
from adgen.type.v1 import ad_pb2, image_pb2
from adgen_runtime.text import forbidden_characters
from adgen_wire.channel import create_aio_channel
from tests.live_services import Services

pytestmark = pytest.mark.integration


async def _violated_fields(call: aio.Call) -> list[str]:
    with pytest.raises(aio.AioRpcError) as raised:
        await call  # type: ignore[misc]  # Unary calls are awaitable.
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details)
    return [violation.field for violation in bad_request.field_violations]


async def test_each_service_refuses_a_control_character_naming_the_field(services: Services) -> None:
    async with create_aio_channel(services.orchestrator) as channel:
        ad = ad_grpc.AdServiceStub(channel).CreateAd(ad_pb.CreateAdRequest(keyword="딸기\x00주스"))
        assert await _violated_fields(ad) == ["keyword"]
    async with create_aio_channel(services.copywriter) as channel:
        copy = cw_grpc.CopywriterServiceStub(channel).GenerateCopy(cw_pb.GenerateCopyRequest(keyword="딸기\x1b[2J"))
        assert await _violated_fields(copy) == ["keyword"]
    async with create_aio_channel(services.diffusion) as channel:
        image = df_grpc.DiffusionServiceStub(channel).Generate(df_pb.GenerateRequest(prompt="a cup\x7f"))
        assert await _violated_fields(image) == ["prompt"]


async def test_the_http_edge_refuses_a_control_character_in_a_merchant_fact(services: Services) -> None:
    async with httpx.AsyncClient(base_url=services.orchestrator_http, timeout=60) as http:
        reply = await http.post(
            "/adgen.ad.v1.AdService/CreateAd", json={"keyword": "딸기 주스", "facts": {"price": "5,500원\u0007"}}
        )
    assert reply.status_code == 400
    error: dict[str, Any] = reply.json()
    (bad,) = [d for d in error["details"] if d["type"] == "google.rpc.BadRequest"]
    violations = error_details_pb2.BadRequest.FromString(base64.b64decode(bad["value"] + "==")).field_violations
    assert [v.field for v in violations] == ["facts.price"]


async def test_an_ad_from_text_with_line_breaks_has_clean_copy_and_a_label_that_parses(services: Services) -> None:
    request = ad_pb.CreateAdRequest(
        keyword="여름\n딸기\t주스",
        facts=ad_pb2.MerchantFacts(shop_name="하루\r\n카페"),
        width=256,
        height=256,
        overlay_headline=True,
        output_format=image_pb2.IMAGE_FORMAT_PNG,  # the PNG label carries the text in an iTXt chunk too
    )
    async with create_aio_channel(services.orchestrator) as channel:
        ad = await ad_grpc.AdServiceStub(channel).CreateAd(request, timeout=120)
    for text in (ad.copy.caption, ad.copy.headline, ad.copy.hook, ad.copy.alt_text, *ad.copy.hashtags):
        assert not forbidden_characters(text) and "\t" not in text and "\r" not in text
    with Image.open(io.BytesIO(ad.images[0].image.data)) as image:
        image.load()
        xmp = image.info["XML:com.adobe.xmp"]
    ET.fromstring(xmp)
