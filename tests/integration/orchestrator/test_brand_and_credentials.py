"""CreateAd with a brand kit and a configured C2PA certificate, through a real orchestrator over gRPC."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import c2pa
import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status
from PIL import Image
from pydantic import ValidationError

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import ad_pb2, image_pb2
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.overlay import LOGO_MAX_HEIGHT, safe_zone_for
from adgen_orchestrator.server import OrchestratorServer, create_server
from adgen_runtime.server import RunningServer
from adgen_wire.channel import create_aio_channel
from tests.support.c2pa_certs import SigningIdentity, make_signing_identity
from tests.support.orchestrator_fakes import FakeCopywriter, FakeDiffusion, png, serve_fakes

pytestmark = pytest.mark.integration

SIZE = 540
PINK = (255, 192, 203)  # The fake diffusion service's picture.
LOGO_RED, NAVY, GOLD = (200, 20, 60), (20, 30, 90), (255, 200, 40)


def logo_png() -> bytes:
    """2:1, left half opaque red, right half transparent."""
    logo = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    logo.paste((*LOGO_RED, 255), (0, 0, 100, 100))
    buffer = io.BytesIO()
    logo.save(buffer, "PNG")
    return buffer.getvalue()


BRAND = ad_pb2.BrandKit(
    name="하루카페",
    logo=image_pb2.Image(data=logo_png()),
    primary_color="#141E5A",
    accent_color="#FFC828",
    headline_font="pretendard-extrabold",
)


@dataclass
class SignedStack:
    orchestrator: OrchestratorServer
    downstream: RunningServer
    copywriter: FakeCopywriter
    identity: SigningIdentity


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SignedStack]:
    identity = make_signing_identity()
    chain_file, key_file = identity.write(tmp_path_factory.mktemp("c2pa"))
    copywriter = FakeCopywriter()
    downstream = await serve_fakes(copywriter, FakeDiffusion())
    target = f"127.0.0.1:{downstream.port}"
    settings = OrchestratorSettings(
        port=0,
        http_port=0,
        copywriter_target=target,
        diffusion_target=target,
        c2pa_cert_file=chain_file,
        c2pa_key_file=key_file,
    )
    orchestrator = await create_server(settings)
    yield SignedStack(orchestrator, downstream, copywriter, identity)
    await orchestrator.stop(None)
    await downstream.stop(None)


@pytest.fixture
async def stub(stack: SignedStack) -> AsyncIterator[ad_grpc.AdServiceAsyncStub]:
    stack.copywriter.reset()
    async with create_aio_channel(f"127.0.0.1:{stack.orchestrator.port}") as channel:
        yield ad_grpc.AdServiceStub(channel)


def credentials(data: bytes, mime: str, identity: SigningIdentity) -> tuple[str, dict[str, Any]]:
    context = c2pa.Context.from_dict({"trust": {"trust_anchors": identity.ca_certificate.decode()}})
    with c2pa.Reader(mime, io.BytesIO(data), context=context) as reader:
        return reader.get_validation_state(), reader.get_active_manifest()


async def test_a_branded_ad_has_the_logo_and_colours_and_signed_credentials(
    stack: SignedStack, stub: ad_grpc.AdServiceAsyncStub
) -> None:
    reply = await stub.CreateAd(
        ad_pb.CreateAdRequest(
            keyword="여름 딸기 주스",
            width=SIZE,
            height=SIZE,
            output_format=image_pb2.IMAGE_FORMAT_PNG,
            overlay_headline=True,
            ai_disclosure=True,
            brand=BRAND,
        )
    )
    (sent,) = stack.copywriter.calls
    assert sent.request.brand_name == "하루카페"
    (ad_image,) = reply.images
    state, manifest = credentials(ad_image.image.data, "image/png", stack.identity)
    assert state == "Trusted"
    actions = next(a for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))
    (created,) = actions["data"]["actions"]
    assert created["action"] == "c2pa.created" and created["softwareAgent"]["name"] == reply.model_id
    with Image.open(io.BytesIO(ad_image.image.data)) as delivered:
        picture = delivered.convert("RGB")
    zone = safe_zone_for(ad_pb2.PLACEMENT_FEED_SQUARE).box(SIZE, SIZE)
    logo_height = round(SIZE * LOGO_MAX_HEIGHT)
    middle = zone.bottom - logo_height // 2
    assert picture.getpixel((zone.left + logo_height // 2, middle)) == LOGO_RED  # The logo's opaque half.
    assert picture.getpixel((zone.left + 3 * logo_height // 2, middle)) == PINK  # Its transparent half.
    colours = set(picture.crop((0, 0, SIZE, SIZE // 3)).getcolors(SIZE * SIZE) or [])
    assert {NAVY, GOLD} <= {colour for _, colour in colours}  # The headline's panel and text.
    assert picture.getpixel((zone.right - 3, zone.bottom - 8)) == GOLD  # The badge's plate is the accent.


async def test_an_edit_is_signed_with_its_source_photo_as_parent(
    stack: SignedStack, stub: ad_grpc.AdServiceAsyncStub
) -> None:
    reply = await stub.EditAd(
        ad_pb.EditAdRequest(
            image=image_pb2.Image(data=png(64, 48, "blue")),
            instruction="커피를 딸기 라떼로 바꿔 줘",
            output_format=image_pb2.IMAGE_FORMAT_JPEG,
        )
    )
    state, manifest = credentials(reply.image.data, "image/jpeg", stack.identity)
    assert state == "Trusted"
    (parent,) = manifest["ingredients"]
    assert parent["relationship"] == "parentOf" and parent["format"] == "image/png"


async def test_a_bad_brand_kit_names_each_field_and_costs_no_copy(
    stack: SignedStack, stub: ad_grpc.AdServiceAsyncStub
) -> None:
    opaque = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(opaque, "PNG")
    kit = ad_pb2.BrandKit(logo=image_pb2.Image(data=opaque.getvalue()), primary_color="navy", headline_font="x")
    call = stub.CreateAd(ad_pb.CreateAdRequest(keyword="딸기 주스", brand=kit))
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    fields: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = {v.field: v.reason for v in bad.field_violations}
    assert fields == {
        "brand.logo": "INVALID_IMAGE",
        "brand.primary_color": "INVALID_ARGUMENT",
        "brand.headline_font": "INVALID_ARGUMENT",
    }
    assert stack.copywriter.calls == []


async def test_the_brand_kit_works_over_http_json(stack: SignedStack) -> None:
    stack.copywriter.reset()
    body = {
        "keyword": "딸기 주스",
        "width": SIZE,
        "height": SIZE,
        "outputFormat": "IMAGE_FORMAT_WEBP",
        "brand": {
            "name": "하루카페",
            "logo": {"data": base64.b64encode(logo_png()).decode()},
            "accentColor": "#FFC828",
        },
    }
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.orchestrator.http_port}") as client:
        reply = await client.post("/adgen.ad.v1.AdService/CreateAd", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    (sent,) = stack.copywriter.calls
    assert sent.request.brand_name == "하루카페"
    data = base64.b64decode(reply.json()["images"][0]["image"]["data"])
    assert credentials(data, "image/webp", stack.identity)[0] == "Trusted"


def test_a_certificate_without_its_key_is_a_settings_error(tmp_path: Path) -> None:
    chain_file, _ = make_signing_identity().write(tmp_path)
    with pytest.raises(ValidationError, match="C2PA_CERT_FILE and C2PA_KEY_FILE must be set together"):
        OrchestratorSettings(c2pa_cert_file=chain_file)


def test_a_key_of_another_certificate_is_a_settings_error_at_start(tmp_path: Path) -> None:
    chain_file, key_file = make_signing_identity().write(tmp_path)
    key_file.write_bytes(make_signing_identity().private_key)
    with pytest.raises(ValidationError, match="cannot sign C2PA manifests"):
        OrchestratorSettings(c2pa_cert_file=chain_file, c2pa_key_file=key_file)
