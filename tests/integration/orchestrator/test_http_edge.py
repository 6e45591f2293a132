"""The HTTP edge (Connect JSON, Connect streaming, gRPC-Web, CORS) over real HTTP, on fakes."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
from typing import Any

import grpc
import httpx
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from google.rpc import error_details_pb2
from PIL import Image

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import error_reason_pb2
from adgen_orchestrator.http_edge import _connect_call, connect_error
from adgen_runtime.errors import Unavailable
from tests.integration.orchestrator.conftest import FakeStack

KEYWORD = "여름 느낌 딸기 생과일 주스"
CREATE_AD = "/adgen.ad.v1.AdService/CreateAd"
STREAM_CREATE_AD = "/adgen.ad.v1.AdService/StreamCreateAd"
END_STREAM = 0x02
GRPC_WEB_TRAILERS = 0x80


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def unenvelope(body: bytes) -> list[tuple[int, bytes]]:
    """The (flags, payload) frames of an enveloped Connect-streaming or gRPC-Web body."""
    frames, offset = [], 0
    while offset < len(body):
        flags, length = struct.unpack_from(">BI", body, offset)
        frames.append((flags, body[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    return frames


def error_details(error: dict[str, Any]) -> dict[str, Any]:
    """Connect JSON error details decoded into their google.rpc messages, by type name."""
    kinds = {"google.rpc.ErrorInfo": error_details_pb2.ErrorInfo, "google.rpc.BadRequest": error_details_pb2.BadRequest}
    decoded: dict[str, Any] = {}
    for detail in error.get("details", []):
        kind = kinds.get(detail["type"])
        if kind is not None:
            decoded[detail["type"]] = kind.FromString(base64.b64decode(detail["value"] + "=="))
    return decoded


@pytest.fixture
async def http(fake_stack: FakeStack) -> Any:
    async with httpx.AsyncClient(base_url=fake_stack.http_url, timeout=30) as client:
        yield client


async def test_a_request_id_header_that_is_not_a_short_token_is_replaced(http: httpx.AsyncClient) -> None:
    forged = "x" * 300 + "\tlog-injection"
    reply = await http.post(
        CREATE_AD, json={"keyword": KEYWORD, "width": 64, "height": 64}, headers={"x-request-id": forged}
    )
    assert reply.status_code == 200
    assert reply.headers["x-request-id"] != forged and len(reply.headers["x-request-id"]) == 32


async def test_create_ad_over_http_answers_canonical_proto_json(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        CREATE_AD,
        json={"keyword": KEYWORD, "width": 96, "height": 64, "seed": "5", "placement": "PLACEMENT_STORY"},
        headers={"x-request-id": "http-1"},
    )
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    assert reply.headers["x-request-id"] == "http-1"
    ad = reply.json()
    assert ad["requestId"] == "http-1" and ad["copy"]["headline"] == "여름엔 딸기"
    (image,) = ad["images"]
    assert image["seed"] == "5"  # uint64 travels as a string
    assert image["image"]["format"] == "IMAGE_FORMAT_JPEG"  # enums by name; JPEG is the default
    with Image.open(io.BytesIO(base64.b64decode(image["image"]["data"]))) as decoded:
        assert decoded.size == (96, 64)


async def test_stream_create_ad_over_http_1_1_streams_events_then_ends(http: httpx.AsyncClient) -> None:
    request = json.dumps({"request": {"keyword": KEYWORD, "variantCount": 2, "width": 64, "height": 64}}).encode()
    async with http.stream(
        "POST", STREAM_CREATE_AD, content=envelope(request), headers={"content-type": "application/connect+json"}
    ) as reply:
        assert reply.status_code == 200 and reply.http_version == "HTTP/1.1"
        body = await reply.aread()
    frames = unenvelope(body)
    assert frames[-1] == (END_STREAM, b"{}")
    kinds = [next(iter(json.loads(payload))) for flags, payload in frames[:-1]]
    assert kinds[0] == "copy" and kinds[-1] == "result" and kinds.count("image") == 2 and "progress" in kinds
    # As over gRPC: the result refers to the streamed images instead of repeating their bytes.
    result = json.loads(frames[-2][1])["result"]
    assert [(image["dataInStream"], "data" in image["image"]) for image in result["images"]] == [(True, False)] * 2


async def test_invalid_create_ad_over_http_is_400_with_error_info_and_field_violations(
    fake_stack: FakeStack, http: httpx.AsyncClient
) -> None:
    reply = await http.post(CREATE_AD, json={"keyword": " ", "width": 10, "height": 10})
    assert reply.status_code == 400
    error = reply.json()
    assert error["code"] == "invalid_argument" and "keyword" in error["message"]
    details = error_details(error)
    assert details["google.rpc.ErrorInfo"].reason == "EMPTY_KEYWORD"
    assert details["google.rpc.ErrorInfo"].domain == "adgen.dev"
    fields = [v.field for v in details["google.rpc.BadRequest"].field_violations]
    assert fields == ["keyword", "width", "height"]
    assert fake_stack.diffusion.calls == []


@pytest.mark.parametrize(
    ("body", "fields"),
    [('{"keyword": ', [""]), ('{"keyword": 5, "variantCount": "many"}', ["keyword", "variant_count"])],
)
async def test_undecodable_json_is_400_with_error_info(http: httpx.AsyncClient, body: str, fields: list[str]) -> None:
    reply = await http.post(CREATE_AD, content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 400
    error = reply.json()
    assert error["code"] == "invalid_argument" and "Expecting" not in error["message"]
    assert error_details(error)["google.rpc.ErrorInfo"].reason == "INVALID_ARGUMENT"
    assert [v.field for v in error_details(error)["google.rpc.BadRequest"].field_violations] == fields


async def test_errors_inside_a_stream_end_it_with_a_connect_error(http: httpx.AsyncClient) -> None:
    request = json.dumps({"request": {"keyword": ""}}).encode()
    reply = await http.post(
        STREAM_CREATE_AD, content=envelope(request), headers={"content-type": "application/connect+json"}
    )
    ((flags, payload),) = unenvelope(reply.content)
    error = json.loads(payload)["error"]
    assert flags == END_STREAM and error["code"] == "invalid_argument"
    assert [v.field for v in error_details(error)["google.rpc.BadRequest"].field_violations] == ["request.keyword"]


async def test_photos_larger_than_connects_default_4_mb_limit_are_accepted(http: httpx.AsyncClient) -> None:
    noise = Image.frombytes("RGB", (1100, 1100), os.urandom(1100 * 1100 * 3))  # Incompressible: ~3.6 MB as PNG.
    buffer = io.BytesIO()
    noise.save(buffer, "PNG", compress_level=0)
    photo = base64.b64encode(buffer.getvalue()).decode()
    assert len(photo) > 4 * 1024 * 1024
    reply = await http.post("/adgen.ad.v1.AdService/EditAd", json={"image": {"data": photo}, "instruction": "밝게"})
    assert reply.status_code == 200, reply.text[:200]
    assert (reply.json()["image"]["width"], reply.json()["image"]["height"]) == (1100, 1100)


async def test_grpc_web_clients_get_binary_messages_and_trailers(http: httpx.AsyncClient) -> None:
    request = ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64)
    reply = await http.post(
        CREATE_AD,
        content=envelope(request.SerializeToString()),
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
    )
    assert reply.status_code == 200
    (message_flags, message), (trailer_flags, trailers) = unenvelope(reply.content)
    assert message_flags == 0 and len(ad_pb.CreateAdResponse.FromString(message).images) == 1
    assert trailer_flags == GRPC_WEB_TRAILERS and trailers.strip() == b"grpc-status: 0"


async def test_one_core_behind_both_front_ends_shares_a_request_id_job(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub, http: httpx.AsyncClient
) -> None:
    over_grpc = await ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64, request_id="both"))
    reply = await http.post(CREATE_AD, json={"keyword": KEYWORD, "width": 64, "height": 64, "requestId": "both"})
    assert reply.json()["images"][0]["seed"] == str(over_grpc.images[0].seed)
    assert len(fake_stack.diffusion.calls) == 1


async def test_cors_preflight_allows_configured_origins_only(http: httpx.AsyncClient) -> None:
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    allowed = await http.options(CREATE_AD, headers={"origin": "https://shop.example", **preflight})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert "connect-protocol-version" in allowed.headers["access-control-allow-headers"]
    other = await http.options(CREATE_AD, headers={"origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers


async def test_cors_responses_expose_the_error_and_request_id_headers(http: httpx.AsyncClient) -> None:
    reply = await http.post(CREATE_AD, json={"keyword": ""}, headers={"origin": "https://shop.example"})
    assert reply.headers["access-control-allow-origin"] == "https://shop.example"
    assert "x-request-id" in reply.headers["access-control-expose-headers"]


class _Ctx:
    """Just what `_connect_call` reads of a connectrpc RequestContext."""

    class method:  # noqa: N801 (mirrors the attribute name)
        name = "CreateAd"

    def __init__(self) -> None:
        self.request_headers: dict[str, str] = {"x-request-id": "req-9"}
        self.response_headers: dict[str, str] = {}
        self.timeout_ms = None


def test_unexpected_exceptions_become_internal_without_their_text() -> None:
    with pytest.raises(ConnectError) as raised, _connect_call(_Ctx(), ""):  # type: ignore[arg-type]
        raise RuntimeError("secret /etc/adgen/key.pem")
    assert raised.value.code == Code.INTERNAL
    assert "secret" not in raised.value.message and "req-9" in raised.value.message


def test_the_body_request_id_is_the_id_an_http_call_is_answered_under() -> None:
    context = _Ctx()
    with _connect_call(context, "order-7") as call:  # type: ignore[arg-type]
        assert call.request_id == "order-7"
    assert context.response_headers["x-request-id"] == "order-7"


def test_domain_errors_keep_their_code_and_details_over_connect() -> None:
    error = connect_error(Unavailable(error_reason_pb2.ERROR_REASON_UPSTREAM_UNAVAILABLE, "down", retry_after_s=2))
    assert error.code == Code.UNAVAILABLE and error.message == "down"
    assert {detail.type_name for detail in error.details} == {"google.rpc.ErrorInfo", "google.rpc.RetryInfo"}
    assert grpc.StatusCode.UNAVAILABLE.name.lower() == error.code.value
