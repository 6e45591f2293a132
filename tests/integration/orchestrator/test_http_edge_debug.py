"""Connect error JSON carries each detail's readable `debug` form, as connectrpc's convention has it."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2

from adgen.type.v1 import error_reason_pb2
from adgen_orchestrator.http_edge import connect_error_json
from adgen_runtime.errors import Unavailable
from tests.integration.orchestrator.conftest import FakeStack
from tests.integration.orchestrator.test_http_edge import CREATE_AD, STREAM_CREATE_AD, envelope, unenvelope

_KINDS: dict[str, Any] = {
    "google.rpc.ErrorInfo": error_details_pb2.ErrorInfo,
    "google.rpc.BadRequest": error_details_pb2.BadRequest,
    "google.rpc.RetryInfo": error_details_pb2.RetryInfo,
}


def assert_debug_matches_value(error: dict[str, Any]) -> set[str]:
    """Checks that each detail's `debug` is its `value` as proto JSON; returns the detail types."""
    for detail in error["details"]:
        decoded = _KINDS[detail["type"]].FromString(base64.b64decode(detail["value"] + "=="))
        assert detail["debug"] == json_format.MessageToDict(decoded)
    return {detail["type"] for detail in error["details"]}


@pytest.fixture
async def http(fake_stack: FakeStack) -> Any:
    async with httpx.AsyncClient(base_url=fake_stack.http_url, timeout=30) as client:
        yield client


async def test_a_unary_error_shows_each_detail_as_json(http: httpx.AsyncClient) -> None:
    reply = await http.post(CREATE_AD, json={"keyword": " ", "width": 10, "height": 10})
    error = reply.json()
    assert reply.status_code == 400
    assert assert_debug_matches_value(error) >= {"google.rpc.ErrorInfo", "google.rpc.BadRequest"}
    by_type = {detail["type"]: detail["debug"] for detail in error["details"]}
    assert by_type["google.rpc.ErrorInfo"]["reason"] == "EMPTY_KEYWORD"
    assert by_type["google.rpc.BadRequest"]["fieldViolations"][0]["field"] == "keyword"


async def test_an_error_ending_a_stream_shows_its_details_as_json(http: httpx.AsyncClient) -> None:
    request = json.dumps({"request": {"keyword": ""}}).encode()
    reply = await http.post(
        STREAM_CREATE_AD, content=envelope(request), headers={"content-type": "application/connect+json"}
    )
    ((_, payload),) = unenvelope(reply.content)
    assert "google.rpc.BadRequest" in assert_debug_matches_value(json.loads(payload)["error"])


async def test_a_framework_error_shows_its_details_as_json(http: httpx.AsyncClient) -> None:
    reply = await http.post("/adgen.ad.v1.AdService/NoSuchMethod", json={})
    assert reply.status_code == 404
    assert "google.rpc.ErrorInfo" in assert_debug_matches_value(reply.json())


def test_the_edge_error_json_adds_debug_to_every_detail() -> None:
    error = Unavailable(error_reason_pb2.ERROR_REASON_UPSTREAM_UNAVAILABLE, "down", retry_after_s=2)
    wire = json.loads(connect_error_json(error))
    assert assert_debug_matches_value(wire) == {"google.rpc.ErrorInfo", "google.rpc.RetryInfo"}
    assert {d["type"]: d["debug"] for d in wire["details"]}["google.rpc.RetryInfo"] == {"retryDelay": "2s"}
