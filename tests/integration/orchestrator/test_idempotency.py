"""A repeated request_id replays or joins the first call's job instead of generating again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import error_reason_pb2
from adgen_orchestrator.idempotency import JobRegistry, RequestIdReusedError
from adgen_runtime.errors import Unavailable
from tests.integration.orchestrator.conftest import FakeStack
from tests.support.orchestrator_fakes import png

KEYWORD = "여름 느낌 딸기 생과일 주스"


def _create(request_id: str, keyword: str = KEYWORD, variants: int = 2) -> ad_pb.CreateAdRequest:
    return ad_pb.CreateAdRequest(keyword=keyword, variant_count=variants, width=64, height=64, request_id=request_id)


async def test_a_repeated_request_id_returns_the_same_ad_without_generating_again(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    first = await ad_stub.CreateAd(_create("order-1"))
    second = await ad_stub.CreateAd(_create("order-1"))
    assert second == first
    assert len(fake_stack.diffusion.calls) == 2  # one job per variant, once
    assert len(fake_stack.copywriter.calls) == 1


StreamCall = aio.UnaryStreamCall[ad_pb.StreamCreateAdRequest, ad_pb.StreamCreateAdResponse]


async def _next_kind(call: StreamCall) -> str | None:
    """The kind of the call's next event, or None at the end of the stream."""
    event = await call.read()
    if event is aio.EOF:
        return None
    assert isinstance(event, ad_pb.StreamCreateAdResponse)
    return event.WhichOneof("event")


async def _remaining_kinds(call: StreamCall) -> list[str]:
    kinds = []
    while (kind := await _next_kind(call)) is not None:
        kinds.append(kind)
    return kinds


async def test_concurrent_duplicates_join_the_job_in_flight(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    fake_stack.diffusion.gate = gate = asyncio.Event()  # the first job cannot finish until the test says so
    request = ad_pb.StreamCreateAdRequest(request=_create("order-2", variants=1))
    first = ad_stub.StreamCreateAd(request)
    first_kinds = [await _next_kind(first)]
    duplicate = ad_stub.StreamCreateAd(request)
    # A joiner is sent the job's events from the start while it runs; a replay would wait here for the gated job.
    duplicate_kinds = [await asyncio.wait_for(_next_kind(duplicate), timeout=10)]
    assert not gate.is_set()
    gate.set()
    first_kinds += await _remaining_kinds(first)
    duplicate_kinds += await _remaining_kinds(duplicate)
    assert "progress" in duplicate_kinds and duplicate_kinds == first_kinds
    assert len(fake_stack.diffusion.calls) == 1 and len(fake_stack.copywriter.calls) == 1


async def test_a_replayed_stream_sends_only_the_final_result(ad_stub: ad_grpc.AdServiceAsyncStub) -> None:
    first = await ad_stub.CreateAd(_create("order-3"))
    replay = [e async for e in ad_stub.StreamCreateAd(ad_pb.StreamCreateAdRequest(request=_create("order-3")))]
    assert [event.WhichOneof("event") for event in replay] == ["result"]
    assert replay[0].result == first


async def test_the_same_request_id_for_another_request_is_invalid_argument_naming_request_id(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    await ad_stub.CreateAd(_create("order-4"))
    call = ad_stub.CreateAd(_create("order-4", keyword="아이스 아메리카노"))
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad) for detail in status.details)
    assert [(v.field, v.reason) for v in bad.field_violations] == [("request_id", "REQUEST_ID_REUSED")]
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in status.details) and info.reason == "REQUEST_ID_REUSED"
    assert len(fake_stack.diffusion.calls) == 2  # the second request never ran


async def test_a_failed_request_is_not_remembered_so_a_retry_runs(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    fake_stack.diffusion.failure = Unavailable(error_reason_pb2.ERROR_REASON_QUEUE_FULL, "busy")
    with pytest.raises(aio.AioRpcError):
        await ad_stub.CreateAd(_create("order-5", variants=1))
    failed_attempts = len(fake_stack.diffusion.calls)  # UNAVAILABLE is retried by the channels.
    fake_stack.diffusion.failure = None
    response = await ad_stub.CreateAd(_create("order-5", variants=1))
    assert len(response.images) == 1 and len(fake_stack.diffusion.calls) == failed_attempts + 1


async def test_edit_ad_is_idempotent_too(fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub) -> None:
    request = ad_pb.EditAdRequest(instruction="밝게 해줘", request_id="edit-1")
    request.image.data = png(40, 30)
    first = await ad_stub.EditAd(request)
    replay = [e async for e in ad_stub.StreamEditAd(ad_pb.StreamEditAdRequest(request=request))]
    assert replay[-1].result == first and len(fake_stack.diffusion.calls) == 1


async def test_calls_without_a_request_id_always_run(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    await ad_stub.CreateAd(_create("", variants=1))
    await ad_stub.CreateAd(_create("", variants=1))
    assert len(fake_stack.diffusion.calls) == 2


async def _events(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def test_registry_forgets_ids_after_the_window() -> None:
    now = [0.0]
    registry: JobRegistry[str] = JobRegistry(window_s=60, max_entries=10, clock=lambda: now[0])
    first = registry.job_for("a", b"x", lambda: _events("done"))
    assert [e async for e in first.follow()] == ["done"]
    assert registry.job_for("a", b"x", lambda: _events("again")) is first
    now[0] = 61.0
    assert registry.job_for("a", b"other", lambda: _events("new")) is not first


async def test_registry_keeps_only_the_most_recent_ids() -> None:
    registry: JobRegistry[str] = JobRegistry(window_s=60, max_entries=2)
    jobs = [registry.job_for(key, b"x", lambda: _events("done")) for key in ("a", "b", "c")]
    assert len(registry) == 2
    assert registry.job_for("a", b"y", lambda: _events("new")) is not jobs[0]  # "a" was evicted
    with pytest.raises(RequestIdReusedError):
        registry.job_for("c", b"y", lambda: _events("new"))
    for job in jobs:
        [_ async for _ in job.follow()]


async def test_a_job_is_cancelled_when_its_last_follower_leaves() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def endless() -> AsyncIterator[str]:
        yield "first"
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        yield "never"

    registry: JobRegistry[str] = JobRegistry(window_s=60, max_entries=2)
    follower = registry.job_for("a", b"x", endless).follow()
    assert await anext(follower) == "first"
    await started.wait()
    assert isinstance(follower, AsyncGenerator)
    await follower.aclose()
    await asyncio.wait_for(cancelled.wait(), timeout=5)
    assert len(registry) == 0  # an abandoned job is not replayed


async def test_registry_drops_the_oldest_results_beyond_its_byte_budget() -> None:
    registry: JobRegistry[str] = JobRegistry(window_s=60, max_entries=10, max_bytes=10, size_of=len)
    first = registry.job_for("a", b"x", lambda: _events("123456"))
    [_ async for _ in first.follow()]
    second = registry.job_for("b", b"x", lambda: _events("abcdef"))
    [_ async for _ in second.follow()]
    registry.job_for("c", b"x", lambda: _events("z"))  # 6 + 6 bytes held: over 10, so "a" goes
    assert registry.job_for("a", b"y", lambda: _events("new")) is not first
    assert registry.job_for("b", b"x", lambda: _events("new")) is second
