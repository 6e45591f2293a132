"""The live HTTP edge against malformed requests: unknown enum names and fields, undecodable bodies, wrong
paths, methods and content types, framework-level faults, and gRPC-Web text mode, all through httpx."""

from __future__ import annotations

import base64
import json
import struct
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.server import create_server as create_orchestrator
from tests.live_services import Services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVICE = "/adgen.ad.v1.AdService"
KEYWORD = "여름 느낌 딸기 생과일 주스"
SMALL = {"keyword": KEYWORD, "width": 64, "height": 64, "numInferenceSteps": 1, "seed": "3"}
# What a message must never contain: parser or framework wording, exception names, tracebacks, paths.
LEAKS = ("Traceback", "Error:", "Exception", "Failed to parse", "Expecting", "Message type", "unmarshal", "ASGI",
         "protocol error", "invalid literal", "/usr/", "site-packages", ".py")  # fmt: skip


@pytest.fixture
async def http(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=services.orchestrator_http, timeout=120) as client:
        yield client


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def frames(body: bytes) -> list[tuple[int, bytes]]:
    found, offset = [], 0
    while offset < len(body):
        flags, length = struct.unpack_from(">BI", body, offset)
        found.append((flags, body[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    return found


def unpack(status: status_pb2.Status) -> dict[str, Message]:
    kinds: dict[str, type[Message]] = {
        "ErrorInfo": error_details_pb2.ErrorInfo,
        "BadRequest": error_details_pb2.BadRequest,
        "RetryInfo": error_details_pb2.RetryInfo,
    }
    found: dict[str, Message] = {}
    for detail in status.details:
        name = detail.type_url.rpartition(".")[2]
        if name in kinds:
            message = kinds[name]()
            detail.Unpack(message)
            found[name] = message
    return found


def connect_error(wire: dict[str, Any]) -> tuple[str, str, dict[str, Message]]:
    """(code, message, details by type name) of Connect error JSON, with the checks every error must pass."""
    status = status_pb2.Status(message=wire["message"])
    for detail in wire.get("details", []):
        status.details.add(
            type_url=f"type.googleapis.com/{detail['type']}", value=base64.b64decode(detail["value"] + "==")
        )
    details = unpack(status)
    _check_error(wire["code"], wire["message"], details)
    return wire["code"], wire["message"], details


def grpc_error(fields: dict[str, str]) -> tuple[int, str, dict[str, Message]]:
    """(grpc-status, message, details) of gRPC-Web status headers or trailers, with the same checks."""
    raw = fields["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    message = urllib.parse.unquote(fields["grpc-message"])
    assert int(fields["grpc-status"]) == status.code and message == status.message
    details = unpack(status)
    _check_error("invalid_argument" if status.code == 3 else str(status.code), message, details)
    return status.code, message, details


def _check_error(code: str, message: str, details: dict[str, Message]) -> None:
    info = details["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason and info.domain == "adgen.dev"
    assert code not in ("unknown", "internal"), message
    if code == "invalid_argument":
        assert "BadRequest" in details, "every INVALID_ARGUMENT names its fields"
    assert message and not any(leak in message for leak in LEAKS), message


def violated_fields(details: dict[str, Message]) -> list[str]:
    bad = details["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    return [violation.field for violation in bad.field_violations]


def reason(details: dict[str, Message]) -> str:
    info = details["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    return str(info.reason)


# ── unknown enum names and fields ─────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        ("CreateAd", {**SMALL, "placement": "STORY"}, "placement"),
        ("CreateAd", {**SMALL, "tone": "ANGRY"}, "tone"),
        ("CreateAd", {**SMALL, "outputFormat": "GIF"}, "output_format"),
        ("CreateAd", {**SMALL, "captionLength": "EPIC"}, "caption_length"),
        ("CreateAd", {**SMALL, "emojiLevel": "MAX"}, "emoji_level"),
        ("CreateAd", {**SMALL, "qualityPreference": "BEST"}, "quality_preference"),
        ("CreateAd", {**SMALL, "placement": 1.5}, "placement"),
        ("CreateAd", {**SMALL, "placement": True}, "placement"),
        ("StreamCreateAd", {"request": {**SMALL, "placement": "STORY"}}, "request.placement"),
        ("EditAd", {"image": {"data": "", "format": "HEIC"}, "instruction": "밝게"}, "image.format"),
    ],
)
async def test_an_unknown_enum_name_is_invalid_argument_naming_the_field(
    http: httpx.AsyncClient, method: str, body: dict[str, Any], field: str
) -> None:
    if method.startswith("Stream"):
        reply = await http.post(
            f"{SERVICE}/{method}",
            content=envelope(json.dumps(body).encode()),
            headers={"content-type": "application/connect+json"},
        )
        ((flags, payload),) = frames(reply.content)
        wire = json.loads(payload)["error"]
        assert flags == 0x02
    else:
        reply = await http.post(f"{SERVICE}/{method}", json=body)
        assert reply.status_code == 400
        wire = reply.json()
    code, message, details = connect_error(wire)
    assert code == "invalid_argument" and reason(details) == "INVALID_ARGUMENT"
    assert violated_fields(details) == [field] and "must be one of" in message


async def test_a_misspelt_field_is_refused_rather_than_ignored(http: httpx.AsyncClient) -> None:
    reply = await http.post(f"{SERVICE}/CreateAd", json={**SMALL, "placment": "PLACEMENT_STORY"})
    code, message, details = connect_error(reply.json())
    assert (reply.status_code, code, violated_fields(details)) == (400, "invalid_argument", ["placment"])
    assert "not a field of CreateAdRequest" in message


async def test_every_bad_field_of_one_body_is_named_at_once(http: httpx.AsyncClient) -> None:
    body = {"keyword": 7, "seed": "-1", "width": "wide", "facts": {"extra": ["ok", 3], "shopNam": "x"}}
    reply = await http.post(f"{SERVICE}/CreateAd", json=body)
    _, _, details = connect_error(reply.json())
    assert violated_fields(details) == ["keyword", "seed", "width", "facts.extra[1]", "facts.shopNam"]


# ── bodies that cannot be decoded ─────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("content", "field", "words"),
    [
        (b'{"keyword": ', "", "not valid JSON (line 1, column 13)"),
        (b"\xff\xfe{}", "", "not UTF-8"),
        (b"[1, 2]", "", "must be a JSON object"),
        (b'{"keyword": "a", "keyword": "b"}', "keyword", "more than once"),
        (b'{"keyword": "a", "request_id": "x", "requestId": "y"}', "request_id", "more than once"),
        (b"[" * 100_000, "", "nested too deeply"),
        (b'{"keyword": "a", "width": 1e400}', "width", "whole number"),
        (b'{"keyword": "a", "variantCount": 4294967296}', "variant_count", "whole number"),
        (b'{"keyword": "a", "overlayHeadline": "yes"}', "overlay_headline", "true or false"),
        (b'{"keyword": "a", "facts": "shop"}', "facts", "JSON object"),
        (b'{"keyword": "a", "facts": {"extra": "x"}}', "facts.extra", "JSON array"),
        (b'{"keyword": "a", "facts": {"extra": [null]}}', "facts.extra[0]", "not be null"),
    ],
)
async def test_an_undecodable_json_body_is_invalid_argument_in_words_for_people(
    http: httpx.AsyncClient, content: bytes, field: str, words: str
) -> None:
    reply = await http.post(f"{SERVICE}/CreateAd", content=content, headers={"content-type": "application/json"})
    code, message, details = connect_error(reply.json())
    assert (reply.status_code, code, reason(details)) == (400, "invalid_argument", "INVALID_ARGUMENT")
    assert violated_fields(details) == [field] and words in message


async def test_photo_bytes_that_are_not_base64_name_the_data_field(http: httpx.AsyncClient) -> None:
    reply = await http.post(f"{SERVICE}/EditAd", json={"image": {"data": "not base64!"}, "instruction": "밝게"})
    _, message, details = connect_error(reply.json())
    assert violated_fields(details) == ["image.data"] and "base64" in message


async def test_an_undecodable_binary_body_is_invalid_argument(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        f"{SERVICE}/CreateAd", content=b"\xff\xff\xff", headers={"content-type": "application/proto"}
    )
    code, message, details = connect_error(reply.json())
    assert (reply.status_code, code, violated_fields(details)) == (400, "invalid_argument", [""])
    assert "binary CreateAdRequest" in message


# ── what connectrpc answers by itself ─────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "allow_header"),
    [
        ("POST", f"{SERVICE}/DeleteAd", {"content-type": "application/json"}, 404, None),
        ("POST", "/", {"content-type": "application/json"}, 404, None),
        ("GET", f"{SERVICE}/CreateAd", {}, 405, "allow"),
        ("PUT", f"{SERVICE}/StreamEditAd", {"content-type": "application/connect+json"}, 405, "allow"),
        ("POST", f"{SERVICE}/CreateAd", {"content-type": "text/plain"}, 415, "accept-post"),
        ("POST", f"{SERVICE}/CreateAd", {"content-type": "application/xml"}, 415, "accept-post"),
        ("POST", f"{SERVICE}/CreateAd", {"content-type": "application/grpc"}, 415, None),
        ("POST", f"{SERVICE}/CreateAd", {"content-type": "application/grpc+proto"}, 415, None),
    ],
)
async def test_wrong_paths_methods_and_content_types_get_connect_error_json(
    http: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], status: int, allow_header: str | None
) -> None:
    reply = await http.request(method, path, content=b"{}", headers=headers)
    assert reply.status_code == status and reply.headers["content-type"] == "application/json"
    code, message, details = connect_error(reply.json())
    assert code == "unimplemented" and reason(details)
    if allow_header is not None:
        assert reply.headers[allow_header]
    if "grpc" in headers.get("content-type", ""):
        assert "gRPC port" in message


@pytest.mark.parametrize(
    ("headers", "content", "code", "words"),
    [
        ({"connect-protocol-version": "2"}, b"{}", "invalid_argument", "connect-protocol-version"),
        ({"connect-timeout-ms": "soon"}, b"{}", "invalid_argument", "timeout header"),
        ({"connect-timeout-ms": "12345678901"}, b"{}", "invalid_argument", "timeout header"),
        ({"content-encoding": "br-unknown"}, b"{}", "unimplemented", "content encoding"),
        ({"content-encoding": "gzip"}, b"not gzip at all", "invalid_argument", "content encoding"),
    ],
)
async def test_malformed_connect_headers_get_details_and_plain_words(
    http: httpx.AsyncClient, headers: dict[str, str], content: bytes, code: str, words: str
) -> None:
    reply = await http.post(
        f"{SERVICE}/CreateAd", content=content, headers={"content-type": "application/json", **headers}
    )
    got_code, message, details = connect_error(reply.json())
    assert got_code == code and words in message and reason(details)
    if code == "invalid_argument":
        assert violated_fields(details) == [""]


async def test_a_malformed_stream_envelope_ends_the_stream_with_details(http: httpx.AsyncClient) -> None:
    truncated = envelope(json.dumps({"request": SMALL}).encode())[:-3]
    reply = await http.post(
        f"{SERVICE}/StreamCreateAd", content=truncated, headers={"content-type": "application/connect+json"}
    )
    ((flags, payload),) = frames(reply.content)
    code, message, _ = connect_error(json.loads(payload)["error"])
    assert flags == 0x02 and code == "invalid_argument" and "framing" in message


async def test_a_body_over_the_limit_is_message_too_large_naming_the_limit(services: Services) -> None:
    orchestrator = await create_orchestrator(
        OrchestratorSettings(
            port=0,
            http_port=0,
            max_message_bytes=4 * 1024 * 1024,
            copywriter_target=services.copywriter,
            diffusion_target=services.diffusion,
        )
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{orchestrator.http_port}", timeout=30) as client:
            photo = {"data": "A" * 5_000_000}
            reply = await client.post(f"{SERVICE}/EditAd", json={"image": photo, "instruction": "x"})
    finally:
        await orchestrator.stop(None)
    code, message, details = connect_error(reply.json())
    info = details["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (reply.status_code, code, info.reason) == (429, "resource_exhausted", "MESSAGE_TOO_LARGE")
    assert info.metadata["max_bytes"] == str(4 * 1024 * 1024) and "4194304-byte" in message


# ── gRPC-Web, binary and text ─────────────────────────────────────────────────────────────────


def trailer_fields(payload: bytes) -> dict[str, str]:
    pairs = (line.partition(":") for line in payload.decode().split("\r\n") if line)
    return {key.strip(): value.strip() for key, _, value in pairs}


def grpc_web_status(reply: httpx.Response) -> dict[str, str]:
    """The status of a gRPC-Web reply: in its headers (trailers-only), else in its last frame, the trailers."""
    if "grpc-status" in reply.headers:
        return {key: reply.headers[key] for key in ("grpc-status", "grpc-message", "grpc-status-details-bin")}
    text = reply.headers["content-type"].startswith("application/grpc-web-text")
    flags, payload = (text_frames(reply) if text else frames(reply.content))[-1]
    assert flags == 0x80
    return trailer_fields(payload)


@pytest.mark.parametrize("content_type", ["application/grpc-web+proto", "application/grpc-web-text"])
@pytest.mark.parametrize(("method", "expected"), [("DeleteAd", 12), ("CreateAd", 12)])
async def test_grpc_web_refusals_carry_detailed_statuses(
    http: httpx.AsyncClient, content_type: str, method: str, expected: int
) -> None:
    # An unknown method, and a unary call with no message in its body.
    reply = await http.post(f"{SERVICE}/{method}", content=b"", headers={"content-type": content_type})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith(content_type.partition("+")[0])
    code, _, details = grpc_error(grpc_web_status(reply))
    assert code == expected and reason(details)


def text_body(message: Message) -> bytes:
    return base64.b64encode(envelope(message.SerializeToString()))


def text_frames(reply: httpx.Response) -> list[tuple[int, bytes]]:
    """The frames of a text-mode body: padded base64 chunks end to end, as the gRPC-Web spec allows."""
    chunks = [chunk + b"=" * (-len(chunk) % 4) for chunk in reply.content.replace(b"=", b"=\n").split()]
    return frames(b"".join(base64.b64decode(chunk) for chunk in chunks if chunk.strip(b"=")))


async def test_grpc_web_text_answers_a_unary_call_in_base64(http: httpx.AsyncClient) -> None:
    request = ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64, num_inference_steps=1, seed=4)
    reply = await http.post(
        f"{SERVICE}/CreateAd",
        content=text_body(request),
        headers={"content-type": "application/grpc-web-text", "accept": "application/grpc-web-text"},
    )
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/grpc-web-text+proto"
    (message_flags, message), (trailer_flags, trailers) = text_frames(reply)
    ad = ad_pb.CreateAdResponse.FromString(message)
    assert message_flags == 0 and [image.seed for image in ad.images] == [4] and ad.copy.caption
    assert trailer_flags == 0x80 and trailer_fields(trailers)["grpc-status"] == "0"


async def test_grpc_web_text_streams_every_event_then_the_trailers(http: httpx.AsyncClient) -> None:
    inner = ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64, num_inference_steps=2, variant_count=2)
    request = ad_pb.StreamCreateAdRequest(request=inner)
    async with http.stream(
        "POST",
        f"{SERVICE}/StreamCreateAd",
        content=text_body(request),
        headers={"content-type": "application/grpc-web-text+proto"},
    ) as reply:
        await reply.aread()
    found = text_frames(reply)
    events = [ad_pb.StreamCreateAdResponse.FromString(payload) for flags, payload in found[:-1]]
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "copy" and kinds[-1] == "result" and kinds.count("image") == 2 and "progress" in kinds
    assert found[-1][0] == 0x80 and trailer_fields(found[-1][1])["grpc-status"] == "0"


async def test_grpc_web_text_accepts_a_request_sent_as_padded_chunks(http: httpx.AsyncClient) -> None:
    framed = envelope(ad_pb.CreateAdRequest(keyword="", width=64, height=64).SerializeToString())
    chunked = b"".join(base64.b64encode(framed[i : i + 4]) for i in range(0, len(framed), 4))
    assert b"=" in chunked[:-4], "padding inside the body"
    reply = await http.post(
        f"{SERVICE}/CreateAd", content=chunked, headers={"content-type": "application/grpc-web-text"}
    )
    code, _, details = grpc_error(grpc_web_status(reply))
    # The request was read whole: the empty keyword it carries is what is refused.
    assert (code, reason(details), violated_fields(details)) == (3, "EMPTY_KEYWORD", ["keyword"])


async def test_grpc_web_text_that_is_not_base64_is_invalid_argument(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        f"{SERVICE}/CreateAd", content=b"%%%%", headers={"content-type": "application/grpc-web-text"}
    )
    code, message, details = grpc_error(grpc_web_status(reply))
    assert (code, violated_fields(details)) == (3, [""]) and "base64" in message


async def test_a_grpc_web_stream_error_ends_with_detailed_trailers_in_text_mode(http: httpx.AsyncClient) -> None:
    request = ad_pb.StreamCreateAdRequest(request=ad_pb.CreateAdRequest(keyword=" "))
    reply = await http.post(
        f"{SERVICE}/StreamCreateAd", content=text_body(request), headers={"content-type": "application/grpc-web-text"}
    )
    code, _, details = grpc_error(grpc_web_status(reply))
    assert (code, reason(details), violated_fields(details)) == (3, "EMPTY_KEYWORD", ["request.keyword"])


async def test_the_edge_still_serves_after_the_hostile_requests(http: httpx.AsyncClient) -> None:
    reply = await http.post(f"{SERVICE}/CreateAd", json=SMALL)
    assert reply.status_code == 200 and reply.json()["images"][0]["seed"] == "3"
