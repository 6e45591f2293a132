"""The diffusion engine: loads one model at a time, runs jobs, and proves unloads freed memory. No gRPC here."""

from __future__ import annotations

import enum
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
from prometheus_client import CollectorRegistry

from adgen_diffusion import weights
from adgen_diffusion.errors import (
    DiffusionError,
    JobCancelledError,
    ModelDoesNotFitError,
    ModelLoadError,
    ModelNotCachedError,
    TaskUnsupportedError,
)
from adgen_diffusion.families import PromptJob, family_of
from adgen_diffusion.kept_configs import KeptRepo, local_repo
from adgen_diffusion.loader import LoadedPipeline, PipelineLoader, remove_pipeline_hooks
from adgen_diffusion.memory import (
    AnonPeakSampler,
    MemoryReport,
    detect_box,
    device_memory,
    host_rss_bytes,
    module_bytes,
    release_device_memory,
)
from adgen_diffusion.metrics import DiffusionMetrics
from adgen_diffusion.planner import Box, MemoryPlanner, Plan, PlanDecision
from adgen_diffusion.registry import ModelEntry, ModelRegistry, Task
from adgen_diffusion.tiny import is_built, tiny_dir

_LOGGER = logging.getLogger(__name__)

# Device memory an unload may leave above the pre-load baseline (allocator rounding, cuBLAS workspaces).
UNLOAD_TOLERANCE_BYTES = 64 * 1024 * 1024
# Images one pipeline call may carry unless the caller says otherwise (ADGEN_DIFFUSION_MAX_BATCH_IMAGES).
DEFAULT_MAX_BATCH_IMAGES = 4


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

    @property
    def seeds(self) -> list[int]:
        """Image i's seed is seed + i, so any one image can be reproduced alone."""
        return [(self.seed + i) % 2**64 for i in range(self.image_count)]

    @property
    def batch_key(self) -> tuple[Any, ...] | None:
        """Jobs with equal keys can share one pipeline call; None for edits (each has its own photo)."""
        if self.task is not Task.TEXT_TO_IMAGE:
            return None
        return (self.model_id, self.task, self.width, self.height, self.steps, self.guidance)


@dataclass(frozen=True)
class BatchPart:
    """One job of a batched run, with its own progress sink and cancel event."""

    job: ImageJob
    on_progress: ProgressSink
    cancel: threading.Event


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
    loaded: LoadedPipeline
    model_bytes: int
    module_refs: list[weakref.ref[torch.nn.Module]] = field(default_factory=list)

    @property
    def pipeline(self) -> Any:
        return self.loaded.pipeline

    @property
    def plan(self) -> Plan:
        return self.loaded.plan


def random_seed() -> int:
    return secrets.randbits(63)


def default_planner(registry: ModelRegistry, models_dir: Path, box: Box) -> MemoryPlanner:
    """A planner for `box`; tiny twins are sized from their own folders, real models from the kept configs."""
    if not registry.tiny:
        return MemoryPlanner(box)
    return MemoryPlanner(box, configs_of=lambda entry: _twin_configs(models_dir, entry))


def _twin_configs(models_dir: Path, entry: ModelEntry) -> KeptRepo:
    directory = tiny_dir(models_dir, entry.tiny)
    if not is_built(directory):
        raise ModelNotCachedError(entry.id, "its tiny twin is not built; run `adgen-diffusion build-tiny`.")
    return local_repo(directory)


