"""The orchestrator's HTTP/JSON edge against the three real services: curl, Connect streaming, errors."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import shlex
import shutil
import struct
from pathlib import Path

import httpx
import pytest
from google.rpc import error_details_pb2
from PIL import Image

from tests.live_services import Services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = Path(__file__).resolve().parents[2] / "README.md"
HANGUL = re.compile("[가-힣]")


def readme_curl_command() -> str:
    """The README's curl command, taken from the README itself so the two cannot drift apart."""
    (command,) = [line for line in README.read_text().splitlines() if line.startswith("curl ")]
    return command


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_the_readme_curl_command_creates_an_ad_as_proto_json(services: Services) -> None:
    command = readme_curl_command()
    assert "http://127.0.0.1:8080/" in command
    command = command.replace("http://127.0.0.1:8080", services.orchestrator_http)
    process = await asyncio.create_subprocess_exec(
        *shlex.split(command), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=240)
    assert process.returncode == 0, stderr.decode()
    ad = json.loads(stdout)
    assert HANGUL.search(ad["copy"]["caption"]) and ad["modelId"] == "flux2-klein-4b"
    (image,) = ad["images"]
    with Image.open(io.BytesIO(base64.b64decode(image["image"]["data"]))) as decoded:
        assert decoded.format == "JPEG" and decoded.size == (1080, 1080)  # the default format and placement


def _envelope(payload: bytes) -> bytes:
    return struct.pack(">BI", 0, len(payload)) + payload


def _frames(body: bytes) -> list[tuple[int, bytes]]:
    frames, offset = [], 0
    while offset < len(body):
        flags, length = struct.unpack_from(">BI", body, offset)
        frames.append((flags, body[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    return frames


async def test_stream_create_ad_streams_progress_over_http_1_1(services: Services) -> None:
    request = {"request": {"keyword": "아이스 딸기 라떼", "variantCount": 2, "width": 128, "height": 128,
                           "numInferenceSteps": 2, "seed": "4"}}  # fmt: skip
    events: list[dict[str, object]] = []
    async with (
        httpx.AsyncClient(base_url=services.orchestrator_http, timeout=120) as http,
        http.stream(
            "POST",
            "/adgen.ad.v1.AdService/StreamCreateAd",
            content=_envelope(json.dumps(request).encode()),
            headers={"Content-Type": "application/connect+json"},
        ) as reply,
    ):
        assert reply.status_code == 200 and reply.http_version == "HTTP/1.1"
        frames = _frames(await reply.aread())
    assert frames[-1] == (0x02, b"{}"), "the stream ends cleanly"
    events = [json.loads(payload) for _, payload in frames[:-1]]
    kinds = [next(iter(event)) for event in events]
    assert kinds[0] == "copy" and kinds[-1] == "result" and kinds.count("image") == 2
    stages = [event["progress"]["progress"]["stage"] for event in events if "progress" in event]  # type: ignore[index]
    assert "PROGRESS_STAGE_DENOISING" in stages
    result = events[-1]["result"]
    assert isinstance(result, dict) and [image["seed"] for image in result["images"]] == ["4", "5"]


async def test_an_empty_keyword_over_http_is_400_with_the_same_details_as_grpc(services: Services) -> None:
    async with httpx.AsyncClient(base_url=services.orchestrator_http, timeout=30) as http:
        reply = await http.post("/adgen.ad.v1.AdService/CreateAd", json={"keyword": "  ", "width": 4096, "height": 64})
    assert reply.status_code == 400
    error = reply.json()
    assert error["code"] == "invalid_argument" and "Traceback" not in reply.text
    details = {detail["type"]: base64.b64decode(detail["value"] + "==") for detail in error["details"]}
    info = error_details_pb2.ErrorInfo.FromString(details["google.rpc.ErrorInfo"])
    bad = error_details_pb2.BadRequest.FromString(details["google.rpc.BadRequest"])
    assert (info.reason, info.domain) == ("EMPTY_KEYWORD", "adgen.dev")
    assert [v.field for v in bad.field_violations] == ["keyword", "width"]


async def test_edit_ad_over_http_keeps_the_photo_size(services: Services) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 80), "white").save(buffer, "PNG")
    request = {"image": {"data": base64.b64encode(buffer.getvalue()).decode()}, "instruction": "컵을 빨간색으로 바꿔줘",
               "numInferenceSteps": 2, "seed": "9"}  # fmt: skip
    async with httpx.AsyncClient(base_url=services.orchestrator_http, timeout=120) as http:
        reply = await http.post("/adgen.ad.v1.AdService/EditAd", json=request)
    assert reply.status_code == 200, reply.text
    edited = reply.json()
    with Image.open(io.BytesIO(base64.b64decode(edited["image"]["data"]))) as decoded:
        assert decoded.size == (120, 80)
    assert edited["seed"] == "9" and re.match("[A-Z][a-z]+ ", edited["editInstruction"])
