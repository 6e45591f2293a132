"""The one implementation of AdService that both front ends (gRPC and HTTP/Connect) call.

It validates requests, shares work between calls with the same request id, and runs the
ad pipeline. Front ends only translate their transport's request id, deadline and errors.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.type.v1 import error_reason_pb2
from adgen_orchestrator.ad_pipeline import AdPipeline
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.downstream import CallBudget
from adgen_orchestrator.idempotency import JobRegistry, RequestIdReusedError
from adgen_orchestrator.message_size import check_response_size, predicted_response_bytes
from adgen_orchestrator.sizing import Size
from adgen_orchestrator.validation import parse_create_request, parse_edit_request
from adgen_runtime.errors import BadField, Internal, invalid_fields, reason_name
from adgen_runtime.logs import adopt_request_id

E = TypeVar("E", ad_pb.StreamCreateAdResponse, ad_pb.StreamEditAdResponse)


@dataclass(frozen=True)
class CallInfo:
    """What a front end knows about the call: its request id and the caller's time left.

    The request id is the one the front end answers and logs under: the request's own `request_id`
    field when it is set (see `adgen_runtime.logs.call_request_id`), else the caller's or a new one.
    """

    request_id: str
    time_remaining_s: float | None = None


class AdCore:
    """CreateAd and EditAd as event streams, plus their one-call forms.

    A request's `request_id` field, once validated, names the call: it is answered in the response
    and becomes the id of the call's log lines from then on, whatever the front end started with.
    """

    def __init__(self, pipeline: AdPipeline, settings: OrchestratorSettings) -> None:
        self._pipeline = pipeline
        self._settings = settings
        window, entries = settings.idempotency_window_s, settings.idempotency_max_entries
        # Each kind may keep up to the byte budget in finished results for replays.
        max_bytes = settings.idempotency_max_mib * 1024 * 1024
        self._creates: JobRegistry[ad_pb.StreamCreateAdResponse] = JobRegistry(
            window, entries, max_bytes=max_bytes, size_of=_byte_size
        )
        self._edits: JobRegistry[ad_pb.StreamEditAdResponse] = JobRegistry(
            window, entries, max_bytes=max_bytes, size_of=_byte_size
        )
        self._preferred_models = {
            ad_pb.QUALITY_PREFERENCE_FAST: settings.fast_model_id,
            ad_pb.QUALITY_PREFERENCE_QUALITY: settings.quality_model_id,
        }

    async def stream_create_ad(
        self, request: ad_pb.CreateAdRequest, call: CallInfo, field_prefix: str = ""
    ) -> AsyncGenerator[ad_pb.StreamCreateAdResponse]:
        """Yields the copy, progress, each image, then the result (only the result on a replay). The result
        does not repeat the bytes of images this stream already carried: those have `data_in_stream` set."""
        streamed: set[tuple[int, int]] = set()
        async with aclosing(self._create_events(request, call, field_prefix, unary=False)) as events:
            async for event in events:
                if event.HasField("image"):
                    streamed.add(_image_key(event.image))
                elif event.HasField("result"):
                    event = _without_streamed_bytes(event, streamed)
                yield event

    async def create_ad(self, request: ad_pb.CreateAdRequest, call: CallInfo) -> ad_pb.CreateAdResponse:
        """The finished ad with whole images; RESPONSE_TOO_LARGE before any work when it might not fit in a
        message (or after, in the rare case that the files beat the prediction's bounds)."""
        result = (await _final_event(self._create_events(request, call, "", unary=True), "ad")).result
        check_response_size(result.ByteSize(), self._settings.max_message_bytes, predicted=False)
        return result

    async def _create_events(
        self, request: ad_pb.CreateAdRequest, call: CallInfo, field_prefix: str, *, unary: bool
    ) -> AsyncGenerator[ad_pb.StreamCreateAdResponse]:
        """The job's events with whole images in the result: new, joined or replayed."""
        # Decoding a brand kit's logo and product photos is blocking Pillow work: off the event loop.
        spec = await asyncio.to_thread(
            parse_create_request,
            request,
            default_model_id=self._settings.default_model_id,
            request_id=call.request_id,
            field_prefix=field_prefix,
            preferred_models=self._preferred_models,
            default_edit_model_id=self._settings.default_edit_model_id,
            max_input_bytes=self._settings.max_input_bytes,
            max_input_pixels=self._settings.max_input_pixels,
        )
        adopt_request_id(spec.request_id)
        # A unary response holds every image; a stream's largest message holds one.
        sizes = spec.delivered_sizes() if unary else [max(spec.delivered_sizes(), key=_area)]
        check_response_size(predicted_response_bytes(sizes, spec.output_format), self._settings.max_message_bytes)
        budget = self._budget(spec.request_id, call, field_prefix)
        # Hashing up to three product photos of 20 MiB each: off the event loop.
        create_fingerprint = await asyncio.to_thread(fingerprint, request) if request.product_photos else None
        # Closed when this caller goes, so the job learns at once that it has one follower fewer.
        async with aclosing(
            self._shared(
                self._creates,
                request,
                create_fingerprint or fingerprint(request),
                field_prefix,
                lambda: self._pipeline.create_ad(spec, budget),
            )
        ) as job:
            async for event in job:
                yield event

    async def stream_edit_ad(
        self, request: ad_pb.EditAdRequest, call: CallInfo, field_prefix: str = ""
    ) -> AsyncGenerator[ad_pb.StreamEditAdResponse]:
        """Yields the edit job's progress, then the result (only the result on a replay)."""
        # Decoding the photo is blocking Pillow work: off the event loop.
        spec = await asyncio.to_thread(
            parse_edit_request,
            request,
            default_model_id=self._settings.default_edit_model_id,
            request_id=call.request_id,
            max_input_bytes=self._settings.max_input_bytes,
            max_input_pixels=self._settings.max_input_pixels,
            field_prefix=field_prefix,
        )
        adopt_request_id(spec.request_id)
        predicted = predicted_response_bytes([spec.photo.size], spec.output_format)
        check_response_size(predicted, self._settings.max_message_bytes)
        budget = self._budget(spec.request_id, call, field_prefix)
        # Hashing a photo of up to 20 MiB: off the event loop too.
        edit_fingerprint = await asyncio.to_thread(fingerprint, request)
        # Closed when this caller goes, so the job learns at once that it has one follower fewer.
        async with aclosing(
            self._shared(
                self._edits, request, edit_fingerprint, field_prefix, lambda: self._pipeline.edit_ad(spec, budget)
            )
        ) as job:
            async for event in job:
                yield event

    async def edit_ad(self, request: ad_pb.EditAdRequest, call: CallInfo) -> ad_pb.EditAdResponse:
        result = (await _final_event(self.stream_edit_ad(request, call), "edit")).result
        check_response_size(result.ByteSize(), self._settings.max_message_bytes, predicted=False)
        return result

    async def list_models(self, call: CallInfo) -> ad_pb.ListModelsResponse:
        """The diffusion targets' models as the public API shows them, sorted by id."""
        budget = self._budget(call.request_id, call, "")
        reply = await self._pipeline.list_models(budget)
        return ad_pb.ListModelsResponse(models=[public_model(model) for model in sorted(reply.models, key=_model_id)])

    def _shared(
        self,
        registry: JobRegistry[E],
        request: ad_pb.CreateAdRequest | ad_pb.EditAdRequest,
        request_fingerprint: bytes,
        field_prefix: str,
        start: Callable[[], AsyncIterator[E]],
    ) -> AsyncGenerator[E]:
        """The events of the job under the caller's request id: new, joined or replayed."""
        try:
            return registry.job_for(request.request_id, request_fingerprint, start).follow()
        except RequestIdReusedError:
            minutes = self._settings.idempotency_window_s / 60
            raise invalid_fields(
                [
                    BadField(
                        f"{field_prefix}request_id",
                        f"was already used for a different request in the last {minutes:g} minutes; "
                        "use a new id for a new request",
                        reason_name(error_reason_pb2.ERROR_REASON_REQUEST_ID_REUSED),
                    )
                ],
                error_reason_pb2.ERROR_REASON_REQUEST_ID_REUSED,
            ) from None

    def _budget(self, request_id: str, call: CallInfo, field_prefix: str) -> CallBudget:
        return CallBudget.from_time_remaining(
            request_id, call.time_remaining_s, self._settings.deadline_margin_s, field_prefix
        )


def public_model(model: df_pb.Model) -> ad_pb.Model:
    """The caller-facing part of a diffusion model: no weights source, memory figures or load state."""
    return ad_pb.Model(
        id=model.id,
        display_name=model.display_name,
        tasks=[_PUBLIC_TASKS[task] for task in model.tasks if task in _PUBLIC_TASKS],
        license=model.license,
        commercial_use=model.commercial_use,
        fits=model.plan.fits,
        plan_summary=model.plan.summary,
    )


_PUBLIC_TASKS = {
    df_pb.MODEL_TASK_TEXT_TO_IMAGE: ad_pb.MODEL_TASK_TEXT_TO_IMAGE,
    df_pb.MODEL_TASK_IMAGE_EDIT: ad_pb.MODEL_TASK_IMAGE_EDIT,
}


def _model_id(model: df_pb.Model) -> str:
    return model.id


def _image_key(image: ad_pb.AdImage) -> tuple[int, int]:
    return image.variant_index, image.placement


def _area(size: Size) -> int:
    return size.area


def _without_streamed_bytes(
    event: ad_pb.StreamCreateAdResponse, streamed: set[tuple[int, int]]
) -> ad_pb.StreamCreateAdResponse:
    """The result event with the file bytes of every image in `streamed` left out and `data_in_stream` set;
    a copy, because the job's own event is shared with other callers and replays."""
    slim = ad_pb.StreamCreateAdResponse()
    slim.CopyFrom(event)
    for image in slim.result.images:
        if _image_key(image) in streamed:
            image.image.ClearField("data")
            image.data_in_stream = True
    return slim


def _byte_size(event: Message) -> int:
    return event.ByteSize()


def fingerprint(request: Message) -> bytes:
    """What makes two requests the same request: every field but the request id."""
    digest = hashlib.sha256()
    _feed(digest, request, skip="request_id")
    return digest.digest()


def _feed(digest: hashlib._Hash, message: Message, skip: str = "") -> None:
    # Bytes go to the hash as they are, with no copy or serialisation of the message: hashlib
    # lets go of the GIL on them, so a 20 MiB photo hashed on a worker thread leaves the loop free.
    for field, value in message.ListFields():
        if field.name == skip:
            continue
        if field.type == FieldDescriptor.TYPE_BYTES and not field.is_repeated:
            digest.update(b"%d:b%d:" % (field.number, len(value)))
            digest.update(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated:
            digest.update(b"%d:m{" % field.number)
            _feed(digest, value)
            digest.update(b"}")
        elif field.type == FieldDescriptor.TYPE_MESSAGE:  # e.g. product photos: their bytes unserialised too
            for item in value:
                digest.update(b"%d:m[" % field.number)
                _feed(digest, item)
                digest.update(b"]")
        else:
            digest.update(b"%d:v%s;" % (field.number, repr(value).encode()))


async def _final_event(events: AsyncGenerator[E, None], pipeline: str) -> E:
    """The unary form of a stream: its last event, the one with the `result`; the stream (and its job) is
    closed on the way out."""
    async with aclosing(events) as stream:
        async for event in stream:
            if event.HasField("result"):
                return event
    raise Internal(error_reason_pb2.ERROR_REASON_INTERNAL, f"The {pipeline} pipeline ended without a result.")