def resolve_device(name: str) -> torch.device:
    """ "auto" means the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class DiffusionEngine:
    """Owns the one resident pipeline. Not thread-safe: call it from a single worker thread.

    `plan` and `require_fit` may run on any thread: the planner only reads the registry and caches sizes.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        models_dir: Path,
        device: str = "auto",
        *,
        planner: MemoryPlanner | None = None,
        scratch_dir: Path | None = None,
        metrics: DiffusionMetrics | None = None,
        max_batch_images: int = DEFAULT_MAX_BATCH_IMAGES,
    ) -> None:
        self.registry = registry
        self.max_batch_images = max(1, max_batch_images)
        self.metrics = metrics or DiffusionMetrics(CollectorRegistry(), (entry.id for entry in registry))
        self.models_dir = models_dir
        self.device = resolve_device(device)
        self.planner = planner or default_planner(registry, models_dir, detect_box(self.device))
        self.loader = PipelineLoader(self.device, scratch_dir)
        self._resident: _Resident | None = None
        self._transition: tuple[str, ModelState] | None = None
        self._failed: set[str] = set()
        self._baseline_allocated = device_memory(self.device).allocated
        self.metrics.read_device_memory(lambda: device_memory(self.device))
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

    def plan(self, model_id: str, width: int = 0, height: int = 0, task: Task | None = None) -> PlanDecision:
        """The planner's decision for `model_id` on this machine (nothing is loaded)."""
        return self.planner.plan(self.registry.get(model_id), width, height, task)

    def require_fit(self, model_id: str, width: int = 0, height: int = 0, task: Task | None = None) -> Plan:
        """The plan `model_id` would load under for this size, or ModelDoesNotFitError with the budgets."""
        decision = self.plan(model_id, width, height, task)
        if decision.chosen is None:
            smallest = decision.smallest
            raise ModelDoesNotFitError(
                model_id,
                device_budget=decision.box.device_bytes,
                host_budget=decision.box.host_bytes,
                smallest_device=smallest.peak_device_bytes,
                smallest_host=smallest.peak_host_bytes,
                smallest_plan=smallest.summary,
                width=smallest.width,
                height=smallest.height,
            )
        return decision.chosen

    def load(
        self,
        model_id: str,
        on_progress: ProgressSink = _ignore_progress,
        *,
        width: int = 0,
        height: int = 0,
        task: Task | None = None,
        plan: Plan | None = None,
    ) -> LoadReport:
        """Makes `model_id` resident under a plan that fits this size, unloading whatever else is.

        Refusals (no plan fits, weights missing) happen before any unload. A resident pipeline whose plan
        still fits the job is kept, so a job of another size does not reload it.
        """
        started = time.perf_counter()
        entry = self.registry.get(model_id)
        if plan is None:
            kept = self._serving_plan(entry, width, height, task)
            if kept is not None:
                return LoadReport(model_id, self.memory_now(), time.perf_counter() - started, already_loaded=True)
            plan = self.require_fit(model_id, width, height, task)
        elif self._serves(model_id, plan):
            return LoadReport(model_id, self.memory_now(), time.perf_counter() - started, already_loaded=True)
        return self._load_under(entry, plan, on_progress, started)

    def _load_under(self, entry: ModelEntry, plan: Plan, on_progress: ProgressSink, started: float) -> LoadReport:
        """Refuses what cannot load here, unloads the resident model, then has the loader carry out `plan`."""
        self.loader.check(entry, plan)
        location = weights.locate(weights.with_variant(entry, plan.variant), self.models_dir, tiny=self.registry.tiny)
        unloaded = None
        if self._resident is not None:
            on_progress(Progress(Stage.UNLOADING, model_id=self._resident.entry.id))
            unloaded = self.unload()
        on_progress(Progress(Stage.LOADING, model_id=entry.id))
        self._set_transition(entry.id, ModelState.LOADING)
        weights_started = time.perf_counter()
        try:
            with AnonPeakSampler() as sampler:
                loaded = self.loader.load(entry, plan, location)
        except DiffusionError:
            self._mark_failed(entry.id)
            raise
        except Exception:
            _LOGGER.exception("loading %s failed", entry.id)
            self._mark_failed(entry.id)
            release_device_memory(self.device)
            # A fresh exception: the original traceback would keep half-built modules alive.
            raise ModelLoadError(entry.id, "the weights could not be loaded; see the service log") from None
        modules = loaded.modules()
        resident = _Resident(entry, loaded, sum(module_bytes(m) for m in modules), [weakref.ref(m) for m in modules])
        with self._state_lock:
            self._resident = resident
            self._transition = None
            self._failed.discard(entry.id)
        memory = self._report(model_bytes=resident.model_bytes, peak_anon=sampler.peak_above_start)
        duration = time.perf_counter() - started
        self._record_load(entry.id, unloaded, time.perf_counter() - weights_started)
        _LOGGER.info(
            "loaded %s (%s) in %.2fs under plan [%s]: %.1f MB of weights, peak anon host +%.1f MB",
            entry.id,
            "tiny twin" if self.registry.tiny else entry.repo,
            duration,
            plan.summary,
            resident.model_bytes / 1e6,
            sampler.peak_above_start / 1e6,
        )
        return LoadReport(entry.id, memory, duration, unloaded=unloaded)

    def _serves(self, model_id: str, plan: Plan) -> bool:
        """Whether the resident pipeline is `model_id` loaded as `plan` loads it (then only tiling is set)."""
        resident = self._resident
        if resident is None or resident.entry.id != model_id or resident.plan.load_key != plan.load_key:
            return False
        resident.loaded.set_tiling(plan.component("vae").tiling)
        return True

    def _serving_plan(self, entry: ModelEntry, width: int, height: int, task: Task | None) -> Plan | None:
        """The resident plan, with tiling set for this job, if it can serve `entry` at this size; else None."""
        resident = self._resident
        if resident is None or resident.entry.id != entry.id:
            return None
        decision = self.planner.plan(entry, width, height, task)
        if decision.chosen is not None and decision.chosen.load_key == resident.plan.load_key:
            resident.loaded.set_tiling(decision.chosen.component("vae").tiling)
            return decision.chosen
        # Hysteresis: a resident plan that still fits is kept rather than reloaded for a better one.
        for tiling in (False, True) if entry.options("vae").tiling else (False,):
            again = self.planner.replan(entry, resident.plan, width, height, task, vae_tiling=tiling)
            if self.planner.fits(again):
                resident.loaded.set_tiling(tiling)
                return again
        return None

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
        resident.loaded.teardown()
        with self._state_lock:
            self._resident = None
        del resident
        release_device_memory(self.device)
        leaked = sum(1 for ref in refs if ref() is not None)
        memory = self._report(leaked_modules=leaked)
        with self._state_lock:
            self._transition = None
        self.clean = memory.verified
        duration = time.perf_counter() - started
        self._record_unload(model_id, memory, duration)
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

    def _record_load(self, model_id: str, unloaded: UnloadReport | None, weights_s: float) -> None:
        if unloaded is not None:
            self.metrics.load_duration.labels(model_id, "unload_previous").observe(unloaded.duration_s)
        self.metrics.load_duration.labels(model_id, "load_weights").observe(weights_s)
        self.metrics.set_resident(model_id)

    def _record_unload(self, model_id: str, memory: MemoryReport, duration_s: float) -> None:
        self.metrics.unload_duration.labels(model_id).observe(duration_s)
        self.metrics.unload_leftover.set(max(0, memory.device_allocated_bytes - memory.baseline_device_allocated_bytes))
        if not memory.verified:
            self.metrics.unload_failures.labels(model_id).inc()
        self.metrics.set_resident(None)

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
        outcome = self.run_batch([BatchPart(job, on_progress, cancel)])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def run_batch(self, parts: list[BatchPart]) -> list[JobOutput | BaseException]:
        """Runs jobs of one batch key (or one job) in as few pipeline calls as the setting and memory allow.

        Each job gets its output or the error that ended it. A job cancelled while others of its batch run on is
        dropped: its images are still computed with theirs (the call is shared) and thrown away at the end.
        """
        try:
            return self._run_parts(parts)
        except Exception as error:
            # Loading, a refusal or a failed call ends every job of the batch alike.
            return [error] * len(parts)

    def _run_parts(self, parts: list[BatchPart]) -> list[JobOutput | BaseException]:
        lead = parts[0].job
        if all(part.cancel.is_set() for part in parts):
            raise JobCancelledError()
        entry = self.registry.get(lead.model_id)
        if not entry.supports(lead.task):
            raise TaskUnsupportedError(lead.model_id, lead.task.value.replace("_", "-"))
        load_started = time.perf_counter()
        report = self.load(lead.model_id, _fan_out(parts), width=lead.width, height=lead.height, task=lead.task)
        load_s = 0.0 if report.already_loaded else time.perf_counter() - load_started
        runs = [_PartRun(part) for part in parts]
        per_call = self._images_per_call(entry, lead, sum(part.job.image_count for part in parts))
        calls = _calls(runs, per_call)
        for call in calls:
            for run in {image.run: None for image in call}:
                run.calls_total += 1
        for call in calls:
            live = [image for image in call if not image.run.part.cancel.is_set()]
            if live:
                self._call(entry, lead, live)
        return [run.outcome(self, load_s) for run in runs]

    def _images_per_call(self, entry: ModelEntry, job: ImageJob, wanted: int) -> int:
        """The most images one pipeline call may carry: the setting, then what the resident plan's memory allows."""
        resident = self._resident
        assert resident is not None
        tiled = bool(getattr(getattr(resident.pipeline, "vae", None), "use_tiling", False))
        for batch in range(min(wanted, self.max_batch_images), 1, -1):
            plan = self.planner.replan(
                entry, resident.plan, job.width, job.height, job.task, vae_tiling=tiled, batch=batch
            )
            if self.planner.fits(plan):
                return batch
        return 1

    def _call(self, entry: ModelEntry, lead: ImageJob, images: list[_PendingImage]) -> None:
        """One pipeline call for `images` (one generator each, seeded as if alone); stops when all its jobs cancel."""
        assert self._resident is not None
        resident = self._resident
        runs = list({image.run: None for image in images})
        started = time.perf_counter()
        denoised_at = [started]

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if all(run.part.cancel.is_set() for run in runs):
                pipe._interrupt = True
                raise JobCancelledError()
            for run in runs:
                run.step(step)
            if step + 1 == lead.steps:
                denoised_at[0] = time.perf_counter()
                for run in runs:
                    run.part.on_progress(Progress(Stage.DECODING, model_id=lead.model_id))
            return tensors

        prompt: str | list[str] = runs[0].part.job.prompt if len(runs) == 1 else [i.run.part.job.prompt for i in images]
        kwargs = family_of(resident.entry.family).call_kwargs(
            PromptJob(lead.task, prompt, lead.width, lead.height, lead.guidance, runs[0].part.job.image)
        )
        if len(runs) == 1:
            kwargs["num_images_per_prompt"] = len(images)
        generators = [torch.Generator(device="cpu").manual_seed(image.seed) for image in images]
        released = resident.loaded.released_encoder
        try:
            if released is not None:
                released.attach()
            with torch.inference_mode():
                output = resident.pipeline(
                    **kwargs,
                    num_inference_steps=lead.steps,
                    generator=generators,
                    callback_on_step_end=on_step_end,
                    output_type="pil",
                )
        except JobCancelledError:
            # Re-raised fresh: the original traceback holds the pipeline's frames (and the pipeline).
            raise JobCancelledError() from None
        except DiffusionError:
            raise
        except Exception:
            _LOGGER.exception("pipeline call for %s failed", lead.model_id)
            raise RuntimeError("the pipeline call failed") from None
        finally:
            # Normally freed by the transformer's pre-hook already; a job cancelled while encoding frees it here.
            if released is not None:
                released.release()
        finished = time.perf_counter()
        for image, pixels in zip(images, output.images, strict=True):
            image.run.images[image.index] = pixels
        for run in runs:
            run.calls_done += 1
            run.denoise_s += denoised_at[0] - started
            run.decode_s += finished - denoised_at[0]
        if lead.steps:
            self.metrics.step_duration.labels(lead.model_id).observe((denoised_at[0] - started) / lead.steps)
        self.metrics.batch_images.labels(lead.model_id).observe(len(images))


