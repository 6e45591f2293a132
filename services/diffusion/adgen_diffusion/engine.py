"""The diffusion engine: loads one model at a time, runs jobs, and proves unloads freed memory. No gRPC here."""

from __future__ import annotations

import enum
import importlib.util
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from PIL import Image

# Imported for its side effect: tiny Qwen twins name this module in model_index.json.
import adgen_diffusion.qwen_processor  # noqa: F401
from adgen_diffusion import weights
from adgen_diffusion.errors import (
    DiffusionError,
    JobCancelledError,
    ModelLoadError,
    PlacementUnsupportedError,
    TaskUnsupportedError,
)
from adgen_diffusion.memory import (
    AnonPeakSampler,
    MemoryReport,
    device_memory,
    host_rss_bytes,
    module_bytes,
    release_device_memory,
)
from adgen_diffusion.registry import LoraSpec, ModelEntry, ModelRegistry, Task

_LOGGER = logging.getLogger(__name__)

# Device memory an unload may leave above the pre-load baseline (allocator rounding, cuBLAS workspaces).
UNLOAD_TOLERANCE_BYTES = 64 * 1024 * 1024
# FLUX.2 refuses reference images smaller than this on either side.
_FLUX_MIN_REFERENCE_SIDE = 64
# Reference sizes for tiny Qwen twins: the real 1024² / 384² would make a 2 MB model take seconds.
_TINY_QWEN_VAE_IMAGE_SIZE = 128 * 128
_TINY_QWEN_CONDITION_IMAGE_SIZE = 56 * 56
# Name of the one adapter a LoRA entry loads.
_LORA_ADAPTER = "adgen"
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class Stage(enum.Enum):
    """Phases of a job, in the order it passes through them."""

    QUEUED = 1
    UNLOADING = 2
    LOADING = 3
    DENOISING = 4
    DECODING = 5
    DONE = 6


class ModelState(enum.Enum):
    UNLOADED = 1
    LOADING = 2
    LOADED = 3
    UNLOADING = 4
    FAILED = 5


@dataclass(frozen=True)
class Progress:
    """One progress event of a job."""

    stage: Stage
    model_id: str = ""
    step: int = 0
    total_steps: int = 0
    queue_position: int = 0
    eta_s: float | None = None


ProgressSink = Callable[[Progress], None]


def _ignore_progress(_: Progress) -> None:
    return None


@dataclass(frozen=True)
class ImageJob:
    """A text-to-image or edit job, fully resolved (defaults applied, sizes validated)."""

    model_id: str
    task: Task
    prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    image_count: int = 1
    image: Image.Image | None = None


@dataclass(frozen=True)
class JobOutput:
    """Images in seed order, with what produced them and where the time went."""

    images: list[Image.Image]
    seeds: list[int]
    model_id: str
    revision: str
    steps: int
    guidance: float
    load_s: float
    denoise_s: float
    decode_s: float


@dataclass(frozen=True)
class UnloadReport:
    """What was unloaded and the memory afterwards; `memory.verified` is the proof."""

    model_id: str | None
    memory: MemoryReport
    duration_s: float


@dataclass(frozen=True)
class LoadReport:
    """What was loaded, what was unloaded to make room, and the memory afterwards."""

    model_id: str
    memory: MemoryReport
    duration_s: float
    unloaded: UnloadReport | None = None
    already_loaded: bool = False


@dataclass
class _Resident:
    entry: ModelEntry
    pipeline: Any
    model_bytes: int
    module_refs: list[weakref.ref[torch.nn.Module]] = field(default_factory=list)


def random_seed() -> int:
    return secrets.randbits(63)


