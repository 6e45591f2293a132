"""Composes the copywriter and diffusion services into ads and photo edits, as event streams."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TypeVar

from google.protobuf import duration_pb2
from prometheus_client import CollectorRegistry

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.copywriter.v1 import copywriter_service_pb2 as cw_pb
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.type.v1 import error_reason_pb2, image_pb2
from adgen_orchestrator.downstream import CallBudget, CopywriterClient, DiffusionClient
from adgen_orchestrator.imaging import Delivered, DownstreamImageError, Overlay, deliver, rendered_picture
from adgen_orchestrator.metrics import StageMetrics
from adgen_orchestrator.overlay import FontUnavailableError
from adgen_orchestrator.placements import PlannedImage, diffusion_request, plan_images
from adgen_orchestrator.provenance import ContentLabel, ContentSigner, SourceType
from adgen_orchestrator.routing import DiffusionRouter
from adgen_orchestrator.sizing import Size, SizeRules, generation_size
from adgen_orchestrator.validation import CreateAdSpec, EditAdSpec
from adgen_runtime.errors import FailedPrecondition, Internal, NotFound

_LOGGER = logging.getLogger(__name__)
_R = error_reason_pb2

T = TypeVar("T")

# What the diffusion service sends back: pixels with no compression; the orchestrator does the one final encode.
RENDER_FORMAT = image_pb2.IMAGE_FORMAT_RAW_RGB

# Added to the caption when the caller asks for AI disclosure (AI Basic Act, Art. 31).
AI_DISCLOSURE_LINE = "이미지는 AI로 생성되었으며 실제와 다를 수 있습니다."


class ModelCatalog:
    """The diffusion service's models and their size rules, fetched once and kept; fetched again
    when a caller names a model the kept list lacks (the diffusion service may have restarted
    with a new registry)."""

    def __init__(self, diffusion: DiffusionClient) -> None:
        self._diffusion = diffusion
        self._models: dict[str, df_pb.Model] | None = None
        self._lock = asyncio.Lock()

    async def model_for(self, model_id: str, task: df_pb.ModelTask.ValueType, budget: CallBudget) -> df_pb.Model:
        """The model, if it exists and can do `task`; NOT_FOUND or FAILED_PRECONDITION otherwise."""
        models = await self._load(budget)
        if model_id not in models:
            models = await self._load(budget, refresh=True)
        model = models.get(model_id)
        if model is None:
            raise NotFound(
                _R.ERROR_REASON_MODEL_NOT_FOUND,
                f"There is no model {model_id!r}; known models: {', '.join(sorted(models))}.",
                resource=("adgen.diffusion.v1.Model", model_id),
            )
        if task not in model.tasks:
            raise FailedPrecondition(
                _R.ERROR_REASON_MODEL_TASK_UNSUPPORTED,
                f"Model {model_id!r} cannot {_TASK_WORDS[task]}.",
                metadata={"model_id": model_id},
            )
        return model

    async def _load(self, budget: CallBudget, *, refresh: bool = False) -> dict[str, df_pb.Model]:
        async with self._lock:
            if self._models is None or refresh:
                reply = await self._diffusion.list_models(budget)
                self._models = {model.id: model for model in reply.models}
            return self._models


def size_rules(model: df_pb.Model) -> SizeRules:
    """The sizes a model accepts; fields a registry leaves unset fall back to FLUX-like limits."""
    fallback = SizeRules()
    return SizeRules(
        multiple=model.size_multiple or fallback.multiple,
        min_side=model.min_side or fallback.min_side,
        max_side=model.max_side or fallback.max_side,
    )


_TASK_WORDS = {df_pb.MODEL_TASK_TEXT_TO_IMAGE: "generate images from text", df_pb.MODEL_TASK_IMAGE_EDIT: "edit photos"}


class AdPipeline:
    """Keyword → copy → one image per variant; photo + request → instruction → edited photo."""

    def __init__(
        self,
        copywriter: CopywriterClient,
        diffusion: DiffusionRouter,
        font_path: Path | None = None,
        metrics: StageMetrics | None = None,
        signer: ContentSigner | None = None,
    ) -> None:
        self._metrics = metrics or StageMetrics(CollectorRegistry())
        self._copywriter = copywriter
        # C2PA content credentials on every delivered image when the operator configured a certificate.
        self._signer = signer
        self._diffusion = diffusion
        self._font_path = font_path
        self._catalogs: dict[DiffusionClient, ModelCatalog] = {}

    async def list_models(self, budget: CallBudget) -> df_pb.ListModelsResponse:
        """Every model of every diffusion target the route table names, asked afresh."""
        return await self._diffusion.list_models(budget)

    def _routed(self, model_id: str, task: df_pb.ModelTask.ValueType) -> tuple[DiffusionClient, ModelCatalog]:
        """The diffusion client the route table picks for the model, and the catalog of that target's models:
        a model is looked up where its jobs will run."""
        client = self._diffusion.client_for(model_id, task)
        return client, self._catalogs.setdefault(client, ModelCatalog(client))

    async def create_ad(self, spec: CreateAdSpec, budget: CallBudget) -> AsyncIterator[ad_pb.StreamCreateAdResponse]:
        """Yields the copy, each variant's progress and image, then the finished ad with whole images."""
        started = time.monotonic()
        diffusion, catalog = self._routed(spec.model_id, df_pb.MODEL_TASK_TEXT_TO_IMAGE)
        model = await catalog.model_for(spec.model_id, df_pb.MODEL_TASK_TEXT_TO_IMAGE, budget)
        diffusion, model = await self._drawing_model(spec, diffusion, model, budget)
        copy_started = time.monotonic()
        with self._metrics.timed("CreateAd", "copy"):
            copy = await self._copywriter.generate_copy(_copy_request(spec), budget)
        copy_duration = _since(copy_started)
        ad_copy = _ad_copy(copy, disclose_ai=spec.ai_disclosure)
        yield ad_pb.StreamCreateAdResponse(copy=ad_copy)

        headline = copy.headline if spec.overlay_headline else ""
        images: list[ad_pb.AdImage] = []
        runs: list[df_pb.GenerationInfo] = []
        # One image per variant and placement; laying products out resizes photos: off the event loop.
        planned = await asyncio.to_thread(
            plan_images,
            _variant_prompts(copy, spec.variant_count),
            spec.placement_targets,
            [spec.variant_seed(index) for index in range(spec.variant_count)],
            spec.products,
        )
        # Every job is queued at once: the GPU goes from one straight to the next, and the orchestrator
        # delivers image N while image N+1 denoises.
        variants = [
            self._render_variant(
                diffusion,
                spec,
                model.id,
                image,
                generation_size(image.target.size, size_rules(model)),
                Overlay(
                    image.target.placement,
                    headline,
                    spec.ai_disclosure,
                    font_path=self._font_path,
                    brand=spec.brand,
                    products=image.scene,
                ),
                budget,
                runs,
            )
            for image in planned
        ]
        async for event in merged(variants):
            if event.HasField("image"):
                images.append(event.image)
            yield event
        # Variant by variant, each variant's placements in the order asked.
        order = {target.placement: position for position, target in enumerate(spec.placement_targets)}
        images.sort(key=lambda image: (image.variant_index, order.get(image.placement, 0)))
        # The diffusion service's own count: it may differ from the registry's default (e.g. Lightning ids).
        steps_used = runs[0].num_inference_steps if runs else 0
        yield ad_pb.StreamCreateAdResponse(
            result=ad_pb.CreateAdResponse(
                copy=ad_copy,
                images=images,
                model_id=model.id,
                num_inference_steps=steps_used or spec.num_inference_steps or model.default_steps,
                total_duration=_since(started),
                request_id=spec.request_id,
                copy_duration=copy_duration,
            )
        )

    async def _drawing_model(
        self, spec: CreateAdSpec, diffusion: DiffusionClient, model: df_pb.Model, budget: CallBudget
    ) -> tuple[DiffusionClient, df_pb.Model]:
        """The model that draws the ad: the CreateAd model, whose reference-image edit keeps cut-out products;
        the edit model when a product photo is opaque (it replaces the background) or the CreateAd model cannot
        edit."""
        all_cut_out = all(product.cut_out for product in spec.products)
        if not spec.products or (all_cut_out and df_pb.MODEL_TASK_IMAGE_EDIT in model.tasks):
            return diffusion, model  # Where the CreateAd model runs, whichever task its job is.
        diffusion, catalog = self._routed(spec.edit_model_id, df_pb.MODEL_TASK_IMAGE_EDIT)
        return diffusion, await catalog.model_for(spec.edit_model_id, df_pb.MODEL_TASK_IMAGE_EDIT, budget)

    async def _render_variant(
        self,
        diffusion: DiffusionClient,
        spec: CreateAdSpec,
        model_id: str,
        planned: PlannedImage,
        render_size: Size,
        overlay: Overlay,
        budget: CallBudget,
        runs: list[df_pb.GenerationInfo],
    ) -> AsyncIterator[ad_pb.StreamCreateAdResponse]:
        """Yields one image's progress, then the image at its placement's size; appends the run's info to `runs`.
        With product photos the job is an edit of the placement's canvas (encoded off the event loop)."""
        request = await asyncio.to_thread(
            diffusion_request,
            planned,
            model_id=model_id,
            render_size=render_size,
            num_inference_steps=spec.num_inference_steps,
            request_id=spec.request_id,
            output_format=RENDER_FORMAT,
        )
        index = planned.variant_index
        started = time.monotonic()
        result: df_pb.GenerateResponse | df_pb.EditResponse | None = None
        events = _job_events(diffusion, request, budget)
        with self._metrics.timed("CreateAd", "generate" if planned.scene is None else "edit"):
            async for event in events:
                if event.HasField("progress"):
                    progress = ad_pb.VariantProgress(variant_index=index, progress=event.progress)
                    yield ad_pb.StreamCreateAdResponse(progress=progress)
                elif event.HasField("result"):
                    result = event.result
                    runs.append(result.info)
        generated = _only_image(result, "diffusion", budget)
        assert result is not None  # _only_image raised otherwise.
        label = _label(model_id, generated.seed, planned, spec)
        with self._metrics.timed("CreateAd", "deliver"):
            delivered = await self._deliver(
                generated.image, planned.target.size, spec.output_format, label, overlay, budget
            )
        image = ad_pb.AdImage(
            variant_index=index,
            image=delivered.image,
            seed=generated.seed,
            image_prompt=planned.prompt,
            timings=image_timings(result.info.timings, time.monotonic() - started, delivered.encode_s),
            placement=planned.target.placement,
        )
        yield ad_pb.StreamCreateAdResponse(image=image)

    async def edit_ad(self, spec: EditAdSpec, budget: CallBudget) -> AsyncIterator[ad_pb.StreamEditAdResponse]:
        """Yields the edit job's progress, then the edited photo at the original size."""
        started = time.monotonic()
        diffusion, catalog = self._routed(spec.model_id, df_pb.MODEL_TASK_IMAGE_EDIT)
        await catalog.model_for(spec.model_id, df_pb.MODEL_TASK_IMAGE_EDIT, budget)
        instruction_started = time.monotonic()
        with self._metrics.timed("EditAd", "copy"):
            written = await self._copywriter.write_edit_instruction(
                cw_pb.WriteEditInstructionRequest(
                    request=spec.instruction, target_model_id=spec.model_id, request_id=spec.request_id
                ),
                budget,
            )
        instruction_duration = _since(instruction_started)
        request = df_pb.EditRequest(
            model_id=spec.model_id,
            image=image_pb2.Image(data=spec.photo.data),
            instruction=written.instruction,
            num_inference_steps=spec.num_inference_steps,
            seed=spec.seed,
            image_count=1,
            output_format=RENDER_FORMAT,
            request_id=spec.request_id,
        )
        edit_started = time.monotonic()
        result: df_pb.EditResponse | None = None
        with self._metrics.timed("EditAd", "edit"):
            async for event in diffusion.stream_edit(request, budget):
                if event.HasField("progress"):
                    yield ad_pb.StreamEditAdResponse(progress=event.progress)
                elif event.HasField("result"):
                    result = event.result
        edited = _only_image(result, "diffusion", budget)
        assert result is not None  # _only_image raised otherwise.
        label = ContentLabel(SourceType.EDITED, spec.model_id, edited.seed, written.instruction, (spec.photo.data,))
        overlay = Overlay(ai_badge=spec.ai_disclosure, font_path=self._font_path)
        with self._metrics.timed("EditAd", "deliver"):
            delivered = await self._deliver(edited.image, spec.photo.size, spec.output_format, label, overlay, budget)
        yield ad_pb.StreamEditAdResponse(
            result=ad_pb.EditAdResponse(
                image=delivered.image,
                edit_instruction=written.instruction,
                seed=edited.seed,
                model_id=spec.model_id,
                total_duration=_since(started),
                request_id=spec.request_id,
                timings=image_timings(result.info.timings, time.monotonic() - edit_started, delivered.encode_s),
                instruction_duration=instruction_duration,
            )
        )

    async def _deliver(
        self,
        rendered: image_pb2.Image,
        size: Size,
        image_format: image_pb2.ImageFormat.ValueType,
        label: ContentLabel,
        overlay: Overlay,
        budget: CallBudget,
    ) -> Delivered:
        """The one way rendered pixels become a delivered file: sized, overlaid, labelled and encoded, off the event
        loop (Pillow work). A missing overlay font is FAILED_PRECONDITION FONT_UNAVAILABLE: the server's setup, not
        the request, must change, and the same request without overlays works. An image the diffusion service
        sent that does not hold what it declares is INTERNAL."""
        try:
            return await asyncio.to_thread(_delivered, rendered, size, image_format, label, overlay, self._signer)
        except FontUnavailableError as error:
            _LOGGER.error("%s", error)  # Says how to install the font; the caller is told only what to do now.
            raise FailedPrecondition(
                _R.ERROR_REASON_FONT_UNAVAILABLE,
                "Text overlays are unavailable: this server has no Korean font installed. Retry without "
                "overlay_headline and ai_disclosure, or ask the server's operator to install the font.",
                metadata={"options": "overlay_headline,ai_disclosure"},
            ) from None
        except DownstreamImageError as error:
            _LOGGER.error("diffusion sent an inconsistent image: %s", error)
            raise Internal(
                _R.ERROR_REASON_INTERNAL,
                f"The diffusion service returned a broken image; quote request id {budget.request_id} when "
                "reporting it.",
                metadata={"service": "diffusion", "request_id": budget.request_id},
            ) from None