def _fan_out(parts: list[BatchPart]) -> ProgressSink:
    """One sink that tells every job of a batch (load progress is shared)."""

    def tell_all(event: Progress) -> None:
        for part in parts:
            part.on_progress(event)

    return tell_all


@dataclass(eq=False)
class _PartRun:
    """One job of a batched run as it goes: its images so far, its pipeline calls and its time in them."""

    part: BatchPart
    images: dict[int, Image.Image] = field(default_factory=dict)
    calls_total: int = 0
    calls_done: int = 0
    denoise_s: float = 0.0
    decode_s: float = 0.0

    def step(self, step: int) -> None:
        """A denoising step of the current call, counted over every call this job takes part in."""
        steps = self.part.job.steps
        self.part.on_progress(
            Progress(
                Stage.DENOISING,
                model_id=self.part.job.model_id,
                step=self.calls_done * steps + step + 1,
                total_steps=self.calls_total * steps,
            )
        )

    def outcome(self, engine: DiffusionEngine, load_s: float) -> JobOutput | BaseException:
        job = self.part.job
        if self.part.cancel.is_set() or len(self.images) != job.image_count:
            return JobCancelledError()
        self.part.on_progress(Progress(Stage.DONE, model_id=job.model_id))
        entry = engine.registry.get(job.model_id)
        return JobOutput(
            images=[self.images[i] for i in range(job.image_count)],
            seeds=job.seeds,
            model_id=job.model_id,
            revision="tiny" if engine.registry.tiny else entry.revision,
            steps=job.steps,
            guidance=job.guidance,
            load_s=load_s,
            denoise_s=self.denoise_s,
            decode_s=self.decode_s,
        )


@dataclass(frozen=True)
class _PendingImage:
    run: _PartRun
    index: int
    seed: int


def _calls(runs: list[_PartRun], per_call: int) -> list[list[_PendingImage]]:
    """Every image of every job, in job then seed order, cut into pipeline calls of at most `per_call` images."""
    images = [_PendingImage(run, index, seed) for run in runs for index, seed in enumerate(run.part.job.seeds)]
    return [images[start : start + per_call] for start in range(0, len(images), per_call)]
