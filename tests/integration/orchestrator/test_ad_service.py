"""AdService over real gRPC against fake downstream services: composition, errors, deadlines."""

from __future__ import annotations

import asyncio
import io
from typing import TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status
from PIL import Image

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.type.v1 import ad_pb2, error_reason_pb2, image_pb2
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.server import create_server
from adgen_runtime.errors import BadField, ResourceExhausted, Unavailable, invalid_fields
from adgen_wire.channel import create_aio_channel
from tests.integration.orchestrator.conftest import FakeStack
from tests.live_services import unused_loopback_port
from tests.support.orchestrator_fakes import EDIT_OUTPUT_SIZE, FAKE_STEPS, png

_R = error_reason_pb2
_M = TypeVar("_M", bound=Message)
KEYWORD = "여름 느낌 딸기 생과일 주스"


async def _status_of(call: aio.Call) -> status_pb2.Status:
    status = await rpc_status.aio.from_call(call)
    assert status is not None, "the error carried no rich status"
    return status


def _detail(status: status_pb2.Status, kind: type[_M]) -> _M | None:
    for detail in status.details:
        message = kind()
        if detail.Unpack(message):
            return message
    return None


def _error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    info = _detail(status, error_details_pb2.ErrorInfo)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    return info


def _fields(status: status_pb2.Status) -> list[str]:
    bad = _detail(status, error_details_pb2.BadRequest)
    assert isinstance(bad, error_details_pb2.BadRequest)
    return [violation.field for violation in bad.field_violations]


async def test_create_ad_reports_the_steps_the_diffusion_service_ran(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    # The fake registry gives z-image-turbo no default steps; only the diffusion service knows what it ran.
    request = ad_pb.CreateAdRequest(keyword=KEYWORD, model_id="z-image-turbo", width=64, height=64)
    response = await ad_stub.CreateAd(request)
    assert response.num_inference_steps == FAKE_STEPS


async def test_a_model_added_to_the_diffusion_registry_later_is_found(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    await ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64))  # The catalog is now kept.
    added = df_pb.Model(id="flux2-klein-9b", tasks=[df_pb.MODEL_TASK_TEXT_TO_IMAGE], size_multiple=16, min_side=32)
    fake_stack.diffusion.models.append(added)
    response = await ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD, model_id=added.id, width=64, height=64))
    assert response.model_id == added.id


