"""Composes the copywriter and diffusion services into ads and photo edits, as event streams."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from google.protobuf import duration_pb2
from prometheus_client import CollectorRegistry

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.copywriter.v1 import copywriter_service_pb2 as cw_pb
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.type.v1 import error_reason_pb2, image_pb2
from adgen_orchestrator.downstream import CallBudget, CopywriterClient, DiffusionClient
from adgen_orchestrator.imaging import Overlay, deliver
from adgen_orchestrator.metrics import StageMetrics
from adgen_orchestrator.overlay import FontUnavailableError
from adgen_orchestrator.provenance import ContentLabel, SourceType
from adgen_orchestrator.routing import DiffusionRouter
from adgen_orchestrator.sizing import Size, SizeRules, generation_size
from adgen_orchestrator.validation import CreateAdSpec, EditAdSpec
from adgen_runtime.errors import FailedPrecondition, Internal, NotFound

_LOGGER = logging.getLogger(__name__)
_R = error_reason_pb2

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
    ) -> None:
        self._metrics = metrics or StageMetrics(CollectorRegistry())
        self._copywriter = copywriter
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
        """Yields the copy, each variant's progress and image, then the finished ad."""
        started = time.monotonic()
        diffusion, catalog = self._routed(spec.model_id, df_pb.MODEL_TASK_TEXT_TO_IMAGE)
        model = await catalog.model_for(spec.model_id, df_pb.MODEL_TASK_TEXT_TO_IMAGE, budget)
        with self._metrics.timed("CreateAd", "copy"):
            copy = await self._copywriter.generate_copy(_copy_request(spec), budget)
        ad_copy = _ad_copy(copy, disclose_ai=spec.ai_disclosure)
        yield ad_pb.StreamCreateAdResponse(copy=ad_copy)

        render_size = generation_size(spec.size, size_rules(model))
        headline = copy.headline if spec.overlay_headline else ""
        overlay = Overlay(spec.placement, headline, spec.ai_disclosure, font_path=self._font_path)
        images: list[ad_pb.AdImage] = []
        runs: list[df_pb.GenerationInfo] = []
        for index, prompt in enumerate(_variant_prompts(copy, spec.variant_count)):
            async for event in self._render_variant(diffusion, spec, index, prompt, render_size, overlay, budget, runs):
                if event.HasField("image"):
                    images.append(event.image)
                yield event
        # The diffusion service's own count: it may differ from the registry's default (e.g. Lightning ids).
        steps_used = runs[0].num_inference_steps if runs else 0
        yield ad_pb.StreamCreateAdResponse(
            result=ad_pb.CreateAdResponse(
                copy=ad_copy,
                images=images,
                model_id=spec.model_id,
                num_inference_steps=steps_used or spec.num_inference_steps or model.default_steps,
                total_duration=_since(started),
                request_id=spec.request_id,
            )
        )

    async def _render_variant(
        self,
        diffusion: DiffusionClient,
        spec: CreateAdSpec,
        index: int,
        prompt: str,
        render_size: Size,
        overlay: Overlay,
        budget: CallBudget,
        runs: list[df_pb.GenerationInfo],
    ) -> AsyncIterator[ad_pb.StreamCreateAdResponse]:
        """Yields one variant's progress, then its image at the delivered size; appends the run's info to `runs`."""
        request = df_pb.GenerateRequest(
            model_id=spec.model_id,
            prompt=prompt,
            width=render_size.width,
            height=render_size.height,
            num_inference_steps=spec.num_inference_steps,
            seed=spec.variant_seed(index),
            image_count=1,
            output_format=image_pb2.IMAGE_FORMAT_PNG,  # Lossless: the delivered file is encoded once, by us.
            request_id=spec.request_id,
        )
        result: df_pb.GenerateResponse | None = None
        with self._metrics.timed("CreateAd", "generate"):
            async for event in diffusion.stream_generate(request, budget):
                if event.HasField("progress"):
                    progress = ad_pb.VariantProgress(variant_index=index, progress=event.progress)
                    yield ad_pb.StreamCreateAdResponse(progress=progress)
                elif event.HasField("result"):
                    result = event.result
                    runs.append(result.info)
        generated = _only_image(result, "diffusion", budget)
        label = ContentLabel(SourceType.GENERATED, spec.model_id, generated.seed, prompt)
        with self._metrics.timed("CreateAd", "deliver"):
            image = await _deliver(generated.image.data, spec.size, spec.output_format, label, overlay)
        yield ad_pb.StreamCreateAdResponse(
            image=ad_pb.AdImage(variant_index=index, image=image, seed=generated.seed, image_prompt=prompt)
        )

    async def edit_ad(self, spec: EditAdSpec, budget: CallBudget) -> AsyncIterator[ad_pb.StreamEditAdResponse]:
        """Yields the edit job's progress, then the edited photo at the original size."""
        started = time.monotonic()
        diffusion, catalog = self._routed(spec.model_id, df_pb.MODEL_TASK_IMAGE_EDIT)
        await catalog.model_for(spec.model_id, df_pb.MODEL_TASK_IMAGE_EDIT, budget)
        with self._metrics.timed("EditAd", "copy"):
            written = await self._copywriter.write_edit_instruction(
                cw_pb.WriteEditInstructionRequest(
                    request=spec.instruction, target_model_id=spec.model_id, request_id=spec.request_id
                ),
                budget,
            )
        request = df_pb.EditRequest(
            model_id=spec.model_id,
            image=image_pb2.Image(data=spec.photo.data),
            instruction=written.instruction,
            num_inference_steps=spec.num_inference_steps,
            seed=spec.seed,
            image_count=1,
            output_format=image_pb2.IMAGE_FORMAT_PNG,
            request_id=spec.request_id,
        )
        result: df_pb.EditResponse | None = None
        with self._metrics.timed("EditAd", "edit"):
            async for event in diffusion.stream_edit(request, budget):
                if event.HasField("progress"):
                    yield ad_pb.StreamEditAdResponse(progress=event.progress)
                elif event.HasField("result"):
                    result = event.result
        edited = _only_image(result, "diffusion", budget)
        label = ContentLabel(SourceType.EDITED, spec.model_id, edited.seed, written.instruction)
        overlay = Overlay(ai_badge=spec.ai_disclosure, font_path=self._font_path)
        with self._metrics.timed("EditAd", "deliver"):
            image = await _deliver(edited.image.data, spec.photo.size, spec.output_format, label, overlay)
        yield ad_pb.StreamEditAdResponse(
            result=ad_pb.EditAdResponse(
                image=image,
                edit_instruction=written.instruction,
                seed=edited.seed,
                model_id=spec.model_id,
                total_duration=_since(started),
                request_id=spec.request_id,
            )
        )


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
    )


