"""A scripted fake AdService on a free loopback port (sync grpc.server), for AppTest runs of the page."""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf import duration_pb2
from PIL import Image

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import ad_pb2, error_reason_pb2, image_pb2, progress_pb2
from adgen_orchestrator.imaging import read_photo
from adgen_runtime.errors import BadField, ResourceExhausted, ServiceError, invalid_fields
from adgen_runtime.photos import InvalidImageError

_R = error_reason_pb2
_S = progress_pb2
BUSY_KEYWORD = "바쁜 시간"
BROKEN_INSTRUCTION = "깨진 사진"
TOO_LARGE_INSTRUCTION = "너무 큰 사진"
STEPS = 2
# The fake's image heights by placement at 96 pixels wide: 1:1, 4:5, 9:16.
PLACEMENT_HEIGHTS = {ad_pb2.PLACEMENT_FEED_SQUARE: 96, ad_pb2.PLACEMENT_FEED_PORTRAIT: 120, ad_pb2.PLACEMENT_STORY: 170}


def png_of(width: int, height: int, color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def _image(width: int, height: int, color: str) -> image_pb2.Image:
    return image_pb2.Image(
        data=png_of(width, height, color), format=image_pb2.IMAGE_FORMAT_PNG, width=width, height=height
    )


def _job_progress() -> list[progress_pb2.Progress]:
    """A job's life: queued behind two, model loading, each denoising step, decoding, done."""
    queued = progress_pb2.Progress(
        stage=_S.PROGRESS_STAGE_QUEUED, queue_position=2, eta=duration_pb2.Duration(seconds=3)
    )
    steps = [progress_pb2.Progress(stage=_S.PROGRESS_STAGE_DENOISING, step=i, total_steps=STEPS) for i in (1, 2)]
    tail = [
        progress_pb2.Progress(stage=_S.PROGRESS_STAGE_DECODING),
        progress_pb2.Progress(stage=_S.PROGRESS_STAGE_DONE),
    ]
    return [queued, progress_pb2.Progress(stage=_S.PROGRESS_STAGE_LOADING), *steps, *tail]


@dataclass
class ScriptedAdService(ad_grpc.AdServiceServicer):
    """Streams like the orchestrator; BUSY_KEYWORD is QUEUE_FULL and BROKEN_INSTRUCTION is INVALID_IMAGE."""

    create_requests: list[ad_pb.CreateAdRequest] = field(default_factory=list)
    edit_requests: list[ad_pb.EditAdRequest] = field(default_factory=list)

    def ListModels(self, request: ad_pb.ListModelsRequest, context: grpc.ServicerContext) -> ad_pb.ListModelsResponse:
        return ad_pb.ListModelsResponse()

    def CreateAd(self, request: ad_pb.CreateAdRequest, context: grpc.ServicerContext) -> ad_pb.CreateAdResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "the page streams")

    def EditAd(self, request: ad_pb.EditAdRequest, context: grpc.ServicerContext) -> ad_pb.EditAdResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "the page streams")

    def StreamCreateAd(
        self, request: ad_pb.StreamCreateAdRequest, context: grpc.ServicerContext
    ) -> Iterator[ad_pb.StreamCreateAdResponse]:
        ask = request.request
        self.create_requests.append(ask)
        if ask.keyword == BUSY_KEYWORD:
            _abort(context, ResourceExhausted(_R.ERROR_REASON_QUEUE_FULL, "The GPU queue is full.", retry_after_s=7))
        copy = ad_pb.AdCopy(
            caption=f"{ask.keyword} 한 잔으로 여름을 시작해요.",
            hook="올여름 첫 딸기 한 잔",
            hashtags=["딸기주스", "여름음료"],
            headline="딸기 가득 여름",
            alt_text="딸기 주스 사진",
        )
        yield ad_pb.StreamCreateAdResponse(copy=copy)
        images = []
        for index in range(ask.variant_count or 1):
            for placement in ask.placements or [ask.placement or ad_pb2.PLACEMENT_FEED_SQUARE]:
                for progress in _job_progress():
                    yield ad_pb.StreamCreateAdResponse(
                        progress=ad_pb.VariantProgress(variant_index=index, progress=progress)
                    )
                width, height = ask.width or 96, ask.height or PLACEMENT_HEIGHTS[placement]
                image = ad_pb.AdImage(
                    variant_index=index, image=_image(width, height, "red"), seed=index, placement=placement
                )
                images.append(image)
                yield ad_pb.StreamCreateAdResponse(image=image)
        result = ad_pb.CreateAdResponse(
            copy=copy, images=images, model_id="tiny", num_inference_steps=STEPS, request_id=ask.request_id
        )
        yield ad_pb.StreamCreateAdResponse(result=result)

    def StreamEditAd(
        self, request: ad_pb.StreamEditAdRequest, context: grpc.ServicerContext
    ) -> Iterator[ad_pb.StreamEditAdResponse]:
        ask = request.request
        self.edit_requests.append(ask)
        if ask.instruction == BROKEN_INSTRUCTION:
            _abort(
                context,
                invalid_fields([BadField("image", "could not be decoded")], _R.ERROR_REASON_INVALID_IMAGE),
            )
        if ask.instruction == TOO_LARGE_INSTRUCTION:
            # The orchestrator's own words for a photo over its byte limit, as it sends them on a stream.
            too_large = BadField("request.image.data", orchestrator_refusal(ask.image.data, max_bytes=16))
            _abort(context, invalid_fields([too_large], _R.ERROR_REASON_INVALID_IMAGE))
        for progress in _job_progress():
            yield ad_pb.StreamEditAdResponse(progress=progress)
        result = ad_pb.EditAdResponse(
            image=_image(64, 48, "blue"), edit_instruction="make it blue", request_id=ask.request_id
        )
        yield ad_pb.StreamEditAdResponse(result=result)


def orchestrator_refusal(photo: bytes, *, max_bytes: int = 20 * 1024 * 1024, max_pixels: int = 40_000_000) -> str:
    """What the orchestrator's photo check says about `photo` under these limits."""
    try:
        read_photo(photo, max_bytes=max_bytes, max_pixels=max_pixels)
    except InvalidImageError as rejected:
        return str(rejected)
    raise AssertionError("the orchestrator accepted the photo")


def _abort(context: grpc.ServicerContext, error: ServiceError) -> None:
    context.abort_with_status(error.to_status())


@dataclass(frozen=True)
class FakeAdService:
    """The fake's host:port and the servicer, to read the requests it saw."""

    target: str
    servicer: ScriptedAdService


@pytest.fixture(scope="session")
def fake_ad_service() -> Iterator[FakeAdService]:
    servicer = ScriptedAdService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ad_grpc.add_AdServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield FakeAdService(f"127.0.0.1:{port}", servicer)
    server.stop(None)