async def test_create_ad_delivers_each_variant_at_the_exact_requested_size(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    request = ad_pb.CreateAdRequest(keyword=KEYWORD, variant_count=2, width=100, height=300, seed=7)
    response = await ad_stub.CreateAd(request)
    assert [image.variant_index for image in response.images] == [0, 1]
    assert [image.seed for image in response.images] == [7, 8]
    assert response.model_id == "flux2-klein-4b" and response.num_inference_steps == FAKE_STEPS  # the default
    for ad_image in response.images:
        with Image.open(io.BytesIO(ad_image.image.data)) as decoded:
            assert decoded.format == "JPEG" and decoded.size == (100, 300)  # JPEG: the default format
        assert (ad_image.image.width, ad_image.image.height) == (100, 300)
    generated = [call.request for call in fake_stack.diffusion.calls]
    assert all(isinstance(job, df_pb.GenerateRequest) for job in generated)
    # A step of 16 is a large share of 100: generated at legal multiples with the delivered 1:3 aspect, resized.
    assert [(job.width, job.height) for job in generated] == [(112, 336), (112, 336)]


async def test_create_ad_gives_each_variant_its_own_prompt_and_seed(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    response = await ad_stub.CreateAd(
        ad_pb.CreateAdRequest(keyword=KEYWORD, variant_count=3, seed=100, width=64, height=64)
    )
    prompts = [image.image_prompt for image in response.images]
    assert len(set(prompts)) == 3
    # The variants' jobs are queued together, so they may reach the diffusion service in any order.
    sent = sorted((call.request.seed, call.request.prompt) for call in fake_stack.diffusion.calls)
    assert sent == [(100 + i, prompt) for i, prompt in enumerate(prompts)]
    copy_request = fake_stack.copywriter.calls[0].request
    assert copy_request.variant_count == 3 and copy_request.target_model_id == "flux2-klein-4b"


async def test_create_ad_reuses_prompts_when_the_copywriter_writes_fewer(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    fake_stack.copywriter.prompt_count = 1
    response = await ad_stub.CreateAd(
        ad_pb.CreateAdRequest(keyword=KEYWORD, variant_count=2, seed=100, width=64, height=64)
    )
    only_prompt = "Fresh strawberry juice, composition 0"  # the one prompt the fake copywriter wrote
    assert [image.image_prompt for image in response.images] == [only_prompt, only_prompt]
    # The reused prompt still yields two different pictures: each variant keeps its own seed.
    sent = sorted((call.request.seed, call.request.prompt) for call in fake_stack.diffusion.calls)
    assert sent == [(100, only_prompt), (101, only_prompt)]


@pytest.mark.parametrize(
    ("placement", "delivered", "generated"),
    [
        (ad_pb2.PLACEMENT_UNSPECIFIED, (1080, 1080), (1088, 1088)),
        (ad_pb2.PLACEMENT_FEED_PORTRAIT, (1080, 1350), (1088, 1360)),
        (ad_pb2.PLACEMENT_STORY, (1080, 1920), (1088, 1920)),  # each side rounded up, then centre-cropped
    ],
)
async def test_create_ad_uses_the_placement_size_when_no_size_is_given(
    fake_stack: FakeStack,
    ad_stub: ad_grpc.AdServiceAsyncStub,
    placement: ad_pb2.Placement.ValueType,
    delivered: tuple[int, int],
    generated: tuple[int, int],
) -> None:
    response = await ad_stub.CreateAd(
        ad_pb.CreateAdRequest(keyword=KEYWORD, placement=placement, output_format=image_pb2.IMAGE_FORMAT_JPEG)
    )
    with Image.open(io.BytesIO(response.images[0].image.data)) as decoded:
        assert decoded.format == "JPEG" and decoded.size == delivered
    job = fake_stack.diffusion.calls[0].request
    assert (job.width, job.height) == generated


async def test_stream_create_ad_sends_copy_then_progress_then_image_per_variant_then_result(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    request = ad_pb.CreateAdRequest(keyword=KEYWORD, variant_count=2, width=64, height=64)
    events = [event async for event in ad_stub.StreamCreateAd(ad_pb.StreamCreateAdRequest(request=request))]
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "copy" and kinds[-1] == "result"
    image_positions = {events[i].image.variant_index: i for i, kind in enumerate(kinds) if kind == "image"}
    assert sorted(image_positions) == [0, 1]
    for variant, position in image_positions.items():
        # Each variant's progress comes before its image; the two variants' jobs run side by side.
        progress_positions = [
            i
            for i, event in enumerate(events)
            if event.HasField("progress") and event.progress.variant_index == variant
        ]
        assert progress_positions and max(progress_positions) < position
    assert [image.variant_index for image in events[-1].result.images] == [0, 1]
    assert events[0].copy.written_by == "template/fake-template"


async def test_the_streamed_result_refers_to_the_images_already_streamed_instead_of_repeating_them(
    ad_stub: ad_grpc.AdServiceAsyncStub,
) -> None:
    request = ad_pb.CreateAdRequest(keyword=KEYWORD, variant_count=2, width=64, height=64, seed=3)
    events = [event async for event in ad_stub.StreamCreateAd(ad_pb.StreamCreateAdRequest(request=request))]
    streamed = {event.image.variant_index: event.image for event in events if event.HasField("image")}
    result = events[-1].result
    for image in result.images:
        assert image.data_in_stream and image.image.data == b""
        earlier = streamed[image.variant_index]
        assert earlier.image.data and not earlier.data_in_stream
        # Everything but the bytes is kept, so the result still says what each file is.
        assert (image.image.format, image.image.width, image.image.height) == (
            earlier.image.format,
            earlier.image.width,
            earlier.image.height,
        )
        assert (image.seed, image.image_prompt, image.placement) == (
            earlier.seed,
            earlier.image_prompt,
            earlier.placement,
        )
    # The stream's messages hold each file once: the result is a small fraction of one image.
    assert result.ByteSize() < min(image.ByteSize() for image in streamed.values())


async def test_a_unary_create_ad_keeps_whole_images(ad_stub: ad_grpc.AdServiceAsyncStub) -> None:
    ad = await ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD, variant_count=2, width=64, height=64))
    assert all(image.image.data and not image.data_in_stream for image in ad.images)


async def test_request_id_and_deadline_are_passed_downstream(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    request = ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64)
    response = await ad_stub.CreateAd(request, timeout=30, metadata=(("x-request-id", "req-123"),))
    assert response.request_id == "req-123"
    # Both services must have been called, or the loop below would pass on nothing.
    assert fake_stack.copywriter.calls and fake_stack.diffusion.calls
    for call in (*fake_stack.copywriter.calls, *fake_stack.diffusion.calls):
        assert call.metadata.get("x-request-id") == "req-123"
        assert call.time_remaining is not None and 20 < call.time_remaining < 30
    assert fake_stack.copywriter.calls[0].request.request_id == "req-123"


async def test_a_minted_request_id_is_the_one_every_downstream_call_carries(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    response = await ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64), timeout=30)
    assert response.request_id
    downstream = (*fake_stack.copywriter.calls, *fake_stack.diffusion.calls)
    assert fake_stack.copywriter.calls and fake_stack.diffusion.calls
    assert {call.metadata.get("x-request-id") for call in downstream} == {response.request_id}


async def test_empty_keyword_is_rejected_before_any_downstream_call(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    call = ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword="  "))
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await _status_of(call)
    assert _error_info(status).reason == "EMPTY_KEYWORD"
    assert _fields(status) == ["keyword"]
    assert fake_stack.copywriter.calls == [] and fake_stack.diffusion.calls == []