def _variant_prompts(copy: cw_pb.GenerateCopyResponse, count: int) -> list[str]:
    """One prompt per variant; if the copywriter wrote fewer, they are reused in turn."""
    prompts = [prompt for prompt in copy.image_prompts if prompt.strip()]
    if not prompts:
        _LOGGER.error("copywriter returned no image prompt")
        raise Internal(_R.ERROR_REASON_INTERNAL, "The copywriter service returned no image prompt.")
    return [prompts[index % len(prompts)] for index in range(count)]


async def _deliver(
    data: bytes,
    size: Size,
    image_format: image_pb2.ImageFormat.ValueType,
    label: ContentLabel,
    overlay: Overlay,
) -> image_pb2.Image:
    """`deliver` off the event loop (Pillow work); a missing overlay font is FAILED_PRECONDITION FONT_UNAVAILABLE:
    the server's setup, not the request, must change, and the same request without overlays works."""
    try:
        return await asyncio.to_thread(deliver, data, size, image_format, label, overlay)
    except FontUnavailableError as error:
        _LOGGER.error("%s", error)  # Says how to install the font; the caller is told only what to do now.
        raise FailedPrecondition(
            _R.ERROR_REASON_FONT_UNAVAILABLE,
            "Text overlays are unavailable: this server has no Korean font installed. Retry without "
            "overlay_headline and ai_disclosure, or ask the server's operator to install the font.",
            metadata={"options": "overlay_headline,ai_disclosure"},
        ) from None


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
    elapsed = duration_pb2.Duration()
    elapsed.FromNanoseconds(int((time.monotonic() - started) * 1e9))
    return elapsed
