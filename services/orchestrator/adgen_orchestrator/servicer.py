"""The public AdService: validates requests, runs the ad pipeline, streams its events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import error_reason_pb2
from adgen_orchestrator.ad_pipeline import AdPipeline
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.downstream import CallBudget
from adgen_orchestrator.validation import CreateAdSpec, EditAdSpec, parse_create_request, parse_edit_request
from adgen_runtime import Context
from adgen_runtime.errors import Internal
from adgen_runtime.logs import current_request_id

SERVICE_NAME = ad_pb.DESCRIPTOR.services_by_name["AdService"].full_name


class AdServicer(ad_grpc.AdServiceServicer):
    """Thin: proto in, validated spec to the pipeline, pipeline events out."""

    def __init__(self, pipeline: AdPipeline, settings: OrchestratorSettings) -> None:
        self._pipeline = pipeline
        self._settings = settings

    async def CreateAd(self, request: ad_pb.CreateAdRequest, context: Context) -> ad_pb.CreateAdResponse:
        spec = self._create_spec(request, field_prefix="")
        result: ad_pb.CreateAdResponse | None = None
        async for event in self._pipeline.create_ad(spec, self._budget(spec.request_id, context)):
            if event.HasField("result"):
                result = event.result
        if result is None:
            raise Internal(error_reason_pb2.ERROR_REASON_INTERNAL, "The ad pipeline ended without a result.")
        return result

    async def StreamCreateAd(
        self, request: ad_pb.StreamCreateAdRequest, context: Context
    ) -> AsyncIterator[ad_pb.StreamCreateAdResponse]:
        spec = self._create_spec(request.request, field_prefix="request.")
        async for event in self._pipeline.create_ad(spec, self._budget(spec.request_id, context)):
            yield event

    async def EditAd(self, request: ad_pb.EditAdRequest, context: Context) -> ad_pb.EditAdResponse:
        spec = await self._edit_spec(request, field_prefix="")
        result: ad_pb.EditAdResponse | None = None
        async for event in self._pipeline.edit_ad(spec, self._budget(spec.request_id, context)):
            if event.HasField("result"):
                result = event.result
        if result is None:
            raise Internal(error_reason_pb2.ERROR_REASON_INTERNAL, "The edit pipeline ended without a result.")
        return result

    async def StreamEditAd(
        self, request: ad_pb.StreamEditAdRequest, context: Context
    ) -> AsyncIterator[ad_pb.StreamEditAdResponse]:
        spec = await self._edit_spec(request.request, field_prefix="request.")
        async for event in self._pipeline.edit_ad(spec, self._budget(spec.request_id, context)):
            yield event

    def _create_spec(self, request: ad_pb.CreateAdRequest, field_prefix: str) -> CreateAdSpec:
        return parse_create_request(
            request,
            default_model_id=self._settings.default_model_id,
            request_id=current_request_id(),
            field_prefix=field_prefix,
        )

    async def _edit_spec(self, request: ad_pb.EditAdRequest, field_prefix: str) -> EditAdSpec:
        # Decoding the photo is blocking Pillow work: off the event loop.
        return await asyncio.to_thread(
            parse_edit_request,
            request,
            default_model_id=self._settings.default_edit_model_id,
            request_id=current_request_id(),
            max_input_bytes=self._settings.max_input_bytes,
            max_input_pixels=self._settings.max_input_pixels,
            field_prefix=field_prefix,
        )

    def _budget(self, request_id: str, context: Context) -> CallBudget:
        return CallBudget.from_time_remaining(request_id, context.time_remaining(), self._settings.deadline_margin_s)
