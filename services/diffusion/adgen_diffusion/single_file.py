# mypy: disallow-untyped-calls=False
"""Loading a FLUX.2 transformer from one original-layout (BFL) safetensors file, keeping FP8 where it can."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from diffusers import BFLQuantizationConfig, Flux2Transformer2DModel
from safetensors import safe_open

from adgen_diffusion.errors import ModelLoadError

_LOGGER = logging.getLogger(__name__)

# Present in every FLUX.2 transformer in the original layout (diffusers detects FLUX.2 by it too).
_SIGNATURE = "single_stream_modulation.lin.weight"
_FOREIGN_PREFIX = "model.diffusion_model."
_FP8 = "F8_E4M3"
_BYTES = {_FP8: 1, "BF16": 2, "F16": 2, "F32": 4}
_WEIGHT_SCALE = ".weight_scale"
_INPUT_SCALE = ".input_scale"
# Scale keys of other schemes: NVFP4's global scale, ComfyUI's scaled-FP8 keys.
_TWO_LEVEL = (".weight_scale_2",)
_COMFY_SCALES = (".scale_weight", ".scale_input")


class Layout(enum.Enum):
    """How the weights in a single file are stored."""

    # bf16/fp16/fp32, or FP8 without scales: loads as is; FP8 storage is kept by layerwise casting on a GPU.
    PLAIN = "plain"
    # FP8 weights with an fp32 per-row `weight_scale` [N]: diffusers' BFL "fp8r" quantizer keeps them FP8.
    FP8_PER_ROW = "fp8_per_row"
    # FP8 weights with a 0-d `weight_scale` and a 0-d `input_scale`, as other loaders describe BFL's own FP8 file:
    # loaded through the fp8r quantizer after expanding each scale to [N] and dropping the activation scales.
    FP8_PER_TENSOR = "fp8_per_tensor"


@dataclass(frozen=True)
class LayoutReport:
    """What inspecting a file found."""

    layout: Layout
    fp8_tensors: int
    scaled_tensors: int
    # Activation scales in the file; loading drops them (fp8r quantizes activations on the fly).
    input_scales: int = 0
    # Bytes of the largest tensor: the host memory the device read path holds at once.
    largest_tensor_bytes: int = 0


class UnknownLayoutError(ValueError):
    """The file is not a layout this loader knows how to read faithfully."""


class _Entry(NamedTuple):
    dtype: str
    shape: list[int]


def _read_header(path: Path) -> dict[str, _Entry]:
    header: dict[str, _Entry] = {}
    with safe_open(str(path), framework="pt") as handle:
        keys = handle.keys()
        for key in keys:
            entry = handle.get_slice(key)
            header[key] = _Entry(entry.get_dtype(), list(entry.get_shape()))
    return header


def _check_identity(header: dict[str, _Entry]) -> None:
    if any(key.startswith(_FOREIGN_PREFIX) for key in header):
        raise UnknownLayoutError(f"keys carry the {_FOREIGN_PREFIX!r} prefix (a ComfyUI export), not BFL layout")
    if _SIGNATURE not in header:
        raise UnknownLayoutError(f"it is not a FLUX.2 transformer in the original BFL key layout (no {_SIGNATURE})")


def _check_dtypes(header: dict[str, _Entry]) -> None:
    odd = sorted((entry.dtype, key) for key, entry in header.items() if entry.dtype not in _BYTES)
    if odd:
        names = ", ".join(sorted({dtype for dtype, _ in odd}))
        raise UnknownLayoutError(f"it stores tensors as {names} (packed or integer quantization), e.g. {odd[0][1]}")


def _check_scale_keys(header: dict[str, _Entry]) -> None:
    for suffixes, what in ((_TWO_LEVEL, "two-level (NVFP4-style) scales"), (_COMFY_SCALES, "ComfyUI scaled-FP8 keys")):
        found = sorted(key for key in header if key.endswith(suffixes))
        if found:
            raise UnknownLayoutError(f"it has {what} ({found[0]}, {len(found)} in all)")
    known = (_WEIGHT_SCALE, _INPUT_SCALE)
    unknown = sorted(key for key in header if key.endswith("_scale") and not key.endswith(known))
    if unknown:
        raise UnknownLayoutError(f"it has scale tensors of an unknown scheme ({unknown[0]}, {len(unknown)} in all)")


def _weight_scale_kind(key: str, header: dict[str, _Entry]) -> Layout:
    """FP8_PER_TENSOR or FP8_PER_ROW for one `weight_scale`, or a refusal naming what was found."""
    scale = header[key]
    weight = header.get(key.removesuffix("_scale"))
    if weight is None or weight.dtype != _FP8 or len(weight.shape) != 2:
        found = "no weight" if weight is None else f"a {weight.dtype} weight of shape {weight.shape}"
        raise UnknownLayoutError(f"{key} does not scale a 2-D FP8 weight (found {found})")
    if scale.dtype == _FP8:
        raise UnknownLayoutError(f"{key} is stored as {_FP8}; only float scales are known (FP8 block scales are not)")
    if scale.shape == []:
        return Layout.FP8_PER_TENSOR
    if scale.shape == [weight.shape[0]]:
        return Layout.FP8_PER_ROW
    raise UnknownLayoutError(
        f"{key} has shape {scale.shape}; only per-tensor [] or per-row [{weight.shape[0]}] scales are known"
    )


def _check_input_scales(header: dict[str, _Entry]) -> int:
    inputs = sorted(key for key in header if key.endswith(_INPUT_SCALE))
    for key in inputs:
        stem = key.removesuffix(_INPUT_SCALE)
        if stem + _WEIGHT_SCALE not in header:
            raise UnknownLayoutError(f"{key} has no {stem}{_WEIGHT_SCALE} beside it (an activation scale alone)")
        if header[key].shape != []:
            raise UnknownLayoutError(
                f"{key} has shape {header[key].shape}; only a per-tensor [] activation scale is known"
            )
    return len(inputs)


def _scaled_layout(header: dict[str, _Entry], scales: list[str]) -> Layout:
    kinds = [_weight_scale_kind(key, header) for key in scales]
    per_tensor = kinds.count(Layout.FP8_PER_TENSOR)
    if per_tensor and per_tensor != len(kinds):
        raise UnknownLayoutError(f"it mixes per-tensor ({per_tensor}) and per-row ({len(kinds) - per_tensor}) scales")
    scaled = {key.removesuffix("_scale") for key in scales}
    unscaled = sorted(key for key, entry in header.items() if entry.dtype == _FP8 and key not in scaled)
    if unscaled:
        # The quantizer would load those FP8 tensors into plain layers unscaled: refuse rather than guess.
        raise UnknownLayoutError(
            f"{len(unscaled)} FP8 tensors have no weight_scale while others do (e.g. {unscaled[0]})"
        )
    return kinds[0]


def inspect_layout(path: Path) -> LayoutReport:
    """Reads only the header: key names, dtypes and scale shapes decide the layout or refuse it."""
    header = _read_header(path)
    _check_identity(header)
    _check_dtypes(header)
    _check_scale_keys(header)
    input_scales = _check_input_scales(header)
    scales = sorted(key for key in header if key.endswith(_WEIGHT_SCALE))
    layout = _scaled_layout(header, scales) if scales else Layout.PLAIN
    largest = max(_BYTES[entry.dtype] * _numel(entry.shape) for entry in header.values())
    return LayoutReport(
        layout,
        fp8_tensors=sum(1 for entry in header.values() if entry.dtype == _FP8),
        scaled_tensors=len(scales),
        input_scales=input_scales,
        largest_tensor_bytes=largest,
    )


def _numel(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _read_device(device: torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    if device.type == "cuda" and device.index is None:
        # safetensors places tensors on one explicit device.
        return torch.device("cuda", torch.cuda.current_device())
    return device


def read_state_dict(file: Path, layout: Layout, *, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """The file's tensors read one by one straight onto `device`, ready for the fp8r quantizer or a plain load.

    Per-tensor scales become per-row [N] (the same value per row), `input_scale`s are dropped, FP8 weights of a
    scaled layout stay FP8, every other float tensor is cast to `dtype` as it is read (on `device`).

    Host memory: safetensors maps the file and each tensor aliases the mapping (reclaimable page cache, not
    anonymous memory). On a GPU each tensor is copied from the mapping to the device, so anonymous host memory
    peaks at about one tensor (`LayoutReport.largest_tensor_bytes`, bounded above) and the whole state dict lives
    on the device: device memory is the loaded model (the file size for FP8 layouts), since the model's
    parameters alias these tensors; a cast tensor briefly holds its source beside it. On CPU the model itself
    is host memory: tensors kept in their stored dtype stay file-backed pages, cast ones are anonymous.
    """
    keep_fp8 = layout is not Layout.PLAIN
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(file), framework="pt", device=str(device)) as handle:
        keys = handle.keys()
        for key in keys:
            if key.endswith(_INPUT_SCALE):
                # fp8r quantizes activations per row on the fly; a static activation scale has no use there.
                continue
            tensor = handle.get_tensor(key)
            if key.endswith(_WEIGHT_SCALE):
                rows = handle.get_slice(key.removesuffix("_scale")).get_shape()[0]
                tensor = tensor.float().reshape(-1).expand(rows).clone() if tensor.ndim == 0 else tensor.float()
            elif tensor.is_floating_point() and not (keep_fp8 and tensor.dtype == torch.float8_e4m3fn):
                tensor = tensor.to(dtype)
            state[key] = tensor
    return state


def load_transformer(
    file: Path, pipeline_dir: Path, *, dtype: torch.dtype, device: torch.device | None, model_id: str = ""
) -> torch.nn.Module:
    """The transformer in `file`, configured from `pipeline_dir/transformer` so nothing is fetched.

    Scaled FP8 layouts load as diffusers' `BFLFP8RLinear` layers: E4M3 weights plus fp32 per-row scales in
    memory (about the file's size), computed in `dtype`. See `read_state_dict` for the memory the read takes.
    """
    try:
        report = inspect_layout(file)
    except UnknownLayoutError as error:
        raise ModelLoadError(model_id or file.name, f"unknown single-file layout: {error}") from None
    target = _read_device(device)
    kwargs: dict[str, Any] = {
        "config": str(pipeline_dir),
        "subfolder": "transformer",
        "dtype": dtype,
        "device": str(target),
    }
    if report.layout is not Layout.PLAIN:
        kwargs["quantization_config"] = BFLQuantizationConfig(compute_dtype=dtype)
    state = read_state_dict(file, report.layout, dtype=dtype, device=target)
    transformer: Any = Flux2Transformer2DModel.from_single_file(state, **kwargs)
    del state
    if report.layout is Layout.PLAIN and report.fp8_tensors and target.type == "cuda":
        # Keep the weights FP8 in memory and upcast one layer at a time for compute.
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    _LOGGER.info(
        "single-file transformer %s: %s layout, %d FP8 tensors, %d scaled, %d input scales dropped",
        file.name,
        report.layout.value,
        report.fp8_tensors,
        report.scaled_tensors,
        report.input_scales,
    )
    loaded: torch.nn.Module = transformer
    return loaded