def _delivered(
    rendered: image_pb2.Image,
    size: Size,
    image_format: image_pb2.ImageFormat.ValueType,
    label: ContentLabel,
    overlay: Overlay,
    signer: ContentSigner | None = None,
) -> Delivered:
    return deliver(rendered_picture(rendered, fit_to=size), size, image_format, label, overlay, signer)


def image_timings(job: df_pb.JobTimings, latency_s: float, encode_s: float) -> ad_pb.ImageTimings:
    """Where one image's `latency_s` (from asking the diffusion service to the delivered file) went: the job's
    queue, load, denoise and decode as the diffusion service measured them, the final `encode_s`, and the rest as
    `deliver` (the hops between the services, sizing, overlay), so the six add up to the latency."""
    parts_s = sum(part.ToNanoseconds() for part in (job.queue, job.load, job.denoise, job.decode)) / 1e9
    deliver_s = max(latency_s - parts_s - encode_s, 0.0)
    return ad_pb.ImageTimings(
        queue=job.queue,
        load=job.load,
        denoise=job.denoise,
        decode=job.decode,
        encode=_seconds(encode_s),
        deliver=_seconds(deliver_s),
    )


async def merged(streams: Sequence[AsyncIterator[T]]) -> AsyncIterator[T]:
    """The events of every stream as they come, each stream in its own task; the first failure cancels the rest
    and is raised, and so does closing this generator early."""
    queue: asyncio.Queue[tuple[T | None, Exception | None]] = asyncio.Queue()

    async def pump(stream: AsyncIterator[T]) -> None:
        try:
            async for event in stream:
                await queue.put((event, None))
        except Exception as error:  # Raised where the events are read; cancellation only ends the task.
            await queue.put((None, error))
            return
        await queue.put((None, None))

    tasks = [asyncio.create_task(pump(stream)) for stream in streams]
    try:
        running = len(tasks)
        while running:
            event, error = await queue.get()
            if error is not None:
                raise error
            if event is None:
                running -= 1
            else:
                yield event
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _job_events(
    diffusion: DiffusionClient, request: df_pb.GenerateRequest | df_pb.EditRequest, budget: CallBudget
) -> AsyncIterator[df_pb.StreamGenerateResponse | df_pb.StreamEditResponse]:
    """The stream of a text-to-image or an edit job; both have progress events, then a result."""
    if isinstance(request, df_pb.EditRequest):
        return diffusion.stream_edit(request, budget)
    return diffusion.stream_generate(request, budget)


