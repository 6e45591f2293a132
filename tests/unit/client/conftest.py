"""A scripted fake AdService on a loopback port, behind the real shared runtime (rich errors)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from google.protobuf import duration_pb2
from PIL import Image

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import error_reason_pb2, image_pb2, progress_pb2
from adgen_runtime import Context
from adgen_runtime.errors import BadField, ResourceExhausted, Unavailable, invalid_fields
from adgen_runtime.server import RunningServer, ServiceBinding, start_server
from adgen_runtime.settings import ServerSettings

_R = error_reason_pb2
STEPS = 2


def image_of(width: int, height: int, image_format: image_pb2.ImageFormat.ValueType) -> image_pb2.Image:
    buffer = io.BytesIO()
    name = {image_pb2.IMAGE_FORMAT_JPEG: "JPEG", image_pb2.IMAGE_FORMAT_WEBP: "WEBP"}.get(image_format, "PNG")
    Image.new("RGB", (width, height), "orange").save(buffer, name)
    return image_pb2.Image(
        data=buffer.getvalue(), format=image_format or image_pb2.IMAGE_FORMAT_PNG, width=width, height=height
    )


@dataclass
class FakeAdService(ad_grpc.AdServiceServicer):
    """Answers like the orchestrator; keyword "empty" and "busy" fail the way a real one would,
    and "flaky" is UNAVAILABLE on its first two attempts."""

    seen: list[tuple[object, dict[str, str], float | None]] = field(default_factory=list)

    def _check(self, request: ad_pb.CreateAdRequest, context: Context, prefix: str) -> None:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        self.seen.append((request, metadata, context.time_remaining()))
        if request.keyword == "empty":
            raise invalid_fields(
                [BadField(prefix + "keyword", "must not be empty"), BadField(prefix + "width", "too big")],
                _R.ERROR_REASON_EMPTY_KEYWORD,
            )
        if request.keyword == "busy":
            raise ResourceExhausted(_R.ERROR_REASON_QUEUE_FULL, "The GPU queue is full.", retry_after_s=2)
        attempts = sum(1 for seen, _, _ in self.seen if getattr(seen, "keyword", "") == request.keyword)
        if request.keyword == "flaky" and attempts <= 2:
            raise Unavailable(_R.ERROR_REASON_UPSTREAM_UNAVAILABLE, "The diffusion service is unavailable.")

    def _ad(self, request: ad_pb.CreateAdRequest) -> ad_pb.CreateAdResponse:
        size = (request.width or 96, request.height or 96)
        images = [
            ad_pb.AdImage(
                variant_index=i,
                image=image_of(*size, request.output_format),
                seed=request.seed + i,
                image_prompt=f"strawberry juice, composition {i}",
            )
            for i in range(request.variant_count or 1)
        ]
        copy = ad_pb.AdCopy(
            caption=f"{request.keyword} 출시!",
            hook="여름엔 딸기",
            hashtags=["딸기", "카페"],
            headline="딸기 주스",
            alt_text="딸기 주스 사진",
            written_by="template/fake",
        )
        return ad_pb.CreateAdResponse(
            copy=copy, images=images, model_id="flux2-klein-4b", num_inference_steps=STEPS, request_id="rid-1"
        )

    async def ListModels(self, request: ad_pb.ListModelsRequest, context: Context) -> ad_pb.ListModelsResponse:
        return ad_pb.ListModelsResponse(models=[ad_pb.Model(id="tiny", tasks=[ad_pb.MODEL_TASK_TEXT_TO_IMAGE])])

    async def CreateAd(self, request: ad_pb.CreateAdRequest, context: Context) -> ad_pb.CreateAdResponse:
        self._check(request, context, "")
        return self._ad(request)

    async def StreamCreateAd(
        self, request: ad_pb.StreamCreateAdRequest, context: Context
    ) -> AsyncIterator[ad_pb.StreamCreateAdResponse]:
        self._check(request.request, context, "request.")
        ad = self._ad(request.request)
        yield ad_pb.StreamCreateAdResponse(copy=ad.copy)
        for image in ad.images:
            for progress in _progress():
                yield ad_pb.StreamCreateAdResponse(
                    progress=ad_pb.VariantProgress(variant_index=image.variant_index, progress=progress)
                )
            yield ad_pb.StreamCreateAdResponse(image=image)
        yield ad_pb.StreamCreateAdResponse(result=ad)

    def _edited(self, request: ad_pb.EditAdRequest) -> ad_pb.EditAdResponse:
        with Image.open(io.BytesIO(request.image.data)) as photo:
            size = photo.size
        return ad_pb.EditAdResponse(
            image=image_of(*size, request.output_format),
            edit_instruction="Make it brighter.",
            seed=request.seed,
            model_id="qwen-image-edit-2511",
            request_id="rid-2",
        )

    async def EditAd(self, request: ad_pb.EditAdRequest, context: Context) -> ad_pb.EditAdResponse:
        return self._edited(request)

    async def StreamEditAd(
        self, request: ad_pb.StreamEditAdRequest, context: Context
    ) -> AsyncIterator[ad_pb.StreamEditAdResponse]:
        for progress in _progress():
            yield ad_pb.StreamEditAdResponse(progress=progress)
        yield ad_pb.StreamEditAdResponse(result=self._edited(request.request))


def _progress() -> list[progress_pb2.Progress]:
    return [
        progress_pb2.Progress(
            stage=progress_pb2.PROGRESS_STAGE_QUEUED, queue_position=1, eta=duration_pb2.Duration(seconds=4)
        ),
        progress_pb2.Progress(stage=progress_pb2.PROGRESS_STAGE_LOADING, model_id="flux2-klein-4b"),
        *(
            progress_pb2.Progress(stage=progress_pb2.PROGRESS_STAGE_DENOISING, step=s, total_steps=STEPS)
            for s in range(1, STEPS + 1)
        ),
        progress_pb2.Progress(stage=progress_pb2.PROGRESS_STAGE_DONE),
    ]


@dataclass
class FakeServer:
    """The running fake and the servicer, whose `seen` list the tests read."""

    running: RunningServer
    service: FakeAdService

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"


@pytest.fixture(scope="session")
async def fake_ad_server_session() -> AsyncIterator[FakeServer]:
    service = FakeAdService()
    running = await start_server(
        ServerSettings(port=0),
        [
            ServiceBinding(
                "adgen.ad.v1.AdService", lambda server: ad_grpc.add_AdServiceServicer_to_server(service, server)
            )
        ],
    )
    yield FakeServer(running, service)
    await running.stop(None)


@pytest.fixture
def fake_ad_server(fake_ad_server_session: FakeServer) -> FakeServer:
    fake_ad_server_session.service.seen.clear()
    return fake_ad_server_session
