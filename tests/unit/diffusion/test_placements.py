"""Each placement kind the planner may choose, carried out by the loader on the tiny twins, as far as a CPU allows."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adgen_diffusion.engine import DiffusionEngine, ImageJob
from adgen_diffusion.errors import ModelDoesNotFitError
from adgen_diffusion.planner import GIB, Box, MemoryPlanner, Plan, Residency
from adgen_diffusion.registry import Quantization, Task

SIDE = 64
INT8_ON_DEVICE = (Quantization.INT8, Residency.DEVICE)


def _job(model_id: str, task: Task = Task.TEXT_TO_IMAGE) -> ImageJob:
    photo = Image.new("RGB", (96, 64), "orange") if task is Task.IMAGE_EDIT else None
    return ImageJob(model_id, task, "iced strawberry latte", SIDE, SIDE, 2, 1.0, 7, 1, photo)


def _image(engine: DiffusionEngine, job: ImageJob) -> np.ndarray:
    return np.asarray(engine.run(job, lambda _: None, threading.Event()).images[0], dtype=np.float64)


def _plan(engine: DiffusionEngine, model_id: str, **options: object) -> Plan:
    return engine.planner.plan_with(engine.registry.get(model_id), width=SIDE, height=SIDE, **options)  # type: ignore[arg-type]


def _resident_image(engine: DiffusionEngine, model_id: str, task: Task = Task.TEXT_TO_IMAGE) -> np.ndarray:
    engine.load(model_id, plan=_plan(engine, model_id))
    return _image(engine, _job(model_id, task))


@pytest.mark.parametrize(
    ("model_id", "task"), [("flux2-klein-4b", Task.TEXT_TO_IMAGE), ("z-image-turbo", Task.TEXT_TO_IMAGE)]
)
def test_a_text_encoder_released_after_encoding_gives_the_resident_image(
    engine: DiffusionEngine, model_id: str, task: Task
) -> None:
    expected = _resident_image(engine, model_id, task)
    engine.load(model_id, plan=_plan(engine, model_id, text_encoder=(Quantization.NONE, Residency.RELEASED)))
    resident = engine._resident
    assert resident is not None and resident.pipeline.text_encoder is None
    released = resident.loaded.released_encoder
    assert released is not None
    del resident
    np.testing.assert_allclose(_image(engine, _job(model_id, task)), expected, atol=1.0)
    # Freed again before denoising started, and not re-attached after the job.
    assert released.module is None and engine._resident is not None and engine._resident.pipeline.text_encoder is None
    del released
    assert engine.unload().memory.verified


def test_qwen_edit_with_a_released_text_encoder_still_sees_the_photo(engine: DiffusionEngine) -> None:
    model_id = "qwen-image-edit-2511"
    expected = _resident_image(engine, model_id, Task.IMAGE_EDIT)
    engine.load(model_id, plan=_plan(engine, model_id, text_encoder=(Quantization.NONE, Residency.RELEASED)))
    np.testing.assert_allclose(_image(engine, _job(model_id, Task.IMAGE_EDIT)), expected, atol=1.0)
    assert engine.unload().memory.verified


def test_a_transformer_streamed_from_disk_gives_the_resident_image_and_cleans_up(engine: DiffusionEngine) -> None:
    model_id = "flux2-klein-4b"
    expected = _resident_image(engine, model_id)
    engine.load(model_id, plan=_plan(engine, model_id, transformer=(Quantization.NONE, Residency.STREAMED)))
    resident = engine._resident
    assert resident is not None
    offload_dir = resident.loaded.offload_dir
    del resident
    np.testing.assert_allclose(_image(engine, _job(model_id)), expected, atol=1.0)
    assert offload_dir is not None and any(offload_dir.glob("*.safetensors"))
    assert engine.unload().memory.verified
    assert not offload_dir.exists()


def test_int8_quantized_on_load_holds_int8_weights_and_still_generates(engine: DiffusionEngine) -> None:
    from torchao.quantization import Int8Tensor

    model_id = "z-image-turbo"
    engine.load(
        model_id,
        plan=_plan(
            engine,
            model_id,
            transformer=(Quantization.INT8, Residency.DEVICE),
            text_encoder=(Quantization.INT8, Residency.DEVICE),
        ),
    )
    resident = engine._resident
    assert resident is not None
    linears = [m for m in resident.pipeline.transformer.modules() if isinstance(m, torch.nn.Linear)]
    encoder_linears = [m for m in resident.pipeline.text_encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert any(isinstance(m.weight, Int8Tensor) for m in linears)
    assert any(isinstance(m.weight, Int8Tensor) for m in encoder_linears)
    del resident, linears, encoder_linears
    image = _image(engine, _job(model_id))
    assert image.shape == (SIDE, SIDE, 3) and np.isfinite(image).all()
    assert engine.unload().memory.verified


def test_vae_tiling_is_switched_on_by_the_plan(engine: DiffusionEngine) -> None:
    model_id = "qwen-image-edit-2511"
    engine.load(model_id, plan=_plan(engine, model_id, vae_tiling=True))
    resident = engine._resident
    assert resident is not None and resident.pipeline.vae.use_tiling
    del resident
    image = _image(engine, _job(model_id, Task.IMAGE_EDIT))
    assert image.shape == (SIDE, SIDE, 3)
    # The same model at a plan without tiling needs no reload: tiling toggles on the resident pipeline.
    report = engine.load(model_id, plan=_plan(engine, model_id))
    assert report.already_loaded and engine._resident is not None and not engine._resident.pipeline.vae.use_tiling


def test_a_model_that_does_not_fit_is_refused_before_the_resident_one_is_unloaded(
    engine: DiffusionEngine, tiny_models_dir: Path
) -> None:
    engine.load("z-image-turbo")
    planner = engine.planner
    try:
        engine.planner = MemoryPlanner(
            Box(device_bytes=80 * GIB, host_bytes=GIB, accelerator=False), planner.sizer, planner.configs_of
        )
        with pytest.raises(ModelDoesNotFitError, match="does not fit this machine") as refused:
            engine.load("flux2-klein-4b")
        assert refused.value.host_budget == GIB and refused.value.smallest_host > GIB
        assert engine.loaded_model_id == "z-image-turbo"
    finally:
        engine.planner = planner


def test_the_plan_a_job_loads_under_is_the_planners_choice_for_its_size(engine: DiffusionEngine) -> None:
    _image(engine, _job("flux2-klein-4b"))
    resident = engine._resident
    assert resident is not None
    chosen = engine.plan("flux2-klein-4b", SIDE, SIDE, Task.TEXT_TO_IMAGE).chosen
    assert chosen is not None and resident.plan.load_key == chosen.load_key
