"""DiffusionService over gRPC: proto in, DiffusionCore (validation, GPU worker, proto mapping), proto out."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

from adgen.diffusion.v1 import diffusion_service_pb2 as pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as pb_grpc
from adgen_diffusion.diffusion_core import DiffusionCore
from adgen_diffusion.engine import Progress
from adgen_diffusion.proto_mapping import progress_proto
from adgen_runtime import Context

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DiffusionService"].full_name


class DiffusionServicer(pb_grpc.DiffusionServiceServicer):
    """Thin: DiffusionCore does the work; the shared ErrorInterceptor turns its errors into statuses."""

    def __init__(self, core: DiffusionCore) -> None:
        self.core = core

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        return await self.core.list_models()

    async def LoadModel(self, request: pb.LoadModelRequest, context: Context) -> pb.LoadModelResponse:
        return await self.core.load_model(request)

    async def UnloadModel(self, request: pb.UnloadModelRequest, context: Context) -> pb.UnloadModelResponse:
        return await self.core.unload_model(request)

    # ----- jobs -----

    async def Generate(self, request: pb.GenerateRequest, context: Context) -> pb.GenerateResponse:
        prepared = await self.core.prepare_generate_job(request, prefix="")
        response = pb.GenerateResponse()
        (await self.core.execute(prepared, _cancel_when_done(context), None)).write_to(response)
        return response

    async def StreamGenerate(
        self, request: pb.StreamGenerateRequest, context: Context
    ) -> AsyncIterator[pb.StreamGenerateResponse]:
        prepared = await self.core.prepare_generate_job(request.request, prefix="request.")
        async for event in self.core.stream(prepared, _cancel_when_done(context)):
            if isinstance(event, Progress):
                yield pb.StreamGenerateResponse(progress=progress_proto(event))
            else:
                final = pb.StreamGenerateResponse()
                event.write_to(final.result)
                yield final

    async def Edit(self, request: pb.EditRequest, context: Context) -> pb.EditResponse:
        prepared = await self.core.prepare_edit_job(request, prefix="")
        response = pb.EditResponse()
        (await self.core.execute(prepared, _cancel_when_done(context), None)).write_to(response)
        return response

    async def StreamEdit(self, request: pb.StreamEditRequest, context: Context) -> AsyncIterator[pb.StreamEditResponse]:
        prepared = await self.core.prepare_edit_job(request.request, prefix="request.")
        async for event in self.core.stream(prepared, _cancel_when_done(context)):
            if isinstance(event, Progress):
                yield pb.StreamEditResponse(progress=progress_proto(event))
            else:
                final = pb.StreamEditResponse()
                event.write_to(final.result)
                yield final


def _cancel_when_done(context: Context) -> threading.Event:
    """Set when the call ends early (client cancel, deadline), so its job stops at the next step."""
    cancel = threading.Event()

    def stop_job(_: Context) -> None:
        cancel.set()

    context.add_done_callback(stop_job)  # type: ignore[arg-type]  # the stub types the callback as a class
    return cancel