def resolve_device(name: str) -> torch.device:
    """ "auto" means the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class DiffusionEngine:
    """Owns the one resident pipeline. Not thread-safe: call it from a single worker thread."""

    def __init__(self, registry: ModelRegistry, models_dir: Path, device: str = "auto") -> None:
        self.registry = registry
        self.models_dir = models_dir
        self.device = resolve_device(device)
        self._resident: _Resident | None = None
        self._transition: tuple[str, ModelState] | None = None
        self._failed: set[str] = set()
        self._baseline_allocated = device_memory(self.device).allocated
        self._qwen_sizes: tuple[int, int] | None = None
        self.clean = True
        # Load progress bars would interleave with the service log; progress goes out as events instead.
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        # Guards the small state ListModels reads from other threads.
        self._state_lock = threading.Lock()

    # ----- state -----

    @property
    def loaded_model_id(self) -> str | None:
        resident = self._resident
        return resident.entry.id if resident else None

    def state_of(self, model_id: str) -> ModelState:
        with self._state_lock:
            if self._transition is not None and self._transition[0] == model_id:
                return self._transition[1]
            if self._resident is not None and self._resident.entry.id == model_id:
                return ModelState.LOADED
            return ModelState.FAILED if model_id in self._failed else ModelState.UNLOADED

    def is_available(self, entry: ModelEntry) -> bool:
        return weights.is_available(entry, self.models_dir, tiny=self.registry.tiny)

    def memory_now(self) -> MemoryReport:
        resident = self._resident
        return self._report(model_bytes=resident.model_bytes if resident else 0)

    # ----- load / unload -----

    def load(self, model_id: str, on_progress: ProgressSink = _ignore_progress) -> LoadReport:
        """Makes `model_id` resident, unloading whatever else is. Refusals happen before any unload."""
        started = time.perf_counter()
        entry = self.registry.get(model_id)
        if self._resident is not None and self._resident.entry.id == model_id:
            return LoadReport(model_id, self.memory_now(), time.perf_counter() - started, already_loaded=True)
        if entry.needs_accelerator and self.device.type != "cuda":
            raise PlacementUnsupportedError(model_id, entry.placement, str(self.device))
        location = weights.locate(entry, self.models_dir, tiny=self.registry.tiny)
        unloaded = None
        if self._resident is not None:
            on_progress(Progress(Stage.UNLOADING, model_id=self._resident.entry.id))
            unloaded = self.unload()
        on_progress(Progress(Stage.LOADING, model_id=model_id))
        self._set_transition(model_id, ModelState.LOADING)
        try:
            with AnonPeakSampler() as sampler:
                resident = self._load_resident(entry, location)
        except DiffusionError:
            self._mark_failed(model_id)
            raise
        except Exception:
            _LOGGER.exception("loading %s failed", model_id)
            self._mark_failed(model_id)
            release_device_memory(self.device)
            # A fresh exception: the original traceback would keep half-built modules alive.
            raise ModelLoadError(model_id, "the weights could not be loaded; see the service log") from None
        with self._state_lock:
            self._resident = resident
            self._transition = None
            self._failed.discard(model_id)
        memory = self._report(model_bytes=resident.model_bytes, peak_anon=sampler.peak_above_start)
        duration = time.perf_counter() - started
        _LOGGER.info(
            "loaded %s (%s) in %.2fs: %.1f MB of weights, peak anon host +%.1f MB",
            model_id,
            "tiny twin" if self.registry.tiny else entry.repo,
            duration,
            resident.model_bytes / 1e6,
            sampler.peak_above_start / 1e6,
        )
        return LoadReport(model_id, memory, duration, unloaded=unloaded)

    def unload(self) -> UnloadReport:
        """Tears the resident pipeline down and verifies it is gone; returns the proof."""
        started = time.perf_counter()
        resident = self._resident
        if resident is None:
            return UnloadReport(None, self._report(), time.perf_counter() - started)
        model_id = resident.entry.id
        refs = resident.module_refs
        self._set_transition(model_id, ModelState.UNLOADING)
        remove_pipeline_hooks(resident.pipeline)
        with self._state_lock:
            self._resident = None
        del resident
        self._restore_qwen_sizes()
        release_device_memory(self.device)
        leaked = sum(1 for ref in refs if ref() is not None)
        memory = self._report(leaked_modules=leaked)
        with self._state_lock:
            self._transition = None
        self.clean = memory.verified
        duration = time.perf_counter() - started
        if memory.verified:
            _LOGGER.info("unloaded %s in %.2fs; memory verified free", model_id, duration)
        else:
            _LOGGER.error(
                "unloading %s left %d modules alive and %d device bytes above baseline",
                model_id,
                leaked,
                memory.device_allocated_bytes - memory.baseline_device_allocated_bytes,
            )
        return UnloadReport(model_id, memory, duration)

    def _load_resident(self, entry: ModelEntry, location: weights.WeightsLocation) -> _Resident:
        on_cpu = self.device.type != "cuda"
        # Tiny twins and CPU runs use float32: bf16 matmuls on CPU are slow and gain nothing here.
        dtype = torch.float32 if on_cpu else _DTYPES[entry.dtype]
        pipeline_class = getattr(diffusers, entry.pipeline_class)
        # Stream each tensor straight to the device: no full CPU copy, no CPU dtype conversion.
        device_kwargs: dict[str, Any] = {}
        if not on_cpu and entry.placement == "gpu":
            if self.device.index is not None:
                torch.cuda.set_device(self.device)
            device_kwargs["device_map"] = "cuda"
        components: dict[str, Any] = {}
        if location.single_file is not None:
            components["transformer"] = weights.load_single_file_transformer(
                entry, location, dtype=dtype, device=None if on_cpu or entry.placement != "gpu" else self.device
            )
        pipeline = pipeline_class.from_pretrained(location.pipeline_dir, dtype=dtype, **components, **device_kwargs)
        if entry.lora is not None:
            assert location.lora_file is not None
            _apply_lora(pipeline, entry.id, entry.lora, location.lora_file)
        self._place(pipeline, entry)
        if entry.vae_tiling and hasattr(pipeline, "vae"):
            pipeline.vae.enable_tiling()
        pipeline.set_progress_bar_config(disable=True)
        if self.registry.tiny and entry.pipeline_class == "QwenImageEditPlusPipeline":
            self._shrink_qwen_sizes()
        modules = [m for m in pipeline.components.values() if isinstance(m, torch.nn.Module)]
        return _Resident(
            entry=entry,
            pipeline=pipeline,
            model_bytes=sum(module_bytes(m) for m in modules),
            module_refs=[weakref.ref(m) for m in modules],
        )

    def _place(self, pipeline: Any, entry: ModelEntry) -> None:
        if self.device.type != "cuda":
            return
        if entry.placement == "model_offload":
            pipeline.enable_model_cpu_offload(device=self.device)
        elif entry.placement == "sequential_offload":
            pipeline.enable_sequential_cpu_offload(device=self.device)
        elif entry.placement == "group_offload":
            pipeline.enable_group_offload(
                onload_device=self.device, offload_type="leaf_level", use_stream=True, low_cpu_mem_usage=True
            )

    def _shrink_qwen_sizes(self) -> None:
        module = diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus
        if self._qwen_sizes is None:
            self._qwen_sizes = (module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE)
        module.VAE_IMAGE_SIZE = _TINY_QWEN_VAE_IMAGE_SIZE
        module.CONDITION_IMAGE_SIZE = _TINY_QWEN_CONDITION_IMAGE_SIZE

    def _restore_qwen_sizes(self) -> None:
        if self._qwen_sizes is None:
            return
        module = diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus
        module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE = self._qwen_sizes
        self._qwen_sizes = None

    def _set_transition(self, model_id: str, state: ModelState) -> None:
        with self._state_lock:
            self._transition = (model_id, state)

    def _mark_failed(self, model_id: str) -> None:
        with self._state_lock:
            self._transition = None
            self._failed.add(model_id)

    def _report(self, *, model_bytes: int = 0, peak_anon: int = 0, leaked_modules: int = 0) -> MemoryReport:
        device = device_memory(self.device)
        excess = device.allocated - self._baseline_allocated
        return MemoryReport(
            device_allocated_bytes=device.allocated,
            device_reserved_bytes=device.reserved,
            device_free_bytes=device.free,
            device_total_bytes=device.total,
            baseline_device_allocated_bytes=self._baseline_allocated,
            host_rss_bytes=host_rss_bytes(),
            peak_host_anon_bytes=peak_anon,
            model_bytes=model_bytes,
            leaked_modules=leaked_modules,
            verified=leaked_modules == 0 and (model_bytes > 0 or excess <= UNLOAD_TOLERANCE_BYTES),
        )

    # ----- jobs -----

    def run(self, job: ImageJob, on_progress: ProgressSink, cancel: threading.Event) -> JobOutput:
        """Ensures the job's model is resident, then runs it; stops at the next step once `cancel` is set."""
        if cancel.is_set():
            raise JobCancelledError()
        entry = self.registry.get(job.model_id)
        if not entry.supports(job.task):
            raise TaskUnsupportedError(job.model_id, job.task.value.replace("_", "-"))
        load_started = time.perf_counter()
        report = self.load(job.model_id, on_progress)
        load_s = 0.0 if report.already_loaded else time.perf_counter() - load_started
        images: list[Image.Image] = []
        seeds = [(job.seed + i) % 2**64 for i in range(job.image_count)]
        timing = _StepTiming()
        for index, seed in enumerate(seeds):
            if cancel.is_set():
                raise JobCancelledError()
            try:
                images.append(self._run_one(job, index, seed, on_progress, cancel, timing))
            except JobCancelledError:
                # Re-raised fresh: the original traceback holds the pipeline's frames (and the pipeline).
                raise JobCancelledError() from None
            except DiffusionError:
                raise
            except Exception:
                _LOGGER.exception("pipeline call for %s failed", job.model_id)
                raise RuntimeError("the pipeline call failed") from None
        on_progress(Progress(Stage.DONE, model_id=job.model_id))
        return JobOutput(
            images=images,
            seeds=seeds,
            model_id=job.model_id,
            revision="tiny" if self.registry.tiny else entry.revision,
            steps=job.steps,
            guidance=job.guidance,
            load_s=load_s,
            denoise_s=timing.denoise_s,
            decode_s=timing.decode_s,
        )

    def _run_one(
        self,
        job: ImageJob,
        index: int,
        seed: int,
        on_progress: ProgressSink,
        cancel: threading.Event,
        timing: _StepTiming,
    ) -> Image.Image:
        assert self._resident is not None
        pipeline = self._resident.pipeline
        total = job.steps * job.image_count
        started = time.perf_counter()
        denoised_at = [started]

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if cancel.is_set():
                pipe._interrupt = True
                raise JobCancelledError()
            on_progress(
                Progress(Stage.DENOISING, model_id=job.model_id, step=index * job.steps + step + 1, total_steps=total)
            )
            if step + 1 == job.steps:
                denoised_at[0] = time.perf_counter()
                on_progress(Progress(Stage.DECODING, model_id=job.model_id))
            return tensors

        kwargs = self._call_kwargs(job)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with torch.inference_mode():
            output = pipeline(
                **kwargs,
                num_inference_steps=job.steps,
                generator=generator,
                callback_on_step_end=on_step_end,
                output_type="pil",
            )
        finished = time.perf_counter()
        timing.denoise_s += denoised_at[0] - started
        timing.decode_s += finished - denoised_at[0]
        image: Image.Image = output.images[0]
        return image

    def _call_kwargs(self, job: ImageJob) -> dict[str, Any]:
        assert self._resident is not None
        pipeline_class = self._resident.entry.pipeline_class
        kwargs: dict[str, Any] = {"prompt": job.prompt, "height": job.height, "width": job.width}
        reference = job.image if job.task is Task.IMAGE_EDIT else None
        if pipeline_class == "QwenImageEditPlusPipeline":
            kwargs["image"] = [reference]
            # Qwen-Image-Edit uses true CFG against a blank negative prompt; 1.0 turns it off.
            kwargs["true_cfg_scale"] = job.guidance
            if job.guidance > 1.0:
                kwargs["negative_prompt"] = " "
        elif pipeline_class == "Flux2KleinPipeline":
            kwargs["guidance_scale"] = job.guidance
            if reference is not None:
                kwargs["image"] = [_at_least(reference, _FLUX_MIN_REFERENCE_SIDE)]
        else:
            kwargs["guidance_scale"] = job.guidance
        return kwargs