def _label(model_id: str, seed: int, planned: PlannedImage, spec: CreateAdSpec) -> ContentLabel:
    """A generated image's label; with product photos a composite, made from those photos."""
    if planned.scene is None:
        return ContentLabel(SourceType.GENERATED, model_id, seed, planned.prompt)
    photos = tuple(product.data for product in spec.products)
    return ContentLabel(SourceType.EDITED, model_id, seed, planned.prompt, photos)


def _copy_request(spec: CreateAdSpec) -> cw_pb.GenerateCopyRequest:
    return cw_pb.GenerateCopyRequest(
        keyword=spec.keyword,
        tone=spec.tone,
        placement=spec.placement,
        target_model_id=spec.model_id,
        facts=spec.facts,
        caption_length=spec.caption_length,
        emoji_level=spec.emoji_level,
        variant_count=spec.variant_count,
        request_id=spec.request_id,
        brand_name=spec.brand.name if spec.brand is not None else "",
        # The image prompts then describe the scene around the merchant's product, never the product.
        product_photo=bool(spec.products),
    )


def _variant_prompts(copy: cw_pb.GenerateCopyResponse, count: int) -> list[str]:
    """One prompt per variant; if the copywriter wrote fewer, they are reused in turn."""
    prompts = [prompt for prompt in copy.image_prompts if prompt.strip()]
    if not prompts:
        _LOGGER.error("copywriter returned no image prompt")
        raise Internal(_R.ERROR_REASON_INTERNAL, "The copywriter service returned no image prompt.")
    return [prompts[index % len(prompts)] for index in range(count)]


