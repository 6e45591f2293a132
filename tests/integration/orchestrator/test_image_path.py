"""The image path over real gRPC against fake downstreams: raw pixels asked for, timings that add up, streams
that do not repeat bytes (also on replays), the SDK rebuilding the whole ad, and responses too large refused early."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import ad_pb2, image_pb2
from adgen_client import AdGenError, AsyncAdGenClient
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.server import OrchestratorServer, create_server
from adgen_wire.channel import create_aio_channel
from tests.integration.orchestrator.conftest import FakeStack
from tests.support.orchestrator_fakes import png

KEYWORD = "여름 느낌 딸기 생과일 주스"
MIB = 1024 * 1024
# What the timings leave out of total_duration: the model lookup and the hand-offs between the event loop and
# the worker threads; on a busy 2-core machine these stay well under this.
TIMINGS_TOLERANCE_S = 0.1


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.ToNanoseconds() / 1e9


def _parts_s(timings: ad_pb.ImageTimings) -> float:
    parts = (timings.queue, timings.load, timings.denoise, timings.decode, timings.encode, timings.deliver)
    return sum(_seconds(part) for part in parts)


def _without_run_facts(ad: ad_pb.CreateAdResponse) -> ad_pb.CreateAdResponse:
    """The ad without what differs between two runs of the same request: timings, durations, request id."""
    kept = ad_pb.CreateAdResponse()
    kept.CopyFrom(ad)
    for field in ("total_duration", "copy_duration", "request_id"):
        kept.ClearField(field)
    for image in kept.images:
        image.ClearField("timings")
    return kept


async def test_the_diffusion_service_is_asked_for_raw_pixels_and_the_caller_gets_the_format_it_named(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    request = ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64, output_format=image_pb2.IMAGE_FORMAT_WEBP)
    ad = await ad_stub.CreateAd(request)
    assert ad.images[0].image.format == image_pb2.IMAGE_FORMAT_WEBP
    assert [call.request.output_format for call in fake_stack.diffusion.calls] == [image_pb2.IMAGE_FORMAT_RAW_RGB]


async def test_raw_rgb_as_the_output_format_is_invalid_before_any_downstream_call(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    call = ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD, output_format=image_pb2.IMAGE_FORMAT_RAW_RGB))
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad) and [v.field for v in bad.field_violations] == ["output_format"]
    assert fake_stack.copywriter.calls == [] and fake_stack.diffusion.calls == []


async def test_the_timings_of_the_slowest_image_and_the_copy_add_up_to_the_call(
    ad_stub: ad_grpc.AdServiceAsyncStub,
) -> None:
    request = ad_pb.CreateAdRequest(keyword=KEYWORD, variant_count=3, width=1080, height=1350, seed=4)
    await ad_stub.CreateAd(request)  # The model catalog is now kept, so the measured call does no lookup.
    ad = await ad_stub.CreateAd(request)
    total, copy = _seconds(ad.total_duration), _seconds(ad.copy_duration)
    assert copy > 0
    for image in ad.images:
        assert _seconds(image.timings.encode) > 0 and _seconds(image.timings.deliver) > 0
        assert copy + _parts_s(image.timings) <= total
    # The variants run side by side: the call lasts the copy plus its slowest image.
    slowest = max(_parts_s(image.timings) for image in ad.images)
    assert total - (copy + slowest) < TIMINGS_TOLERANCE_S


async def test_edit_ad_reports_the_instruction_time_and_the_images_timings(ad_stub: ad_grpc.AdServiceAsyncStub) -> None:
    edited = await ad_stub.EditAd(ad_pb.EditAdRequest(image=image_pb2.Image(data=png(120, 90)), instruction="밝게"))
    total, instruction = _seconds(edited.total_duration), _seconds(edited.instruction_duration)
    assert instruction > 0 and _seconds(edited.timings.encode) > 0
    assert 0 <= total - (instruction + _parts_s(edited.timings)) < TIMINGS_TOLERANCE_S


async def test_a_replayed_stream_gets_whole_images_and_a_joined_one_gets_references(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    request = ad_pb.CreateAdRequest(keyword=KEYWORD, variant_count=2, width=64, height=64, request_id="replay-1")
    streamed = ad_pb.StreamCreateAdRequest(request=request)
    first = [event async for event in ad_stub.StreamCreateAd(streamed)]
    assert all(image.data_in_stream for image in first[-1].result.images)
    # A replay sends only the result: it cannot refer to images this stream never carried.
    (replayed,) = [event async for event in ad_stub.StreamCreateAd(streamed)]
    assert all(image.image.data and not image.data_in_stream for image in replayed.result.images)
    unary = await ad_stub.CreateAd(request)
    assert list(unary.images) == list(replayed.result.images)
    assert len(fake_stack.diffusion.calls) == 2  # One run, three answers.


async def test_the_sdk_rebuilds_the_whole_ad_from_the_stream_equal_to_the_unary_ad(fake_stack: FakeStack) -> None:
    options = {"variant_count": 2, "width": 96, "height": 64, "seed": 21, "output_format": "png"}
    async with AsyncAdGenClient(fake_stack.target) as client:
        streamed = await client.create_ad_and_wait(KEYWORD, **options)  # type: ignore[arg-type]
        unary = await client.create_ad(KEYWORD, **options)  # type: ignore[arg-type]
    assert all(image.image.data and not image.data_in_stream for image in streamed.images)
    assert _without_run_facts(streamed) == _without_run_facts(unary)


@pytest.fixture(scope="module")
async def small_limit_orchestrator(fake_stack_session: FakeStack) -> AsyncIterator[OrchestratorServer]:
    """An orchestrator with grpc-js's and grpcurl's default message limit, 4 MiB, on the same fakes."""
    target = f"127.0.0.1:{fake_stack_session.downstream.port}"
    settings = OrchestratorSettings(
        port=0, http_enabled=False, copywriter_target=target, diffusion_target=target, max_message_bytes=4 * MIB
    )
    orchestrator = await create_server(settings)
    yield orchestrator
    await orchestrator.stop(None)


def _stories(image_format: image_pb2.ImageFormat.ValueType) -> ad_pb.CreateAdRequest:
    return ad_pb.CreateAdRequest(
        keyword=KEYWORD, placement=ad_pb2.PLACEMENT_STORY, variant_count=4, output_format=image_format
    )


async def test_a_unary_response_predicted_over_the_limit_is_refused_before_any_downstream_call(
    fake_stack: FakeStack, small_limit_orchestrator: OrchestratorServer
) -> None:
    async with create_aio_channel(f"127.0.0.1:{small_limit_orchestrator.port}") as channel:
        call = ad_grpc.AdServiceStub(channel).CreateAd(_stories(image_pb2.IMAGE_FORMAT_PNG))
        with pytest.raises(aio.AioRpcError) as raised:
            await call
        status = await rpc_status.aio.from_call(call)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "RESPONSE_TOO_LARGE"
    assert int(info.metadata["predicted_bytes"]) > 4 * 1080 * 1920 * 3 and info.metadata["max_bytes"] == str(4 * MIB)
    assert fake_stack.copywriter.calls == [] and fake_stack.diffusion.calls == []


async def test_the_default_jpeg_story_ad_streamed_fits_because_each_image_travels_alone(
    fake_stack: FakeStack, small_limit_orchestrator: OrchestratorServer
) -> None:
    async with AsyncAdGenClient(f"127.0.0.1:{small_limit_orchestrator.port}") as client:
        with pytest.raises(AdGenError) as raised:
            await client.create_ad(KEYWORD, placement="story", variant_count=4)
        # Four JPEG bounds (noise, 1.2 bytes a pixel) are over 4 MiB, though real story JPEGs are a tenth of that...
        assert raised.value.reason == "RESPONSE_TOO_LARGE"
        assert fake_stack.diffusion.calls == []
        ad = await client.create_ad_and_wait(KEYWORD, placement="story", variant_count=4)
    # ...and one bound is not: the stream runs, and the SDK hands back the whole ad.
    assert len(ad.images) == 4 and all(image.image.data for image in ad.images)
    assert len(fake_stack.diffusion.calls) == 4