def remove_pipeline_hooks(pipeline: Any) -> int:
    """Removes offload hooks: accelerate's (model/sequential offload) and diffusers' own (group offload).

    `remove_all_hooks` only knows accelerate's; group offloading's hooks would otherwise keep wrapping forwards
    (and their module groups) until the garbage collector breaks the cycles. Returns how many were removed.
    """
    remove_accelerate_hooks = getattr(pipeline, "remove_all_hooks", None)
    if callable(remove_accelerate_hooks):
        remove_accelerate_hooks()
    removed = 0
    components = getattr(pipeline, "components", {})
    for component in components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for module in component.modules():
            registry = getattr(module, "_diffusers_hook", None)
            if registry is None:
                continue
            for name in list(registry.hooks):
                registry.remove_hook(name, recurse=False)
                removed += 1
    return removed


def _apply_lora(pipeline: Any, model_id: str, lora: LoraSpec, lora_file: Path) -> None:
    """Loads the LoRA into the transformer, fuses it and drops the adapter; then swaps in its scheduler."""
    if importlib.util.find_spec("peft") is None:
        raise ModelLoadError(model_id, "applying its LoRA needs the peft package, which is not installed")
    pipeline.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name, adapter_name=_LORA_ADAPTER)
    # diffusers only warns when no key matches the transformer; serving the bare base model would be wrong.
    if _LORA_ADAPTER not in pipeline.get_list_adapters().get("transformer", []):
        raise ModelLoadError(model_id, f"its LoRA {lora.weight_name} matched no layer of the transformer")
    if lora.fuse:
        pipeline.fuse_lora(components=["transformer"], lora_scale=lora.scale)
        # Fused weights stay; the PEFT wrapper modules (and their A/B copies) go.
        pipeline.unload_lora_weights()
    elif lora.scale != 1.0:
        pipeline.set_adapters([_LORA_ADAPTER], adapter_weights=[lora.scale])
    if lora.scheduler:
        pipeline.scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config, **dict(lora.scheduler))


@dataclass
class _StepTiming:
    denoise_s: float = 0.0
    decode_s: float = 0.0


def _at_least(image: Image.Image, side: int) -> Image.Image:
    """Scales an image up, keeping its aspect, until both sides reach `side`."""
    scale = max(side / image.width, side / image.height)
    if scale <= 1:
        return image
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