@pytest.mark.parametrize(
    ("width", "height", "bad_fields"),
    [
        (32, 128, ["width"]),
        (128, 4096, ["height"]),
        (128, 0, ["height"]),
        (0, 128, ["width"]),
        (-1, 5000, ["width", "height"]),
    ],
)
async def test_bad_sizes_are_rejected_with_invalid_size_and_field_violations(
    ad_stub: ad_grpc.AdServiceAsyncStub, width: int, height: int, bad_fields: list[str]
) -> None:
    call = ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD, width=width, height=height))
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await _status_of(call)
    assert _error_info(status).reason == "INVALID_SIZE"
    assert _fields(status) == bad_fields


async def test_stream_create_ad_names_fields_by_their_path_in_the_stream_request(
    ad_stub: ad_grpc.AdServiceAsyncStub,
) -> None:
    request = ad_pb.CreateAdRequest(keyword="", variant_count=9)
    call = ad_stub.StreamCreateAd(ad_pb.StreamCreateAdRequest(request=request))
    with pytest.raises(aio.AioRpcError):
        [event async for event in call]
    status = await _status_of(call)
    assert _error_info(status).reason == "EMPTY_KEYWORD"
    assert _fields(status) == ["request.keyword", "request.variant_count"]


async def test_unknown_model_is_not_found_with_resource_info(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    call = ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD, model_id="sdxl-nope"))
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    status = await _status_of(call)
    assert _error_info(status).reason == "MODEL_NOT_FOUND"
    resource = _detail(status, error_details_pb2.ResourceInfo)
    assert isinstance(resource, error_details_pb2.ResourceInfo) and resource.resource_name == "sdxl-nope"
    assert fake_stack.copywriter.calls == []


async def test_edit_model_cannot_create_ads(ad_stub: ad_grpc.AdServiceAsyncStub) -> None:
    call = ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD, model_id="qwen-image-edit-2511"))
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _error_info(await _status_of(call)).reason == "MODEL_TASK_UNSUPPORTED"


async def test_downstream_invalid_argument_passes_through_with_its_details(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    fake_stack.copywriter.failure = invalid_fields(
        [BadField("keyword", "must be at most 100 graphemes")], _R.ERROR_REASON_INVALID_ARGUMENT
    )
    call = ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD))
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await _status_of(call)
    info = _error_info(status)
    assert info.reason == "INVALID_ARGUMENT" and info.metadata["service"] == "copywriter"
    assert _fields(status) == ["keyword"]


async def test_downstream_field_violations_name_the_fields_the_caller_sent(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    fake_stack.diffusion.failure = invalid_fields(
        [BadField("request.num_inference_steps", "must be between 1 and 100")], _R.ERROR_REASON_INVALID_ARGUMENT
    )
    request = ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64, num_inference_steps=500)
    unary = ad_stub.CreateAd(request)
    with pytest.raises(aio.AioRpcError):
        await unary
    assert _fields(await _status_of(unary)) == ["num_inference_steps"]
    fake_stack.copywriter.failure = invalid_fields(
        [BadField("keyword", "must be at most 100 graphemes")], _R.ERROR_REASON_INVALID_ARGUMENT
    )
    stream = ad_stub.StreamCreateAd(ad_pb.StreamCreateAdRequest(request=request))
    with pytest.raises(aio.AioRpcError):
        async for _ in stream:
            pass
    assert _fields(await _status_of(stream)) == ["request.keyword"]


async def test_diffusion_queue_full_keeps_its_retry_info(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    fake_stack.diffusion.failure = ResourceExhausted(_R.ERROR_REASON_QUEUE_FULL, "GPU queue is full", retry_after_s=3)
    # The orchestrator waits for queue room within the caller's deadline; this one is shorter than the retry delay.
    call = ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64), timeout=2)
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = await _status_of(call)
    assert _error_info(status).reason == "QUEUE_FULL"
    retry = _detail(status, error_details_pb2.RetryInfo)
    assert isinstance(retry, error_details_pb2.RetryInfo) and retry.retry_delay.seconds == 3


