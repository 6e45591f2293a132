"""The gRPC front end of AdService: the call's request id and deadline in, AdCore's events out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen_orchestrator.ad_core import AdCore, CallInfo
from adgen_runtime import Context
from adgen_runtime.logs import current_request_id

SERVICE_NAME = ad_pb.DESCRIPTOR.services_by_name["AdService"].full_name


class AdServicer(ad_grpc.AdServiceServicer):
    """Thin: AdCore does the work; the shared ErrorInterceptor turns its errors into statuses."""

    def __init__(self, core: AdCore) -> None:
        self._core = core

    async def CreateAd(self, request: ad_pb.CreateAdRequest, context: Context) -> ad_pb.CreateAdResponse:
        return await self._core.create_ad(request, _call(context))

    async def StreamCreateAd(
        self, request: ad_pb.StreamCreateAdRequest, context: Context
    ) -> AsyncIterator[ad_pb.StreamCreateAdResponse]:
        async for event in self._core.stream_create_ad(request.request, _call(context), field_prefix="request."):
            yield event

    async def EditAd(self, request: ad_pb.EditAdRequest, context: Context) -> ad_pb.EditAdResponse:
        return await self._core.edit_ad(request, _call(context))

    async def StreamEditAd(
        self, request: ad_pb.StreamEditAdRequest, context: Context
    ) -> AsyncIterator[ad_pb.StreamEditAdResponse]:
        async for event in self._core.stream_edit_ad(request.request, _call(context), field_prefix="request."):
            yield event

    async def ListModels(self, request: ad_pb.ListModelsRequest, context: Context) -> ad_pb.ListModelsResponse:
        return await self._core.list_models(_call(context))


def _call(context: Context) -> CallInfo:
    # The RequestContextInterceptor has set the call's request id (the caller's or a new one).
    return CallInfo(current_request_id(), context.time_remaining())
