"""FLUX.2 single-file loading: the tiny FP8 twin in BFL layout, layout inspection, refusal of unknown layouts."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from adgen_diffusion.bfl_layout import quantize_fp8_unscaled, to_bfl_layout
from adgen_diffusion.engine import DiffusionEngine, ImageJob
from adgen_diffusion.errors import ModelLoadError
from adgen_diffusion.registry import Task
from adgen_diffusion.single_file import Layout, UnknownLayoutError, inspect_layout, load_transformer

FP8_FILE = "flux-2-klein-9b-fp8.safetensors"


@pytest.fixture(scope="module")
def fp8_twin(tiny_models_dir: Path) -> Path:
    return tiny_models_dir / "tiny" / "flux2-klein-fp8"


def _write(tmp_path: Path, state: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "transformer.safetensors"
    save_file({key: tensor.contiguous() for key, tensor in state.items()}, str(path))
    return path


def _image(engine: DiffusionEngine, model_id: str) -> np.ndarray:
    job = ImageJob(model_id, Task.TEXT_TO_IMAGE, "a latte", 64, 64, 2, 1.0, 11)
    return np.asarray(engine.run(job, lambda _: None, threading.Event()).images[0], dtype=np.float64)


def test_tiny_fp8_twin_is_a_bfl_layout_file_with_per_row_scales(fp8_twin: Path) -> None:
    report = inspect_layout(fp8_twin / FP8_FILE)
    assert report.layout is Layout.FP8_PER_ROW and report.fp8_tensors == report.scaled_tensors > 0
    keys = load_file(str(fp8_twin / FP8_FILE)).keys()
    assert "double_blocks.0.img_attn.qkv.weight" in keys and "final_layer.adaLN_modulation.1.weight" in keys
    assert not list((fp8_twin / "transformer").glob("*.safetensors"))


def test_fp8_model_generates_with_weights_kept_in_fp8(engine: DiffusionEngine) -> None:
    fp8 = _image(engine, "flux2-klein-9b-fp8")
    resident = engine._resident
    assert resident is not None
    to_q = resident.pipeline.transformer.transformer_blocks[0].attn.to_q
    assert to_q.weight.dtype == torch.float8_e4m3fn
    del resident, to_q
    wide = _image(engine, "flux2-klein-4b")
    # Same random weights, FP8-rounded: the images agree closely but not bit for bit.
    assert np.abs(fp8 - wide).mean() < 2.0


def test_unscaled_fp8_file_loads_upcast_on_cpu(fp8_twin: Path, tmp_path: Path) -> None:
    from diffusers import Flux2Transformer2DModel

    reference = Flux2Transformer2DModel.from_pretrained(  # type: ignore[no-untyped-call]
        str(fp8_twin.parent / "flux2-klein"), subfolder="transformer"
    )
    path = _write(tmp_path, quantize_fp8_unscaled(to_bfl_layout(reference.state_dict())))
    assert inspect_layout(path).layout is Layout.PLAIN
    loaded = load_transformer(path, fp8_twin, dtype=torch.float32, device=None)
    expected = reference.transformer_blocks[0].attn.to_q.weight.to(torch.float8_e4m3fn).float()
    assert torch.equal(loaded.transformer_blocks[0].attn.to_q.weight, expected)  # type: ignore[union-attr,index]


def _bfl_state(fp8_twin: Path) -> dict[str, torch.Tensor]:
    return load_file(str(fp8_twin / FP8_FILE))


def test_per_tensor_scales_are_refused_as_unknown(fp8_twin: Path, tmp_path: Path) -> None:
    state = _bfl_state(fp8_twin)
    scale_key = next(k for k in state if k.endswith(".weight_scale"))
    state[scale_key] = torch.tensor(0.5)
    with pytest.raises(UnknownLayoutError, match="only per-row scales"):
        inspect_layout(_write(tmp_path, state))


def test_comfyui_prefixed_file_is_refused_as_unknown(fp8_twin: Path, tmp_path: Path) -> None:
    state = {f"model.diffusion_model.{k}": v for k, v in _bfl_state(fp8_twin).items()}
    with pytest.raises(UnknownLayoutError, match="ComfyUI"):
        inspect_layout(_write(tmp_path, state))


def test_file_that_is_not_a_flux2_transformer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnknownLayoutError, match=r"not a FLUX\.2 transformer"):
        inspect_layout(_write(tmp_path, {"encoder.weight": torch.zeros(4, 4)}))


def test_packed_integer_weights_are_refused(fp8_twin: Path, tmp_path: Path) -> None:
    state = _bfl_state(fp8_twin)
    state["double_blocks.0.img_mlp.0.weight"] = torch.zeros(4, 4, dtype=torch.uint8)
    with pytest.raises(UnknownLayoutError, match="U8"):
        inspect_layout(_write(tmp_path, state))


def test_loading_an_unknown_layout_is_a_clear_load_error(fp8_twin: Path, tmp_path: Path) -> None:
    path = _write(tmp_path, {"encoder.weight": torch.zeros(4, 4)})
    with pytest.raises(ModelLoadError, match="unknown single-file layout"):
        load_transformer(path, fp8_twin, dtype=torch.float32, device=None, model_id="flux2-klein-9b-fp8")
