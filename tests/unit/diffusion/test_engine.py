"""The engine on tiny twins through real diffusers: load, generate, edit, unload, switching, cancellation."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from adgen_diffusion.engine import DiffusionEngine, ImageJob, Progress, Stage
from adgen_diffusion.errors import (
    JobCancelledError,
    ModelNotCachedError,
    PlacementUnsupportedError,
    TaskUnsupportedError,
)
from adgen_diffusion.loader import remove_pipeline_hooks
from adgen_diffusion.planner import Residency
from adgen_diffusion.registry import ModelRegistry, Quantization, Task
from tests.unit.diffusion.test_batching import BATCH_TOLERANCE, max_channel_difference

SIDE = 64


def _job(model_id: str, task: Task = Task.TEXT_TO_IMAGE, **overrides: object) -> ImageJob:
    fields: dict[str, object] = {
        "model_id": model_id,
        "task": task,
        "prompt": "iced strawberry latte on a cafe table",
        "width": SIDE,
        "height": SIDE,
        "steps": 2,
        "guidance": 1.0,
        "seed": 42,
        "image_count": 1,
        "image": Image.new("RGB", (96, 64), "orange") if task is Task.IMAGE_EDIT else None,
    }
    fields.update(overrides)
    return ImageJob(**fields)  # type: ignore[arg-type]


def _run(engine: DiffusionEngine, job: ImageJob, events: list[Progress] | None = None) -> list[Image.Image]:
    sink = events.append if events is not None else (lambda _: None)
    return engine.run(job, sink, threading.Event()).images


@pytest.mark.parametrize("model_id", ["flux2-klein-4b", "z-image-turbo"])
def test_generate_returns_images_of_the_requested_size(engine: DiffusionEngine, model_id: str) -> None:
    images = _run(engine, _job(model_id, width=96, height=64, image_count=2))
    assert [image.size for image in images] == [(96, 64), (96, 64)]
    assert engine.loaded_model_id == model_id


@pytest.mark.parametrize("model_id", ["qwen-image-edit-2511", "flux2-klein-4b"])
def test_edit_returns_an_image_of_the_requested_size(engine: DiffusionEngine, model_id: str) -> None:
    images = _run(engine, _job(model_id, Task.IMAGE_EDIT, width=64, height=96))
    assert [image.size for image in images] == [(64, 96)]


def test_same_seed_reproduces_the_image_and_image_i_uses_seed_plus_i(engine: DiffusionEngine) -> None:
    first = engine.run(_job("z-image-turbo", image_count=2, seed=7), lambda _: None, threading.Event())
    again = _run(engine, _job("z-image-turbo", seed=8))
    assert first.seeds == [7, 8]
    assert _run(engine, _job("z-image-turbo", seed=8))[0].tobytes() == again[0].tobytes()
    # The two images came from one batched call: equal to the lone run within float32 rounding (tests/unit/
    # diffusion/test_batching.py states the tolerance).
    assert max_channel_difference(first.images[1], again[0]) <= BATCH_TOLERANCE
    assert max_channel_difference(first.images[0], first.images[1]) > 10


def test_progress_runs_loading_then_every_step_then_decoding_and_done(engine: DiffusionEngine) -> None:
    engine.unload()
    events: list[Progress] = []
    _run(engine, _job("flux2-klein-4b", steps=3), events)
    stages = [event.stage for event in events]
    assert stages == [Stage.LOADING, Stage.DENOISING, Stage.DENOISING, Stage.DENOISING, Stage.DECODING, Stage.DONE]
    assert [(e.step, e.total_steps) for e in events if e.stage is Stage.DENOISING] == [(1, 3), (2, 3), (3, 3)]


def test_switching_models_reports_unloading_before_loading(engine: DiffusionEngine) -> None:
    _run(engine, _job("flux2-klein-4b"))
    events: list[Progress] = []
    _run(engine, _job("qwen-image-edit-2511", Task.IMAGE_EDIT), events)
    assert [e.stage for e in events[:2]] == [Stage.UNLOADING, Stage.LOADING]
    assert events[0].model_id == "flux2-klein-4b" and events[1].model_id == "qwen-image-edit-2511"


def test_load_and_unload_report_memory_and_verify_the_old_modules_are_gone(engine: DiffusionEngine) -> None:
    engine.unload()
    loaded = engine.load("z-image-turbo")
    assert loaded.memory.model_bytes > 1_000_000 and loaded.memory.host_rss_bytes > 0
    assert loaded.memory.peak_host_anon_bytes >= 0
    unloaded = engine.unload()
    assert unloaded.model_id == "z-image-turbo"
    assert unloaded.memory.verified and unloaded.memory.leaked_modules == 0 and unloaded.memory.model_bytes == 0
    assert engine.loaded_model_id is None


def test_unload_detects_a_module_someone_still_holds(engine: DiffusionEngine) -> None:
    engine.load("z-image-turbo")
    resident = engine._resident
    assert resident is not None
    kept = resident.pipeline.vae
    del resident
    report = engine.unload()
    assert report.memory.leaked_modules == 1 and not report.memory.verified and not engine.clean
    del kept
    gc.collect()
    engine.load("z-image-turbo")
    assert engine.unload().memory.verified and engine.clean


def _live_tensor_bytes() -> int:
    """Bytes of every distinct tensor storage still reachable. Exact, unlike RSS, whose noise on these tiny
    twins (a few MB of weights) is larger than a whole leaked pipeline."""
    gc.collect()
    storages: dict[int, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta:
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def test_many_switches_leave_no_live_pipelines_and_no_growing_tensor_memory(engine: DiffusionEngine) -> None:
    refs: list[weakref.ref[torch.nn.Module]] = []
    live_bytes: list[int] = []
    smallest_transformer = float("inf")
    for cycle in range(3):
        for model_id, task in (("flux2-klein-4b", Task.TEXT_TO_IMAGE), ("qwen-image-edit-2511", Task.IMAGE_EDIT)):
            _run(engine, _job(model_id, task))
            resident = engine._resident
            assert resident is not None
            transformer = resident.pipeline.transformer
            refs.append(weakref.ref(transformer))
            smallest_transformer = min(smallest_transformer, sum(p.nbytes for p in transformer.parameters()))
            del resident, transformer
        engine.unload()
        if cycle:
            live_bytes.append(_live_tensor_bytes())
    gc.collect()
    assert [ref() for ref in refs] == [None] * len(refs)
    # Any module of a pipeline kept alive per cycle (not only the transformer) would add its weights here.
    assert smallest_transformer > 0
    assert max(live_bytes) - min(live_bytes) < smallest_transformer / 2


def test_cancellation_stops_within_one_step(engine: DiffusionEngine) -> None:
    cancel = threading.Event()
    steps_seen: list[int] = []

    def on_progress(event: Progress) -> None:
        if event.stage is Stage.DENOISING:
            steps_seen.append(event.step)
            if event.step == 2:
                cancel.set()

    with pytest.raises(JobCancelledError):
        engine.run(_job("flux2-klein-4b", steps=10), on_progress, cancel)
    assert steps_seen == [1, 2]
    assert engine.loaded_model_id == "flux2-klein-4b"
    assert _run(engine, _job("flux2-klein-4b"))[0].size == (SIDE, SIDE)


def test_a_job_cancelled_before_it_starts_never_loads(engine: DiffusionEngine) -> None:
    engine.unload()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(JobCancelledError):
        engine.run(_job("z-image-turbo"), lambda _: None, cancel)
    assert engine.loaded_model_id is None


def test_text_to_image_on_an_edit_only_model_is_refused(engine: DiffusionEngine) -> None:
    with pytest.raises(TaskUnsupportedError):
        _run(engine, _job("qwen-image-edit-2511", Task.TEXT_TO_IMAGE))


@pytest.mark.parametrize(
    ("transformer", "text_encoder"),
    [
        ((Quantization.NF4, Residency.DEVICE), (Quantization.NONE, Residency.DEVICE)),
        ((Quantization.FLOAT8, Residency.DEVICE), (Quantization.NONE, Residency.DEVICE)),
        ((Quantization.NONE, Residency.HOST), (Quantization.NONE, Residency.HOST)),
    ],
)
def test_cuda_only_placements_are_refused_on_cpu_without_unloading(
    engine: DiffusionEngine, transformer: tuple[Quantization, Residency], text_encoder: tuple[Quantization, Residency]
) -> None:
    _run(engine, _job("z-image-turbo"))
    entry = engine.registry.get("flux2-klein-9b")
    plan = engine.planner.plan_with(entry, transformer=transformer, text_encoder=text_encoder)
    with pytest.raises(PlacementUnsupportedError, match="needs a CUDA GPU"):
        engine.load("flux2-klein-9b", plan=plan)
    assert engine.loaded_model_id == "z-image-turbo"


def test_missing_tiny_twin_fails_fast_as_not_cached(tiny_registry: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(ModelNotCachedError, match="build-tiny"):
        DiffusionEngine(tiny_registry, tmp_path, device="cpu").load("flux2-klein-4b")


def test_offline_real_model_not_in_cache_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    engine = DiffusionEngine(ModelRegistry.load(), tmp_path, device="cpu")
    assert not engine.is_available(engine.registry.get("z-image-turbo"))
    with pytest.raises(ModelNotCachedError, match="HF_HUB_OFFLINE"):
        engine.load("z-image-turbo")


def _hooked_modules(module: torch.nn.Module) -> int:
    registries: list[Any] = [getattr(m, "_diffusers_hook", None) for m in module.modules()]
    return sum(1 for registry in registries if registry is not None and registry.hooks)


def test_teardown_removes_group_offload_hooks_that_remove_all_hooks_misses(engine: DiffusionEngine) -> None:
    engine.load("z-image-turbo")
    resident = engine._resident
    assert resident is not None
    pipeline = resident.pipeline
    del resident
    # Group offload onto the CPU itself: the same diffusers hooks as on a GPU, testable here.
    pipeline.enable_group_offload(onload_device=torch.device("cpu"), offload_type="leaf_level", low_cpu_mem_usage=True)
    transformer = pipeline.transformer
    pipeline.remove_all_hooks()
    hooked = _hooked_modules(transformer)
    assert hooked > 0
    assert remove_pipeline_hooks(pipeline) >= hooked
    assert _hooked_modules(transformer) == 0
    del pipeline, transformer
    assert engine.unload().memory.verified