async def test_downstream_unavailable_becomes_upstream_unavailable(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    fake_stack.diffusion.failure = Unavailable(_R.ERROR_REASON_NOT_READY, "shutting down")
    call = ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64))
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    info = _error_info(await _status_of(call))
    assert info.reason == "UPSTREAM_UNAVAILABLE"
    assert info.metadata["service"] == "diffusion" and info.metadata["downstream_reason"] == "NOT_READY"


async def test_copywriter_down_is_unavailable_naming_the_copywriter(fake_stack: FakeStack) -> None:
    downstream = f"127.0.0.1:{fake_stack.downstream.port}"
    settings = OrchestratorSettings(
        port=0, http_enabled=False, copywriter_target=f"127.0.0.1:{unused_loopback_port()}", diffusion_target=downstream
    )
    orchestrator = await create_server(settings)
    try:
        async with create_aio_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            call = ad_grpc.AdServiceStub(channel).CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD), timeout=20)
            with pytest.raises(aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            info = _error_info(await _status_of(call))
    finally:
        await orchestrator.stop(None)
    assert info.reason == "UPSTREAM_UNAVAILABLE" and info.metadata["service"] == "copywriter"
    assert "copywriter" in (raised.value.details() or "")


async def test_caller_deadline_becomes_upstream_deadline_exceeded_and_stops_the_job(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    fake_stack.diffusion.hang = True
    call = ad_stub.CreateAd(ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64), timeout=1.5)
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The downstream call ran out first (the margin), so the caller gets the rich reason.
    assert _error_info(await _status_of(call)).reason == "UPSTREAM_DEADLINE_EXCEEDED"
    await asyncio.wait_for(fake_stack.diffusion.cancelled.wait(), timeout=5)


async def test_cancelling_the_caller_cancels_the_diffusion_job(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    fake_stack.diffusion.hang = True
    request = ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64)
    call = ad_stub.StreamCreateAd(ad_pb.StreamCreateAdRequest(request=request))
    async for event in call:
        if event.HasField("progress") and event.progress.progress.step == 2:
            break
    call.cancel()
    await asyncio.wait_for(fake_stack.diffusion.cancelled.wait(), timeout=5)


async def test_edit_ad_returns_the_edited_photo_at_the_original_size(
    fake_stack: FakeStack, ad_stub: ad_grpc.AdServiceAsyncStub
) -> None:
    request = ad_pb.EditAdRequest(
        image=image_pb2.Image(data=png(120, 90)), instruction="커피를 딸기 라떼로 바꿔줘", seed=5
    )
    response = await ad_stub.EditAd(request)
    with Image.open(io.BytesIO(response.image.data)) as decoded:
        assert decoded.size == (120, 90) != EDIT_OUTPUT_SIZE
        assert decoded.format == "JPEG"  # the default
        assert "compositeWithTrainedAlgorithmicMedia" in str(decoded.info.get("xmp"))
    assert response.edit_instruction == "Replace the coffee with a strawberry latte."
    assert response.model_id == "qwen-image-edit-2511" and response.seed == 5
    sent = fake_stack.diffusion.calls[0].request
    assert sent.instruction == response.edit_instruction


async def test_stream_edit_ad_streams_progress_then_the_result(ad_stub: ad_grpc.AdServiceAsyncStub) -> None:
    request = ad_pb.EditAdRequest(image=image_pb2.Image(data=png(64, 64)), instruction="make it brighter")
    events = [event async for event in ad_stub.StreamEditAd(ad_pb.StreamEditAdRequest(request=request))]
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"progress"} and len(kinds) > 1


@pytest.mark.parametrize(
    ("data", "instruction", "bad_fields", "reason"),
    [
        (b"", "밝게", ["image.data"], "INVALID_IMAGE"),
        (b"not an image at all", "밝게", ["image.data"], "INVALID_IMAGE"),
        (png(64, 64)[:60], "밝게", ["image.data"], "INVALID_IMAGE"),
        (png(64, 64), "   ", ["instruction"], "INVALID_ARGUMENT"),
        (b"", "", ["image.data", "instruction"], "INVALID_IMAGE"),
    ],
)
async def test_edit_ad_rejects_bad_photos_and_instructions_with_field_violations(
    fake_stack: FakeStack,
    ad_stub: ad_grpc.AdServiceAsyncStub,
    data: bytes,
    instruction: str,
    bad_fields: list[str],
    reason: str,
) -> None:
    call = ad_stub.EditAd(ad_pb.EditAdRequest(image=image_pb2.Image(data=data), instruction=instruction))
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await _status_of(call)
    assert _error_info(status).reason == reason and _fields(status) == bad_fields
    assert fake_stack.diffusion.calls == []
