"""The SDK: sync and async clients, request building, and AdGenError parsed from rich statuses."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc import aio

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import ad_pb2, image_pb2
from adgen_client import AdGenClient, AdGenError, AsyncAdGenClient, FieldViolation, RetryPolicy
from adgen_client.requests import create_ad_request, edit_ad_request
from adgen_runtime import Context
from adgen_wire.channel import create_aio_channel, grpc_options
from tests.unit.client.conftest import FakeServer, image_of


def test_request_builder_accepts_names_for_enums() -> None:
    request = create_ad_request("딸기", placement="story", tone="premium", output_format="webp", seed=0)
    assert request.placement == ad_pb2.PLACEMENT_STORY and request.tone == ad_pb2.TONE_PREMIUM
    assert request.output_format == image_pb2.IMAGE_FORMAT_WEBP
    assert request.HasField("seed") and not request.HasField("num_inference_steps")


def test_request_builder_accepts_enum_values_and_leaves_unset_options_to_the_server() -> None:
    request = create_ad_request("딸기", placement=ad_pb2.PLACEMENT_FEED_PORTRAIT)
    assert request.placement == ad_pb2.PLACEMENT_FEED_PORTRAIT
    assert request.tone == ad_pb2.TONE_UNSPECIFIED and not request.HasField("seed")


def test_request_builder_rejects_unknown_names_listing_the_choices() -> None:
    with pytest.raises(ValueError, match="feed-square"):
        create_ad_request("딸기", placement="billboard")


def test_edit_request_reads_the_photo_from_a_path(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG...")
    assert edit_ad_request(photo, "밝게").image.data == b"\x89PNG..."


async def test_sync_client_creates_an_ad_with_deadline_and_request_id(fake_ad_server: FakeServer) -> None:
    def call() -> ad_pb.CreateAdResponse:
        with AdGenClient(fake_ad_server.target, timeout=30) as client:
            return client.create_ad("딸기 주스", variant_count=2, request_id="abc")

    ad = await asyncio.to_thread(call)
    assert len(ad.images) == 2 and ad.copy.caption == "딸기 주스 출시!"
    _, metadata, remaining = fake_ad_server.service.seen[0]
    assert metadata["x-request-id"] == "abc"
    assert remaining is not None and 25 < remaining <= 30


async def test_sync_stream_yields_copy_progress_images_then_the_result(fake_ad_server: FakeServer) -> None:
    def call() -> list[str]:
        with AdGenClient(fake_ad_server.target) as client:
            return [str(event.WhichOneof("event")) for event in client.stream_create_ad("딸기", variant_count=1)]

    kinds = await asyncio.to_thread(call)
    assert kinds[0] == "copy" and kinds[-2:] == ["image", "result"] and "progress" in kinds


async def test_sync_client_raises_adgen_error_with_reason_and_field_violations(fake_ad_server: FakeServer) -> None:
    def call() -> None:
        with AdGenClient(fake_ad_server.target) as client:
            client.create_ad("empty")

    with pytest.raises(AdGenError) as raised:
        await asyncio.to_thread(call)
    error = raised.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.reason == "EMPTY_KEYWORD"
    assert error.domain == "adgen.dev"
    assert error.field_violations == [
        FieldViolation("keyword", "must not be empty", ""),
        FieldViolation("width", "too big", ""),
    ]
    assert str(error).startswith("INVALID_ARGUMENT [EMPTY_KEYWORD]: Invalid request")


async def test_sync_stream_errors_name_the_stream_request_fields(fake_ad_server: FakeServer) -> None:
    def call() -> None:
        with AdGenClient(fake_ad_server.target) as client:
            list(client.stream_create_ad("empty"))

    with pytest.raises(AdGenError) as raised:
        await asyncio.to_thread(call)
    assert [v.field for v in raised.value.field_violations] == ["request.keyword", "request.width"]


async def test_async_client_parses_retry_info(fake_ad_server: FakeServer) -> None:
    async with AsyncAdGenClient(fake_ad_server.target, retry=RetryPolicy(enabled=False)) as client:
        with pytest.raises(AdGenError) as raised:
            await client.create_ad("busy")
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert raised.value.reason == "QUEUE_FULL" and raised.value.retry_after_s == 2


async def test_async_client_streams_and_edits(fake_ad_server: FakeServer) -> None:
    async with AsyncAdGenClient(fake_ad_server.target, timeout=10) as client:
        kinds = [event.WhichOneof("event") async for event in client.stream_create_ad("딸기", variant_count=2)]
        photo = image_of(40, 30, image_pb2.IMAGE_FORMAT_PNG).data
        edited = await client.edit_ad(photo, "밝게", seed=3)
        edit_kinds = [event.WhichOneof("event") async for event in client.stream_edit_ad(photo, "밝게")]
    assert kinds.count("image") == 2 and kinds[-1] == "result"
    assert (edited.image.width, edited.image.height) == (40, 30) and edited.seed == 3
    assert edit_kinds[-1] == "result" and edit_kinds.count("progress") > 0


async def test_async_client_reads_the_photo_file_off_the_event_loop(fake_ad_server: FakeServer, tmp_path: Path) -> None:
    # A FIFO whose only writer is a task on this loop: a read on the loop would never see the photo.
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    photo = image_of(40, 30, image_pb2.IMAGE_FORMAT_PNG).data
    written_by_the_loop = asyncio.Event()

    async def write_from_the_loop() -> None:
        while True:
            try:
                descriptor = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as error:
                if error.errno != errno.ENXIO:  # ENXIO: no reader has opened it yet.
                    raise
                await asyncio.sleep(0.01)
        with os.fdopen(descriptor, "wb") as pipe:
            pipe.write(photo)
        written_by_the_loop.set()

    def unblock_a_read_on_the_loop() -> None:
        with fifo.open("wb"):
            pass  # An empty photo ends a blocked read, so a failing test fails instead of hanging.

    safety = threading.Timer(20, unblock_a_read_on_the_loop)
    safety.start()
    try:
        writer = asyncio.create_task(write_from_the_loop())
        async with AsyncAdGenClient(fake_ad_server.target, timeout=10) as client:
            edited = await client.edit_ad(fifo, "밝게", seed=3)
        await writer
    finally:
        safety.cancel()
    assert written_by_the_loop.is_set() and (edited.image.width, edited.image.height) == (40, 30)


async def test_async_stream_errors_become_adgen_error(fake_ad_server: FakeServer) -> None:
    async with AsyncAdGenClient(fake_ad_server.target, retry=RetryPolicy(enabled=False)) as client:
        with pytest.raises(AdGenError) as raised:
            [event async for event in client.stream_create_ad("busy")]
    assert raised.value.reason == "QUEUE_FULL"


async def test_unreachable_server_is_unavailable_without_details() -> None:
    async with AsyncAdGenClient("127.0.0.1:1", timeout=5) as client:
        with pytest.raises(AdGenError) as raised:
            await client.create_ad("딸기")
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE and raised.value.reason == ""


class _ScriptedStatuses(ad_grpc.AdServiceServicer):
    """Fails CreateAd with the scripted codes, one per attempt, then answers; no shared interceptors,
    so errors are trailers-only, as retries need."""

    def __init__(self, codes: list[grpc.StatusCode]) -> None:
        self.codes = codes
        self.attempts = 0

    async def CreateAd(self, request: ad_pb.CreateAdRequest, context: Context) -> ad_pb.CreateAdResponse:
        self.attempts += 1
        if self.codes:
            await context.abort(self.codes.pop(0), "scripted failure")
        return ad_pb.CreateAdResponse(model_id="flux2-klein-4b")


@asynccontextmanager
async def _scripted_server(codes: list[grpc.StatusCode]) -> AsyncIterator[tuple[_ScriptedStatuses, str]]:
    servicer = _ScriptedStatuses(codes)  # type: ignore[abstract]  # only CreateAd is called
    server = aio.server(options=grpc_options(server=True))
    ad_grpc.add_AdServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def _attempts_until_done(codes: list[grpc.StatusCode]) -> tuple[int, grpc.StatusCode]:
    async with _scripted_server(codes) as (servicer, target):
        try:
            async with AsyncAdGenClient(target, timeout=30) as client:
                await client.create_ad("딸기")
            return servicer.attempts, grpc.StatusCode.OK
        except AdGenError as error:
            return servicer.attempts, error.code


async def test_unavailable_is_retried_by_the_channel_until_it_succeeds() -> None:
    unavailable = grpc.StatusCode.UNAVAILABLE
    assert await _attempts_until_done([unavailable, unavailable]) == (3, grpc.StatusCode.OK)


async def test_unavailable_gives_up_after_three_attempts() -> None:
    assert await _attempts_until_done([grpc.StatusCode.UNAVAILABLE] * 5) == (3, grpc.StatusCode.UNAVAILABLE)


async def test_a_channel_for_internal_hops_does_not_retry_unavailable() -> None:
    async with (
        _scripted_server([grpc.StatusCode.UNAVAILABLE]) as (servicer, target),
        create_aio_channel(target, retry_unavailable=False) as channel,
    ):
        with pytest.raises(aio.AioRpcError) as raised:
            await ad_grpc.AdServiceStub(channel).CreateAd(ad_pb.CreateAdRequest(keyword="딸기"), timeout=30)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and servicer.attempts == 1


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED]
)
async def test_other_errors_are_never_retried(code: grpc.StatusCode) -> None:
    assert await _attempts_until_done([code]) == (1, code)


async def test_unavailable_from_a_server_on_the_shared_runtime_is_retried(fake_ad_server: FakeServer) -> None:
    async with AsyncAdGenClient(fake_ad_server.target, timeout=30) as client:
        ad = await client.create_ad("flaky")
    assert len(ad.images) == 1


def test_new_options_reach_the_request_by_name() -> None:
    request = create_ad_request("딸기", quality="fast", overlay_headline=True, ai_disclosure=True)
    assert request.quality_preference == ad_pb.QUALITY_PREFERENCE_FAST
    assert request.overlay_headline and request.ai_disclosure
    assert edit_ad_request(b"png", "밝게", ai_disclosure=True).ai_disclosure
    with pytest.raises(ValueError, match="fast"):
        create_ad_request("딸기", quality="best")