def _ad_copy(copy: cw_pb.GenerateCopyResponse, *, disclose_ai: bool = False) -> ad_pb.AdCopy:
    written_by = (
        f"{cw_pb.Backend.Name(copy.provenance.backend).removeprefix('BACKEND_').lower()}/{copy.provenance.model}"
    )
    return ad_pb.AdCopy(
        caption=f"{copy.caption}\n\n{AI_DISCLOSURE_LINE}" if disclose_ai else copy.caption,
        hook=copy.hook,
        hashtags=copy.hashtags,
        headline=copy.headline,
        alt_text=copy.alt_text,
        facts_used=copy.facts_used,
        written_by=written_by,
    )


def _only_image(
    result: df_pb.GenerateResponse | df_pb.EditResponse | None, service: str, budget: CallBudget
) -> df_pb.GeneratedImage:
    """The single image a finished job holds; a stream that ended without one is a server fault."""
    if result is None or not result.images:
        _LOGGER.error("%s stream ended without an image", service)
        raise Internal(
            _R.ERROR_REASON_INTERNAL,
            f"The {service} service returned no image; quote request id {budget.request_id} when reporting it.",
            metadata={"service": service, "request_id": budget.request_id},
        )
    return result.images[0]


def _since(started: float) -> duration_pb2.Duration:
    return _seconds(time.monotonic() - started)


def _seconds(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration
