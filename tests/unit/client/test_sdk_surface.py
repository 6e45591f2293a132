"""The SDK's typed surface: strict options, plain-Python facts, error classes by code, request ids from
the call's metadata, configurable retries and typed progress with a wait-for-the-result helper."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc import aio

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import ad_pb2, image_pb2, progress_pb2
from adgen_client import (
    AdGenClient,
    AdGenError,
    AsyncAdGenClient,
    BadRequest,
    Facts,
    NotFound,
    PermissionDenied,
    ProgressEvent,
    QueueFull,
    RateLimited,
    Stage,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from adgen_client import requests as sdk_requests
from adgen_client.requests import create_ad_request, edit_ad_request
from adgen_runtime import Context
from adgen_wire.channel import grpc_options
from adgen_wire.formats import RAW_FORMATS
from tests.unit.client.conftest import STEPS, FakeServer, image_of

# ── strict options ────────────────────────────────────────────────────────────────────────────


def test_a_misspelled_option_is_a_type_error_naming_the_nearest_valid_one() -> None:
    with pytest.raises(TypeError, match=r"'variants'.*did you mean 'variant_count'"):
        create_ad_request("딸기", variants=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"'seeds'.*did you mean 'seed'"):
        edit_ad_request(b"png", "밝게", seeds=1)  # type: ignore[call-arg]


def test_the_client_refuses_a_misspelled_option_before_calling() -> None:
    with AdGenClient("127.0.0.1:1", timeout=5) as client, pytest.raises(TypeError, match="variant_count"):
        client.create_ad("딸기", variants=3)  # type: ignore[call-arg]


def test_caption_length_and_emoji_level_take_names_or_enums() -> None:
    request = create_ad_request("딸기", caption_length="short", emoji_level="none")
    assert request.caption_length == ad_pb2.CAPTION_LENGTH_SHORT and request.emoji_level == ad_pb2.EMOJI_LEVEL_NONE
    request = create_ad_request("딸기", caption_length=ad_pb2.CAPTION_LENGTH_LONG)
    assert request.caption_length == ad_pb2.CAPTION_LENGTH_LONG and request.emoji_level == 0
    with pytest.raises(ValueError, match="light"):
        create_ad_request("딸기", emoji_level="lots")


def test_the_enum_tables_name_every_value_of_their_protobuf_enum() -> None:
    tables: list[tuple[dict[str, int], list[int]]] = [
        (dict(sdk_requests.PLACEMENTS), list(ad_pb2.Placement.values())),
        (dict(sdk_requests.TONES), list(ad_pb2.Tone.values())),
        (dict(sdk_requests.CAPTION_LENGTHS), list(ad_pb2.CaptionLength.values())),
        (dict(sdk_requests.EMOJI_LEVELS), list(ad_pb2.EmojiLevel.values())),
        (dict(sdk_requests.FORMATS), [v for v in image_pb2.ImageFormat.values() if v not in RAW_FORMATS]),
        (dict(sdk_requests.QUALITY_PREFERENCES), list(ad_pb.QualityPreference.values())),
    ]
    for table, numbers in tables:
        assert sorted(table.values()) == sorted(number for number in numbers if number)
    assert sdk_requests.PLACEMENTS["feed-portrait"] == ad_pb2.PLACEMENT_FEED_PORTRAIT


def test_facts_are_plain_python_a_dataclass_or_a_mapping() -> None:
    from_dataclass = create_ad_request(
        "딸기", facts=Facts(shop_name="하루카페", price="5,500원", extra=["매일 생과일"])
    )
    from_mapping = create_ad_request(
        "딸기", facts={"shop_name": "하루카페", "price": "5,500원", "extra": "매일 생과일"}
    )
    expected = ad_pb2.MerchantFacts(shop_name="하루카페", price="5,500원", extra=["매일 생과일"])
    assert from_dataclass.facts == expected == from_mapping.facts
    assert create_ad_request("딸기", facts=expected).facts == expected
    with pytest.raises(TypeError, match=r"'shop'.*did you mean 'shop_name'"):
        create_ad_request("딸기", facts={"shop": "하루카페"})


# ── errors ────────────────────────────────────────────────────────────────────────────────────


class _Failing(ad_grpc.AdServiceServicer):
    """Fails CreateAd with a scripted code, message and metadata, without the shared runtime."""

    code = grpc.StatusCode.NOT_FOUND
    details = "scripted failure"
    initial: Sequence[tuple[str, str | bytes]] = ()
    trailing: Sequence[tuple[str, str | bytes]] = ()

    async def CreateAd(self, request: ad_pb.CreateAdRequest, context: Context) -> ad_pb.CreateAdResponse:
        if self.initial:
            await context.send_initial_metadata(self.initial)
        context.set_trailing_metadata(self.trailing)
        await context.abort(self.code, self.details)


@asynccontextmanager
async def _failing_server() -> AsyncIterator[tuple[_Failing, str]]:
    servicer = _Failing()  # type: ignore[abstract]  # only CreateAd is called
    server = aio.server(options=grpc_options(server=True))
    ad_grpc.add_AdServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def _failure(servicer: _Failing, target: str) -> AdGenError:
    async with AsyncAdGenClient(target, timeout=30, max_retries=0) as client:
        with pytest.raises(AdGenError) as raised:
            await client.create_ad("딸기")
    return raised.value


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, BadRequest),
        (grpc.StatusCode.FAILED_PRECONDITION, BadRequest),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, RateLimited),
        (grpc.StatusCode.DEADLINE_EXCEEDED, Timeout),
        (grpc.StatusCode.INTERNAL, AdGenError),
    ],
)
async def test_each_code_raises_its_own_error_class(code: grpc.StatusCode, kind: type[AdGenError]) -> None:
    async with _failing_server() as (servicer, target):
        servicer.code = code
        error = await _failure(servicer, target)
    assert type(error) is kind and error.code == code


async def test_queue_full_is_a_rate_limit_told_apart_by_its_reason(fake_ad_server: FakeServer) -> None:
    async with AsyncAdGenClient(fake_ad_server.target, timeout=30, max_retries=0) as client:
        with pytest.raises(QueueFull) as raised:
            await client.create_ad("busy")
    assert isinstance(raised.value, RateLimited) and raised.value.retry_after_s == 2


async def test_the_request_id_comes_from_the_x_request_id_trailer() -> None:
    async with _failing_server() as (servicer, target):
        servicer.trailing = (("x-request-id", "rid-trailer"),)
        assert (await _failure(servicer, target)).request_id == "rid-trailer"
        servicer.trailing, servicer.initial = (), (("x-request-id", "rid-initial"),)
        assert (await _failure(servicer, target)).request_id == "rid-initial"


def _details_bin(code: int, message: str) -> bytes:
    info = error_details_pb2.ErrorInfo(reason="MODEL_NOT_FOUND", domain="adgen")
    status = status_pb2.Status(code=code, message=message)
    status.details.add().Pack(info)
    serialized: bytes = status.SerializeToString()
    return serialized


async def test_rich_details_are_read_only_when_they_agree_with_the_call() -> None:
    async with _failing_server() as (servicer, target):
        servicer.trailing = (("grpc-status-details-bin", _details_bin(code_pb2.NOT_FOUND, servicer.details)),)
        assert (await _failure(servicer, target)).reason == "MODEL_NOT_FOUND"
        servicer.trailing = (("grpc-status-details-bin", _details_bin(code_pb2.INTERNAL, servicer.details)),)
        mismatched = await _failure(servicer, target)
        servicer.trailing = (("grpc-status-details-bin", b"\xff\xff not a status"),)
        corrupt = await _failure(servicer, target)
    for ignored in (mismatched, corrupt):
        assert type(ignored) is NotFound and ignored.reason == "" and ignored.message == "scripted failure"


async def test_an_unreachable_server_is_unavailable() -> None:
    async with AsyncAdGenClient("127.0.0.1:1", timeout=5) as client:
        with pytest.raises(Unavailable):
            await client.create_ad("딸기")


# ── typed progress ────────────────────────────────────────────────────────────────────────────


def test_progress_events_are_typed() -> None:
    event = ProgressEvent.from_proto(
        progress_pb2.Progress(stage=progress_pb2.PROGRESS_STAGE_DENOISING, step=2, total_steps=8), variant_index=1
    )
    assert event == ProgressEvent(Stage.DENOISING, variant_index=1, step=2, total_steps=8)
    assert ProgressEvent.from_proto(progress_pb2.Progress(stage=99)).stage is Stage.UNSPECIFIED  # type: ignore[arg-type]
    assert [stage.value for stage in Stage] == sorted(progress_pb2.ProgressStage.values())


async def test_create_ad_and_wait_reports_typed_progress_and_returns_the_ad(fake_ad_server: FakeServer) -> None:
    seen: list[ProgressEvent] = []

    def call() -> ad_pb.CreateAdResponse:
        with AdGenClient(fake_ad_server.target, timeout=30) as client:
            return client.create_ad_and_wait("딸기", variant_count=2, on_progress=seen.append)

    ad = await asyncio.to_thread(call)
    assert len(ad.images) == 2 and ad.request_id == "rid-1"
    assert seen[0] == ProgressEvent(Stage.QUEUED, variant_index=0, queue_position=1, eta_s=4.0)
    denoising = [(e.variant_index, e.step) for e in seen if e.stage is Stage.DENOISING]
    assert denoising == [(v, s) for v in (0, 1) for s in range(1, STEPS + 1)]


async def test_the_async_helpers_await_an_async_callback(fake_ad_server: FakeServer) -> None:
    stages: list[Stage] = []

    async def record(event: ProgressEvent) -> None:
        stages.append(event.stage)

    photo = image_of(40, 30, image_pb2.IMAGE_FORMAT_PNG).data
    async with AsyncAdGenClient(fake_ad_server.target, timeout=30) as client:
        edited = await client.edit_ad_and_wait(photo, "밝게", on_progress=record)
    assert (edited.image.width, edited.image.height) == (40, 30)
    assert stages == [Stage.QUEUED, Stage.LOADING, *[Stage.DENOISING] * STEPS, Stage.DONE]
