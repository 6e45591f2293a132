"""A hostile pass over every RPC and the HTTP edge: malformed requests get a reasoned, field-named, clean error."""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import httpx
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from PIL import Image

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.copywriter.v1 import copywriter_service_pb2 as cw_pb
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as cw_grpc
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as df_grpc
from adgen.type.v1 import image_pb2
from adgen_wire.channel import create_aio_channel
from tests.live_services import Services

pytestmark = pytest.mark.integration

# What no message may carry: tracebacks, source paths, exception class names.
_INTERNAL_TEXT = re.compile(r"Traceback|File \"|\.py\b|/work/|/usr/|site-packages|\b[A-Z][a-zA-Z]*(Error|Exception)\b")


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, "PNG")
    return buffer.getvalue()


PHOTO = _png(96, 64)
TRUNCATED = PHOTO[: len(PHOTO) // 2]
SLIVER = _png(4000, 4)
LONG_ID = "m" * 5000


def _image(data: bytes) -> image_pb2.Image:
    return image_pb2.Image(data=data)


M = TypeVar("M", bound=Message)


def _with(base: M, **fields: Any) -> M:
    """`base` with `fields` set (message fields copied in), each case spoiling one of them."""
    for name, value in fields.items():
        if isinstance(value, Message):
            getattr(base, name).CopyFrom(value)
        else:
            setattr(base, name, value)
    return base


def _generate(**fields: Any) -> df_pb.GenerateRequest:
    return _with(df_pb.GenerateRequest(prompt="a latte", width=64, height=64), **fields)


def _edit(**fields: Any) -> df_pb.EditRequest:
    base = df_pb.EditRequest(image=_image(PHOTO), instruction="make it pink", width=64, height=64)
    return _with(base, **fields)


def _create(**fields: Any) -> ad_pb.CreateAdRequest:
    return _with(ad_pb.CreateAdRequest(keyword="딸기 라떼", width=64, height=64), **fields)


def _edit_ad(**fields: Any) -> ad_pb.EditAdRequest:
    return _with(ad_pb.EditAdRequest(image=_image(PHOTO), instruction="컵을 빨간색으로 바꿔줘"), **fields)


def _copy(**fields: Any) -> cw_pb.GenerateCopyRequest:
    return _with(cw_pb.GenerateCopyRequest(keyword="딸기 라떼"), **fields)


# (service, method, request): every one is malformed in exactly the way its name says.
GRPC_CASES: dict[str, tuple[str, str, Message]] = {
    "generate-empty-prompt": ("diffusion", "Generate", _generate(prompt="  ")),
    "generate-width-too-large": ("diffusion", "Generate", _generate(width=8192)),
    "generate-height-too-small": ("diffusion", "Generate", _generate(height=8)),
    "generate-width-off-grid": ("diffusion", "Generate", _generate(width=1000)),
    "generate-negative-width": ("diffusion", "Generate", _generate(width=-64)),
    "generate-zero-steps": ("diffusion", "Generate", _generate(num_inference_steps=0)),
    "generate-huge-steps": ("diffusion", "Generate", _generate(num_inference_steps=100000)),
    "generate-negative-guidance": ("diffusion", "Generate", _generate(guidance_scale=-1.0)),
    "generate-nan-guidance": ("diffusion", "Generate", _generate(guidance_scale=math.nan)),
    "generate-too-many-images": ("diffusion", "Generate", _generate(image_count=9)),
    "generate-unknown-format": ("diffusion", "Generate", _generate(output_format=99)),
    "generate-unknown-model": ("diffusion", "Generate", _generate(model_id="sdxl-turbo")),
    "generate-long-model-id": ("diffusion", "Generate", _generate(model_id=LONG_ID)),
    "generate-on-edit-model": ("diffusion", "Generate", _generate(model_id="qwen-image-edit-2511")),
    "generate-control-only-prompt": ("diffusion", "Generate", _generate(prompt="\x00\x01\x02")),
    "stream-generate-empty-prompt": ("diffusion", "StreamGenerate", df_pb.StreamGenerateRequest()),
    "stream-generate-bad-width": (
        "diffusion",
        "StreamGenerate",
        df_pb.StreamGenerateRequest(request=_generate(width=17)),
    ),
    "edit-no-image": ("diffusion", "Edit", _edit(image=image_pb2.Image())),
    "edit-garbage-image": ("diffusion", "Edit", _edit(image=_image(b"not a photo at all"))),
    "edit-truncated-png": ("diffusion", "Edit", _edit(image=_image(TRUNCATED))),
    "edit-sliver-photo": ("diffusion", "Edit", _edit(image=_image(SLIVER), width=0, height=0)),
    "edit-empty-instruction": ("diffusion", "Edit", _edit(instruction="")),
    "edit-on-text-only-model": ("diffusion", "Edit", _edit(model_id="z-image-turbo")),
    "edit-zero-steps": ("diffusion", "Edit", _edit(num_inference_steps=0)),
    "edit-unknown-model": ("diffusion", "Edit", _edit(model_id="nope")),
    "stream-edit-garbage": (
        "diffusion",
        "StreamEdit",
        df_pb.StreamEditRequest(request=_edit(image=_image(b"\x89PNG\r\n\x1a\n"))),
    ),
    "load-empty-id": ("diffusion", "LoadModel", df_pb.LoadModelRequest()),
    "load-unknown-id": ("diffusion", "LoadModel", df_pb.LoadModelRequest(model_id="nope")),
    "load-long-id": ("diffusion", "LoadModel", df_pb.LoadModelRequest(model_id=LONG_ID)),
    "unload-unknown-id": ("diffusion", "UnloadModel", df_pb.UnloadModelRequest(model_id="nope")),
    "copy-empty-keyword": ("copywriter", "GenerateCopy", _copy(keyword="")),
    "copy-blank-keyword": ("copywriter", "GenerateCopy", _copy(keyword=" \t ")),
    "copy-control-keyword": ("copywriter", "GenerateCopy", _copy(keyword="\x07\x1b")),
    "copy-huge-keyword": ("copywriter", "GenerateCopy", _copy(keyword="딸" * 20000)),
    "copy-unknown-tone": ("copywriter", "GenerateCopy", _copy(tone=99)),
    "copy-unknown-placement": ("copywriter", "GenerateCopy", _copy(placement=99)),
    "copy-too-many-variants": ("copywriter", "GenerateCopy", _copy(variant_count=9)),
    "copy-negative-variants": ("copywriter", "GenerateCopy", _copy(variant_count=-1)),
    "copy-unknown-caption-length": ("copywriter", "GenerateCopy", _copy(caption_length=99)),
    "copy-unknown-emoji-level": ("copywriter", "GenerateCopy", _copy(emoji_level=99)),
    "instruction-empty": ("copywriter", "WriteEditInstruction", cw_pb.WriteEditInstructionRequest()),
    "instruction-control-only": (
        "copywriter",
        "WriteEditInstruction",
        cw_pb.WriteEditInstructionRequest(request="\x00\x00"),
    ),
    "ad-empty-keyword": ("orchestrator", "CreateAd", _create(keyword="")),
    "ad-too-many-variants": ("orchestrator", "CreateAd", _create(variant_count=9)),
    "ad-width-too-large": ("orchestrator", "CreateAd", _create(width=5000)),
    "ad-height-too-small": ("orchestrator", "CreateAd", _create(height=7)),
    "ad-unknown-tone": ("orchestrator", "CreateAd", _create(tone=99)),
    "ad-unknown-placement": ("orchestrator", "CreateAd", _create(placement=99)),
    "ad-unknown-format": ("orchestrator", "CreateAd", _create(output_format=99)),
    "ad-zero-steps": ("orchestrator", "CreateAd", _create(num_inference_steps=0)),
    "ad-unknown-model": ("orchestrator", "CreateAd", _create(model_id="nope")),
    "ad-long-model-id": ("orchestrator", "CreateAd", _create(model_id=LONG_ID)),
    "ad-korean-request-id": ("orchestrator", "CreateAd", _create(request_id="요청-1")),
    "ad-newline-request-id": ("orchestrator", "CreateAd", _create(request_id="abc\ndef")),
    "ad-huge-request-id": ("orchestrator", "CreateAd", _create(request_id="r" * 100_000)),
    "ad-control-keyword": ("orchestrator", "CreateAd", _create(keyword="\x00\x1f")),
    "stream-ad-empty-keyword": ("orchestrator", "StreamCreateAd", ad_pb.StreamCreateAdRequest()),
    "edit-ad-no-image": ("orchestrator", "EditAd", _edit_ad(image=image_pb2.Image())),
    "edit-ad-garbage-image": ("orchestrator", "EditAd", _edit_ad(image=_image(b"GIF89a nope"))),
    "edit-ad-empty-instruction": ("orchestrator", "EditAd", _edit_ad(instruction="")),
    "edit-ad-sliver-photo": ("orchestrator", "EditAd", _edit_ad(image=_image(SLIVER))),
    "edit-ad-unknown-model": ("orchestrator", "EditAd", _edit_ad(model_id="nope")),
    "edit-ad-bad-request-id": ("orchestrator", "EditAd", _edit_ad(request_id="a b")),
    "stream-edit-ad-garbage": (
        "orchestrator",
        "StreamEditAd",
        ad_pb.StreamEditAdRequest(request=_edit_ad(image=_image(TRUNCATED))),
    ),
}

_STUBS: dict[str, Callable[[aio.Channel], Any]] = {
    "diffusion": df_grpc.DiffusionServiceStub,
    "copywriter": cw_grpc.CopywriterServiceStub,
    "orchestrator": ad_grpc.AdServiceStub,
}
_SERVICE_NAMES = {
    "diffusion": "adgen.diffusion.v1.DiffusionService",
    "copywriter": "adgen.copywriter.v1.CopywriterService",
    "orchestrator": "adgen.ad.v1.AdService",
}


def _target(services: Services, service: str) -> str:
    return str(getattr(services, service))


async def _grpc_status(services: Services, service: str, method: str, request: Message) -> status_pb2.Status:
    async with create_aio_channel(_target(services, service)) as channel:
        call = getattr(_STUBS[service](channel), method)(request, timeout=60)
        try:
            if isinstance(call, aio.UnaryStreamCall):
                async for _ in call:
                    pass
            else:
                await call
        except aio.AioRpcError:
            pass
        else:
            raise AssertionError(f"{service}.{method} accepted a malformed request")
        status = await rpc_status.aio.from_call(call)
        code = await call.code()
    assert status is not None, f"{service}.{method} answered {code} without rich details"
    return status


def _details(status: status_pb2.Status) -> tuple[error_details_pb2.ErrorInfo | None, error_details_pb2.BadRequest]:
    info: error_details_pb2.ErrorInfo | None = None
    bad = error_details_pb2.BadRequest()
    for packed in status.details:
        candidate = error_details_pb2.ErrorInfo()
        if packed.Unpack(candidate):
            info = candidate
        packed.Unpack(bad)
    return info, bad


def _assert_clean_error(label: str, code: int, status: status_pb2.Status) -> None:
    assert code not in (grpc.StatusCode.UNKNOWN.value[0], grpc.StatusCode.INTERNAL.value[0]), (label, status.message)
    info, bad = _details(status)
    assert info is not None and info.reason and info.domain == "adgen.dev", (label, status.message)
    if code == grpc.StatusCode.INVALID_ARGUMENT.value[0]:
        assert bad.field_violations, (label, status.message)
    assert not _INTERNAL_TEXT.search(status.message), (label, status.message)
    for violation in bad.field_violations:
        assert not _INTERNAL_TEXT.search(violation.description), (label, violation.description)


@pytest.mark.parametrize("case", list(GRPC_CASES))
async def test_a_malformed_grpc_request_gets_a_clean_reasoned_error(services: Services, case: str) -> None:
    service, method, request = GRPC_CASES[case]
    status = await _grpc_status(services, service, method, request)
    _assert_clean_error(case, status.code, status)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


_JSON = {"content-type": "application/json"}
# (method, path, headers, body): the HTTP edge's own ways in.
HTTP_CASES: dict[str, tuple[str, str, dict[str, str], bytes]] = {
    "http-empty-keyword": ("POST", "/adgen.ad.v1.AdService/CreateAd", _JSON, b'{"keyword": ""}'),
    "http-unknown-enum": ("POST", "/adgen.ad.v1.AdService/CreateAd", _JSON, b'{"keyword": "x", "placement": "STORY"}'),
    "http-wrong-type": ("POST", "/adgen.ad.v1.AdService/CreateAd", _JSON, b'{"keyword": "x", "width": "wide"}'),
    "http-not-json": ("POST", "/adgen.ad.v1.AdService/CreateAd", _JSON, b"{{{"),
    "http-unknown-field": ("POST", "/adgen.ad.v1.AdService/CreateAd", _JSON, b'{"keyword": "x", "colour": 1}'),
    "http-too-many-variants": (
        "POST",
        "/adgen.ad.v1.AdService/CreateAd",
        _JSON,
        b'{"keyword": "x", "variantCount": 9}',
    ),
    "http-korean-request-id": (
        "POST",
        "/adgen.ad.v1.AdService/CreateAd",
        _JSON,
        '{"keyword": "x", "requestId": "요청"}'.encode(),
    ),
    "http-image-not-base64": (
        "POST",
        "/adgen.ad.v1.AdService/EditAd",
        _JSON,
        b'{"image": {"data": "%%%"}, "instruction": "x"}',
    ),
    "http-garbage-image": (
        "POST",
        "/adgen.ad.v1.AdService/EditAd",
        _JSON,
        ('{"image": {"data": "' + _b64(b"nope") + '"}, "instruction": "x"}').encode(),
    ),
    "http-unknown-method": ("POST", "/adgen.ad.v1.AdService/DeleteAd", _JSON, b"{}"),
    "http-unknown-path": ("POST", "/nothing/here", _JSON, b"{}"),
    "http-get": ("GET", "/adgen.ad.v1.AdService/CreateAd", {}, b""),
    "http-plain-text": ("POST", "/adgen.ad.v1.AdService/CreateAd", {"content-type": "text/plain"}, b"keyword=x"),
}


@pytest.mark.parametrize("case", list(HTTP_CASES))
async def test_a_malformed_http_request_gets_a_connect_error_with_a_reason(services: Services, case: str) -> None:
    method, path, headers, body = HTTP_CASES[case]
    async with httpx.AsyncClient(base_url=services.orchestrator_http, timeout=60) as http:
        reply = await http.request(method, path, headers=headers, content=body)
    assert 400 <= reply.status_code < 500, (case, reply.status_code, reply.text)
    error = reply.json()
    assert error["code"] not in ("unknown", "internal"), (case, error)
    assert not _INTERNAL_TEXT.search(error.get("message", "")), (case, error)
    details = {d["type"]: base64.b64decode(d["value"] + "==") for d in error.get("details", [])}
    info = error_details_pb2.ErrorInfo.FromString(details["google.rpc.ErrorInfo"])
    assert info.reason and info.domain == "adgen.dev", (case, error)
    if error["code"] == "invalid_argument":
        bad = error_details_pb2.BadRequest.FromString(details["google.rpc.BadRequest"])
        assert bad.field_violations, (case, error)


def test_the_hostile_pass_sends_at_least_sixty_malformed_requests() -> None:
    assert len(GRPC_CASES) + len(HTTP_CASES) >= 60


async def _serving(services: Services, service: str) -> int:
    async with create_aio_channel(_target(services, service)) as channel:
        request = health_pb2.HealthCheckRequest(service=_SERVICE_NAMES[service])
        reply = await health_pb2_grpc.HealthStub(channel).Check(request, timeout=10)
    return int(reply.status)


async def test_every_service_is_still_serving_after_the_hostile_pass(services: Services) -> None:
    calls: list[Awaitable[status_pb2.Status]] = [
        _grpc_status(services, service, method, request) for service, method, request in GRPC_CASES.values()
    ]
    for call in calls:
        await call
    for service in _STUBS:
        assert await _serving(services, service) == health_pb2.HealthCheckResponse.SERVING, service
