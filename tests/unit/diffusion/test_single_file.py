"""FLUX.2 single-file loading: per-tensor and per-row FP8 files in BFL layout, and refusal of unknown layouts."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import Flux2Transformer2DModel
from diffusers.quantizers.bfl.utils import BFLFP8RLinear
from safetensors.torch import load_file, save_file

from adgen_diffusion.bfl_layout import (
    quantize_fp8_per_row,
    quantize_fp8_per_tensor,
    quantize_fp8_unscaled,
    to_bfl_layout,
)
from adgen_diffusion.engine import DiffusionEngine, ImageJob
from adgen_diffusion.errors import ModelLoadError
from adgen_diffusion.registry import ModelRegistry, Task
from adgen_diffusion.single_file import Layout, UnknownLayoutError, inspect_layout, load_transformer, read_state_dict

# The tiny transformer and a pipeline dir holding its transformer/config.json.
Tiny = tuple[Any, Path]
Mutation = Callable[[dict[str, torch.Tensor]], None]
QKV = "double_blocks.0.img_attn.qkv"
MLP = "double_blocks.0.img_mlp.0"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """A small random FLUX.2 transformer and a pipeline dir holding only its transformer/config.json."""
    torch.manual_seed(0)
    model: Any = Flux2Transformer2DModel(  # type: ignore[no-untyped-call]
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        timestep_guidance_channels=64,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
        mlp_ratio=2.0,
    )
    model.eval()
    pipeline_dir = tmp_path_factory.mktemp("pipeline")
    model.save_config(pipeline_dir / "transformer")
    return model, pipeline_dir


def _bfl(tiny: Tiny) -> dict[str, torch.Tensor]:
    return to_bfl_layout(tiny[0].state_dict())


def _write(tmp_path: Path, state: dict[str, torch.Tensor], name: str = "transformer.safetensors") -> Path:
    path = tmp_path / name
    save_file({key: tensor.contiguous() for key, tensor in state.items()}, str(path))
    return path


def _dequantized(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The FP8 file's weights as fp32, scales applied: what the loaded FP8 model must compute with."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.endswith(("weight_scale", "input_scale")):
            continue
        scale = state.get(key + "_scale")
        if scale is None:
            out[key] = tensor.float()
        else:
            out[key] = tensor.float() * (scale if scale.ndim == 0 else scale[:, None])
    return out


def _reference(tiny: Tiny, state: dict[str, torch.Tensor], tmp_path: Path) -> torch.nn.Module:
    # Loaded by diffusers' own single-file path from a wide file, independent of the loader under test.
    path = _write(tmp_path, _dequantized(state), "reference.safetensors")
    reference: torch.nn.Module = Flux2Transformer2DModel.from_single_file(
        str(path), config=str(tiny[1]), subfolder="transformer", dtype=torch.float32
    )
    return reference


def _forward(model: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    img_ids = torch.stack(torch.meshgrid(*(torch.arange(n) for n in (1, 4, 4, 1)), indexing="ij"), -1).reshape(-1, 4)
    with torch.no_grad():
        output = model(
            hidden_states=torch.randn(1, 16, 16, generator=generator),
            encoder_hidden_states=torch.randn(1, 5, 32, generator=generator),
            timestep=torch.tensor([0.5]),
            img_ids=img_ids,
            txt_ids=torch.zeros(5, 4, dtype=torch.long),
            return_dict=False,
        )[0]
    result: torch.Tensor = output
    return result


def _fp8_linears(model: torch.nn.Module) -> list[BFLFP8RLinear]:
    return [module for module in model.modules() if isinstance(module, BFLFP8RLinear)]


def test_per_tensor_file_is_recognised_from_its_header(tiny: Tiny, tmp_path: Path) -> None:
    state = quantize_fp8_per_tensor(_bfl(tiny))
    assert state[f"{QKV}.weight_scale"].ndim == 0 and state[f"{QKV}.input_scale"].ndim == 0
    report = inspect_layout(_write(tmp_path, state))
    assert report.layout is Layout.FP8_PER_TENSOR
    assert report.fp8_tensors == report.scaled_tensors == report.input_scales > 0
    assert report.largest_tensor_bytes == max(t.numel() * t.element_size() for t in state.values())


def test_per_tensor_scales_are_read_as_per_row_and_input_scales_dropped(tiny: Tiny, tmp_path: Path) -> None:
    state = quantize_fp8_per_tensor(_bfl(tiny))
    read = read_state_dict(
        _write(tmp_path, state), Layout.FP8_PER_TENSOR, dtype=torch.bfloat16, device=torch.device("cpu")
    )
    assert not [key for key in read if key.endswith("input_scale")]
    scale = read[f"{QKV}.weight_scale"]
    assert scale.dtype == torch.float32 and scale.shape == (state[f"{QKV}.weight"].shape[0],)
    assert torch.all(scale == state[f"{QKV}.weight_scale"])
    assert read[f"{QKV}.weight"].dtype == torch.float8_e4m3fn
    assert read["img_in.weight"].dtype == torch.bfloat16


@pytest.mark.parametrize("quantize", [quantize_fp8_per_tensor, quantize_fp8_per_row], ids=["per_tensor", "per_row"])
def test_scaled_fp8_file_loads_fp8_and_matches_the_dequantized_reference(
    tiny: Tiny,
    tmp_path: Path,
    quantize: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
) -> None:
    state = quantize(_bfl(tiny))
    loaded = load_transformer(_write(tmp_path, state), tiny[1], dtype=torch.float32, device=None)
    linears = _fp8_linears(loaded)
    # Every block linear: q, k, v, out, added q/k/v/out, two MLPs per stream, and two per single block.
    assert len(linears) == 12 + 2 * 2
    assert all(linear.weight.dtype == torch.float8_e4m3fn for linear in linears)
    assert all(linear.weight_scale.dtype == torch.float32 and linear.weight_scale.ndim == 1 for linear in linears)
    assert not [key for key in loaded.state_dict() if key.endswith("input_scale")]
    output = _forward(loaded)
    assert torch.allclose(output, _forward(_reference(tiny, state, tmp_path)), atol=1e-5)
    # FP8 rounding moves the output only a little from the unquantized model.
    assert (output - _forward(tiny[0])).abs().max() < 0.01


def test_per_tensor_loaded_scales_are_one_value_per_linear(tiny: Tiny, tmp_path: Path) -> None:
    state = quantize_fp8_per_tensor(_bfl(tiny))
    loaded: torch.nn.Module = load_transformer(_write(tmp_path, state), tiny[1], dtype=torch.float32, device=None)
    to_q = loaded.transformer_blocks[0].attn.to_q  # type: ignore[union-attr,index]
    assert torch.all(to_q.weight_scale == state[f"{QKV}.weight_scale"])


def test_unscaled_fp8_file_loads_upcast_on_cpu(tiny: Tiny, tmp_path: Path) -> None:
    path = _write(tmp_path, quantize_fp8_unscaled(_bfl(tiny)))
    assert inspect_layout(path).layout is Layout.PLAIN
    loaded = load_transformer(path, tiny[1], dtype=torch.float32, device=None)
    expected = tiny[0].transformer_blocks[0].attn.to_q.weight.to(torch.float8_e4m3fn).float()
    assert torch.equal(loaded.transformer_blocks[0].attn.to_q.weight, expected)  # type: ignore[union-attr,index]


def _prefix(state: dict[str, torch.Tensor]) -> None:
    for key in list(state):
        state[f"model.diffusion_model.{key}"] = state.pop(key)


def _not_flux2(state: dict[str, torch.Tensor]) -> None:
    state.clear()
    state["encoder.weight"] = torch.zeros(4, 4)


def _packed(state: dict[str, torch.Tensor]) -> None:
    state[f"{MLP}.weight"] = torch.zeros(4, 4, dtype=torch.uint8)


def _two_level(state: dict[str, torch.Tensor]) -> None:
    state[f"{QKV}.weight_scale_2"] = torch.tensor(1.0)


def _comfy_scales(state: dict[str, torch.Tensor]) -> None:
    state[f"{QKV}.scale_weight"] = state.pop(f"{QKV}.weight_scale")


def _unknown_scale(state: dict[str, torch.Tensor]) -> None:
    state[f"{QKV}.output_scale"] = torch.tensor(1.0)


def _matrix_scale(state: dict[str, torch.Tensor]) -> None:
    state[f"{QKV}.weight_scale"] = torch.ones(state[f"{QKV}.weight"].shape[0], 2)


def _wrong_rows(state: dict[str, torch.Tensor]) -> None:
    state[f"{QKV}.weight_scale"] = torch.ones(state[f"{QKV}.weight"].shape[0] + 1)


def _fp8_scale(state: dict[str, torch.Tensor]) -> None:
    state[f"{QKV}.weight_scale"] = state[f"{QKV}.weight_scale"].to(torch.float8_e4m3fn)


def _scale_on_wide_weight(state: dict[str, torch.Tensor]) -> None:
    state[f"{QKV}.weight"] = state[f"{QKV}.weight"].float()


def _input_scale_alone(state: dict[str, torch.Tensor]) -> None:
    del state[f"{QKV}.weight_scale"]


def _per_row_input_scale(state: dict[str, torch.Tensor]) -> None:
    state[f"{QKV}.input_scale"] = torch.ones(3)


def _mixed(state: dict[str, torch.Tensor]) -> None:
    state[f"{QKV}.weight_scale"] = state[f"{QKV}.weight_scale"].expand(state[f"{QKV}.weight"].shape[0])


def _unscaled_among_scaled(state: dict[str, torch.Tensor]) -> None:
    del state[f"{QKV}.weight_scale"], state[f"{QKV}.input_scale"]


REFUSALS: dict[str, tuple[Mutation, str]] = {
    "comfyui_prefix": (_prefix, r"'model\.diffusion_model\.' prefix \(a ComfyUI export\)"),
    "not_flux2": (_not_flux2, r"not a FLUX\.2 transformer"),
    "packed_int": (_packed, r"stores tensors as U8 \(packed or integer"),
    "two_level": (_two_level, r"two-level \(NVFP4-style\) scales \(double_blocks\.0\.img_attn\.qkv\.weight_scale_2"),
    "comfy_scaled_fp8": (_comfy_scales, r"ComfyUI scaled-FP8 keys"),
    "unknown_scale": (_unknown_scale, r"unknown scheme \(double_blocks\.0\.img_attn\.qkv\.output_scale"),
    "matrix_scale": (_matrix_scale, r"has shape \[96, 2\]; only per-tensor \[\] or per-row \[96\]"),
    "wrong_rows": (_wrong_rows, r"has shape \[97\]; only per-tensor \[\] or per-row \[96\]"),
    "fp8_scale": (_fp8_scale, r"weight_scale is stored as F8_E4M3"),
    "wide_weight": (_scale_on_wide_weight, r"does not scale a 2-D FP8 weight \(found a F32 weight"),
    "input_scale_alone": (_input_scale_alone, r"qkv\.input_scale has no double_blocks\.0\.img_attn\.qkv\.weight_scale"),
    "per_row_input_scale": (_per_row_input_scale, r"input_scale has shape \[3\]; only a per-tensor \[\]"),
    "mixed": (_mixed, r"mixes per-tensor \(11\) and per-row \(1\) scales"),
    "unscaled_among_scaled": (_unscaled_among_scaled, r"1 FP8 tensors have no weight_scale while others do"),
}


@pytest.fixture
def per_tensor_state(tiny: Tiny) -> Iterator[dict[str, torch.Tensor]]:
    yield quantize_fp8_per_tensor(_bfl(tiny))


@pytest.mark.parametrize("name", list(REFUSALS))
def test_unknown_layouts_are_refused_with_what_was_found(
    per_tensor_state: dict[str, torch.Tensor], tmp_path: Path, name: str
) -> None:
    mutate, reason = REFUSALS[name]
    mutate(per_tensor_state)
    with pytest.raises(UnknownLayoutError, match=reason):
        inspect_layout(_write(tmp_path, per_tensor_state))


def test_loading_an_unknown_layout_is_a_clear_load_error(tiny: Tiny, tmp_path: Path) -> None:
    path = _write(tmp_path, {"encoder.weight": torch.zeros(4, 4)})
    with pytest.raises(ModelLoadError, match="unknown single-file layout"):
        load_transformer(path, tiny[1], dtype=torch.float32, device=None, model_id="flux2-klein-9b-fp8")


def test_registry_fp8_model_generates_with_weights_kept_in_fp8(tiny_models_dir: Path) -> None:
    engine = DiffusionEngine(ModelRegistry.load(tiny=True), tiny_models_dir, device="cpu")
    try:
        job = ImageJob("flux2-klein-9b-fp8", Task.TEXT_TO_IMAGE, "a latte", 64, 64, 2, 1.0, 11)
        image = np.asarray(engine.run(job, lambda _: None, threading.Event()).images[0], dtype=np.float64)
        assert image.shape == (64, 64, 3) and np.isfinite(image).all()
        resident = engine._resident
        assert resident is not None
        transformer = resident.pipeline.transformer
        assert transformer.transformer_blocks[0].attn.to_q.weight.dtype == torch.float8_e4m3fn
        assert not [key for key in transformer.state_dict() if key.endswith("input_scale")]
    finally:
        engine.unload()


def test_bfl_layout_keys_survive_a_round_trip_through_the_file(tiny: Tiny, tmp_path: Path) -> None:
    keys = load_file(str(_write(tmp_path, quantize_fp8_per_tensor(_bfl(tiny))))).keys()
    assert f"{QKV}.weight" in keys and "final_layer.adaLN_modulation.1.weight" in keys
