"""In-process fake copywriter and diffusion servicers that record calls and fail on request."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from adgen.copywriter.v1 import copywriter_service_pb2 as cw_pb
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as cw_grpc
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as df_grpc
from adgen.type.v1 import image_pb2, progress_pb2
from adgen_runtime import Context
from adgen_runtime.errors import ServiceError
from adgen_runtime.server import RunningServer, ServiceBinding, start_server
from adgen_runtime.settings import ServerSettings

EDIT_OUTPUT_SIZE = (64, 48)
FAKE_STEPS = 2


@dataclass
class RecordedCall:
    """What a fake saw of one call."""

    request: Any
    metadata: dict[str, str]
    time_remaining: float | None


def png(width: int, height: int, color: str = "pink") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def rendered(width: int, height: int, color: str, output_format: image_pb2.ImageFormat.ValueType) -> image_pb2.Image:
    """A plain picture as the diffusion service answers: raw RGB pixels when asked for them, else a PNG."""
    if output_format == image_pb2.IMAGE_FORMAT_RAW_RGB:
        data = Image.new("RGB", (width, height), color).tobytes()
        return image_pb2.Image(data=data, format=output_format, width=width, height=height, stride=3 * width)
    return image_pb2.Image(data=png(width, height, color), format=image_pb2.IMAGE_FORMAT_PNG)


def _record(calls: list[RecordedCall], request: object, context: Context) -> None:
    metadata = {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}
    calls.append(RecordedCall(request, metadata, context.time_remaining()))


@dataclass
class FakeCopywriter(cw_grpc.CopywriterServiceServicer):
    """Writes one distinct prompt per variant; raises `failure` when set."""

    failure: ServiceError | None = None
    prompt_count: int | None = None  # None writes as many prompts as asked for
    calls: list[RecordedCall] = field(default_factory=list)

    def reset(self) -> None:
        self.failure, self.prompt_count, self.calls = None, None, []

    async def GenerateCopy(self, request: cw_pb.GenerateCopyRequest, context: Context) -> cw_pb.GenerateCopyResponse:
        _record(self.calls, request, context)
        if self.failure is not None:
            raise self.failure
        count = self.prompt_count if self.prompt_count is not None else max(request.variant_count, 1)
        return cw_pb.GenerateCopyResponse(
            image_prompts=[f"Fresh strawberry juice, composition {i}" for i in range(count)],
            caption=f"{request.keyword}, 지금 만나보세요!",
            hook=f"{request.keyword}, 지금 만나보세요!",
            hashtags=["딸기주스", "카페"],
            headline="여름엔 딸기",
            alt_text="딸기 주스 한 잔",
            provenance=cw_pb.CopyProvenance(backend=cw_pb.BACKEND_TEMPLATE, model="fake-template"),
        )

    async def WriteEditInstruction(
        self, request: cw_pb.WriteEditInstructionRequest, context: Context
    ) -> cw_pb.WriteEditInstructionResponse:
        _record(self.calls, request, context)
        if self.failure is not None:
            raise self.failure
        return cw_pb.WriteEditInstructionResponse(instruction="Replace the coffee with a strawberry latte.")


MODELS = [
    df_pb.Model(
        id="flux2-klein-4b",
        tasks=[df_pb.MODEL_TASK_TEXT_TO_IMAGE, df_pb.MODEL_TASK_IMAGE_EDIT],
        size_multiple=16,
        min_side=32,
        max_side=2048,
        default_steps=FAKE_STEPS,
    ),
    df_pb.Model(
        id="z-image-turbo", tasks=[df_pb.MODEL_TASK_TEXT_TO_IMAGE], size_multiple=16, min_side=32, max_side=2048
    ),
    df_pb.Model(
        id="qwen-image-edit-2511", tasks=[df_pb.MODEL_TASK_IMAGE_EDIT], size_multiple=16, min_side=32, max_side=2048
    ),
]


@dataclass
class FakeDiffusion(df_grpc.DiffusionServiceServicer):
    """Streams queued → loading → denoising → result; can fail, or hang until cancelled."""

    failure: ServiceError | None = None
    hang: bool = False
    # When set, each job holds its result until the event fires, so a test can act while it is in flight.
    gate: asyncio.Event | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[RecordedCall] = field(default_factory=list)
    models: list[df_pb.Model] = field(default_factory=lambda: list(MODELS))

    def reset(self) -> None:
        self.failure, self.hang, self.gate, self.calls, self.models = None, False, None, [], list(MODELS)
        self.cancelled = asyncio.Event()

    async def ListModels(self, request: df_pb.ListModelsRequest, context: Context) -> df_pb.ListModelsResponse:
        return df_pb.ListModelsResponse(models=self.models)

    async def StreamGenerate(
        self, request: df_pb.StreamGenerateRequest, context: Context
    ) -> AsyncIterator[df_pb.StreamGenerateResponse]:
        _record(self.calls, request.request, context)
        async for progress in self._progress(request.request.model_id):
            yield df_pb.StreamGenerateResponse(progress=progress)
        job = request.request
        image = rendered(job.width, job.height, "pink", job.output_format)
        result = df_pb.GenerateResponse(
            images=[df_pb.GeneratedImage(image=image, seed=job.seed)],
            info=df_pb.GenerationInfo(model_id=job.model_id, num_inference_steps=job.num_inference_steps or FAKE_STEPS),
        )
        yield df_pb.StreamGenerateResponse(result=result)

    async def StreamEdit(
        self, request: df_pb.StreamEditRequest, context: Context
    ) -> AsyncIterator[df_pb.StreamEditResponse]:
        _record(self.calls, request.request, context)
        async for progress in self._progress(request.request.model_id):
            yield df_pb.StreamEditResponse(progress=progress)
        image = rendered(*EDIT_OUTPUT_SIZE, "red", request.request.output_format)
        result = df_pb.EditResponse(
            images=[df_pb.GeneratedImage(image=image, seed=request.request.seed or 99)],
            info=df_pb.GenerationInfo(model_id=request.request.model_id, num_inference_steps=FAKE_STEPS),
        )
        yield df_pb.StreamEditResponse(result=result)

    async def Generate(self, request: df_pb.GenerateRequest, context: Context) -> df_pb.GenerateResponse:
        raise NotImplementedError

    async def Edit(self, request: df_pb.EditRequest, context: Context) -> df_pb.EditResponse:
        raise NotImplementedError

    async def LoadModel(self, request: df_pb.LoadModelRequest, context: Context) -> df_pb.LoadModelResponse:
        raise NotImplementedError

    async def UnloadModel(self, request: df_pb.UnloadModelRequest, context: Context) -> df_pb.UnloadModelResponse:
        raise NotImplementedError

    async def _progress(self, model_id: str) -> AsyncIterator[progress_pb2.Progress]:
        if self.failure is not None:
            raise self.failure
        yield progress_pb2.Progress(stage=progress_pb2.PROGRESS_STAGE_QUEUED, queue_position=0, model_id=model_id)
        yield progress_pb2.Progress(stage=progress_pb2.PROGRESS_STAGE_LOADING, model_id=model_id)
        for step in range(1, FAKE_STEPS + 1):
            yield progress_pb2.Progress(
                stage=progress_pb2.PROGRESS_STAGE_DENOISING, step=step, total_steps=FAKE_STEPS, model_id=model_id
            )
        if self.gate is not None:
            await self.gate.wait()
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise


async def serve_fakes(copywriter: FakeCopywriter, diffusion: FakeDiffusion) -> RunningServer:
    """The two fake downstreams behind one real gRPC server on a free loopback port."""
    return await start_server(
        ServerSettings(port=0),
        [
            ServiceBinding(
                "adgen.copywriter.v1.CopywriterService",
                lambda server: cw_grpc.add_CopywriterServiceServicer_to_server(copywriter, server),
            ),
            ServiceBinding(
                "adgen.diffusion.v1.DiffusionService",
                lambda server: df_grpc.add_DiffusionServiceServicer_to_server(diffusion, server),
            ),
        ],
    )
