# mypy: disallow-untyped-calls=False
"""Loading a FLUX.2 transformer from one original-layout (BFL) safetensors file, keeping FP8 where it can."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import BFLQuantizationConfig, Flux2Transformer2DModel
from safetensors import safe_open

from adgen_diffusion.errors import ModelLoadError

_LOGGER = logging.getLogger(__name__)

# Present in every FLUX.2 transformer in the original layout (diffusers detects FLUX.2 by it too).
_SIGNATURE = "single_stream_modulation.lin.weight"
_FOREIGN_PREFIX = "model.diffusion_model."
_FP8 = "F8_E4M3"


class Layout(enum.Enum):
    """How the weights in a single file are stored."""

    # bf16/fp16/fp32, or FP8 without scales: loads as is; FP8 storage is kept by layerwise casting on a GPU.
    PLAIN = "plain"
    # FP8 weights with an fp32 per-row `weight_scale` [N]: diffusers' BFL "fp8r" quantizer keeps them FP8.
    FP8_PER_ROW = "fp8_per_row"


@dataclass(frozen=True)
class LayoutReport:
    """What inspecting a file found."""

    layout: Layout
    fp8_tensors: int
    scaled_tensors: int


class UnknownLayoutError(ValueError):
    """The file is not a layout this loader knows how to read faithfully."""


def inspect_layout(path: Path) -> LayoutReport:
    """Reads only the header: key names, dtypes and scale shapes decide the layout or refuse it."""
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        if any(key.startswith(_FOREIGN_PREFIX) for key in keys):
            raise UnknownLayoutError(f"keys carry the {_FOREIGN_PREFIX!r} prefix (a ComfyUI export), not BFL layout")
        if _SIGNATURE not in keys:
            raise UnknownLayoutError("it is not a FLUX.2 transformer in the original BFL key layout")
        dtypes = {key: handle.get_slice(key).get_dtype() for key in keys}
        odd = sorted({d for d in dtypes.values() if d not in {_FP8, "BF16", "F16", "F32"}})
        if odd:
            raise UnknownLayoutError(f"it stores tensors as {', '.join(odd)} (packed or integer quantization)")
        extra_scales = [k for k in keys if k.endswith(("input_scale", "weight_scale_2", "scale_weight"))]
        if extra_scales:
            raise UnknownLayoutError(f"it has activation or two-level scales ({extra_scales[0]}, ...)")
        scales = [k for k in keys if k.endswith(".weight_scale")]
        for scale_key in scales:
            weight_key = scale_key.removesuffix("_scale")
            scale_shape = handle.get_slice(scale_key).get_shape()
            weight_shape = handle.get_slice(weight_key).get_shape() if weight_key in dtypes else None
            if weight_shape is None or dtypes[weight_key] != _FP8:
                raise UnknownLayoutError(f"{scale_key} does not scale an FP8 weight")
            if list(scale_shape) != [weight_shape[0]]:
                raise UnknownLayoutError(
                    f"{scale_key} has shape {list(scale_shape)}; only per-row scales [{weight_shape[0]}] are known"
                )
    fp8 = sum(1 for d in dtypes.values() if d == _FP8)
    layout = Layout.FP8_PER_ROW if scales else Layout.PLAIN
    return LayoutReport(layout, fp8_tensors=fp8, scaled_tensors=len(scales))


def load_transformer(
    file: Path, pipeline_dir: Path, *, dtype: torch.dtype, device: torch.device | None, model_id: str = ""
) -> torch.nn.Module:
    """The transformer in `file`, configured from `pipeline_dir/transformer` so nothing is fetched."""
    try:
        report = inspect_layout(file)
    except UnknownLayoutError as error:
        raise ModelLoadError(model_id or file.name, f"unknown single-file layout: {error}") from None
    kwargs: dict[str, Any] = {"config": str(pipeline_dir), "subfolder": "transformer", "dtype": dtype}
    if device is not None:
        kwargs["device"] = str(device)
    if report.layout is Layout.FP8_PER_ROW:
        kwargs["quantization_config"] = BFLQuantizationConfig(compute_dtype=dtype)
    transformer: Any = Flux2Transformer2DModel.from_single_file(str(file), **kwargs)
    if report.layout is Layout.PLAIN and report.fp8_tensors and device is not None and device.type == "cuda":
        # Keep the weights FP8 in memory and upcast one layer at a time for compute.
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    _LOGGER.info(
        "single-file transformer %s: %s layout, %d FP8 tensors, %d scaled",
        file.name,
        report.layout.value,
        report.fp8_tensors,
        report.scaled_tensors,
    )
    loaded: torch.nn.Module = transformer
    return loaded
