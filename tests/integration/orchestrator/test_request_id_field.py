"""The `request_id` body field: validated like `x-request-id`, and the one id a call is answered and logged under."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import image_pb2
from adgen_runtime.logs import RequestIdFilter
from tests.integration.orchestrator.conftest import FakeStack
from tests.integration.orchestrator.test_http_edge import CREATE_AD, error_details
from tests.support.orchestrator_fakes import png

KEYWORD = "여름 느낌 딸기 생과일 주스"
BAD_IDS = ["주문-1", "order\n1", "x" * 100_000, "two words"]


class _Tagged(logging.Handler):
    """Keeps every record, tagged with the request id it was logged under (as the service's handler does)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """Records of the call, each with `request_id` set as the services' log format shows it."""
    caplog.set_level(logging.INFO)
    handler = _Tagged()
    logging.getLogger().addHandler(handler)
    yield handler.records
    logging.getLogger().removeHandler(handler)


def _ids_logged(records: list[logging.LogRecord]) -> set[str]:
    return {r.__dict__["request_id"] for r in records if r.name.startswith("adgen") and r.__dict__["request_id"] != "-"}


async def _violated_fields(call: aio.Call) -> list[str]:
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details)
    return [violation.field for violation in bad_request.field_violations]


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=["korean", "newline", "100k", "space"])
async def test_create_ad_refuses_a_request_id_that_is_not_a_token(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub, bad_id: str
) -> None:
    call = ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD, request_id=bad_id))
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await _violated_fields(call) == ["request_id"]
    assert fake_stack.copywriter.calls == [] and fake_stack.diffusion.calls == []


@pytest.mark.parametrize("bad_id", BAD_IDS[:2], ids=["korean", "newline"])
async def test_streams_and_edits_refuse_it_naming_the_field_where_the_caller_put_it(
    ad_stub: ad_grpc.AdServiceAsyncStub, bad_id: str
) -> None:
    stream = ad_stub.StreamCreateAd(
        ad_pb.StreamCreateAdRequest(request=ad_pb.CreateAdRequest(keyword=KEYWORD, request_id=bad_id))
    )
    with pytest.raises(aio.AioRpcError) as raised:
        async for _ in stream:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await _violated_fields(stream) == ["request.request_id"]
    edit = ad_stub.EditAd(
        ad_pb.EditAdRequest(image=image_pb2.Image(data=png(64, 64)), instruction="brighter", request_id=bad_id)
    )
    with pytest.raises(aio.AioRpcError):
        await edit
    assert await _violated_fields(edit) == ["request_id"]


@pytest.mark.parametrize("bad_id", BAD_IDS[:3], ids=["korean", "newline", "100k"])
async def test_http_callers_get_the_same_invalid_argument(fake_stack: FakeStack, bad_id: str) -> None:
    async with httpx.AsyncClient(base_url=fake_stack.http_url, timeout=30) as http:
        reply = await http.post(CREATE_AD, json={"keyword": KEYWORD, "requestId": bad_id})
    assert reply.status_code == 400
    error: dict[str, Any] = reply.json()
    assert error["code"] == "invalid_argument"
    assert [v.field for v in error_details(error)["google.rpc.BadRequest"].field_violations] == ["request_id"]


async def test_the_body_id_wins_over_a_proxys_header_in_the_answer_the_logs_and_downstream(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub, logged: list[logging.LogRecord]
) -> None:
    call = ad_stub.CreateAd(
        ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64, request_id="body-7"),
        metadata=(("x-request-id", "proxy-3"),),
    )
    ad = await call
    assert ad.request_id == "body-7"
    assert dict(await call.trailing_metadata())["x-request-id"] == "body-7"
    assert _ids_logged(logged) == {"body-7"}
    assert any("proxy-3" in r.getMessage() for r in logged)  # The proxy's id still leads to the call.
    downstream = [*fake_stack.copywriter.calls, *fake_stack.diffusion.calls]
    assert downstream and {c.metadata["x-request-id"] for c in downstream} == {"body-7"}


async def test_without_a_body_id_the_header_names_the_call_everywhere(
    ad_stub: ad_grpc.AdServiceAsyncStub, logged: list[logging.LogRecord]
) -> None:
    call = ad_stub.CreateAd(
        ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64), metadata=(("x-request-id", "hdr-5"),)
    )
    ad = await call
    assert ad.request_id == "hdr-5" and dict(await call.trailing_metadata())["x-request-id"] == "hdr-5"
    assert _ids_logged(logged) == {"hdr-5"}


async def test_a_refused_id_is_answered_and_logged_under_the_id_the_error_names(
    ad_stub: ad_grpc.AdServiceAsyncStub, logged: list[logging.LogRecord]
) -> None:
    call = ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD, request_id="주문-1"))
    with pytest.raises(aio.AioRpcError):
        await call
    answered = dict(await call.trailing_metadata())["x-request-id"]
    assert _ids_logged(logged) == {answered} and answered != "주문-1"


async def test_over_http_the_body_id_is_the_answered_and_logged_one(
    fake_stack: FakeStack, logged: list[logging.LogRecord]
) -> None:
    async with httpx.AsyncClient(base_url=fake_stack.http_url, timeout=30) as http:
        reply = await http.post(
            CREATE_AD, json={"keyword": KEYWORD, "width": 64, "height": 64, "requestId": "http-body-2"}
        )
    assert reply.status_code == 200 and reply.json()["requestId"] == "http-body-2"
    done = [r for r in logged if r.getMessage().startswith("done CreateAd")]
    assert [r.__dict__["request_id"] for r in done] == ["http-body-2"]
    downstream = [*fake_stack.copywriter.calls, *fake_stack.diffusion.calls]
    assert {c.metadata["x-request-id"] for c in downstream} == {"http-body-2"}
