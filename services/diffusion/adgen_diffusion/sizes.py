"""Exact per-component byte counts of the real models, built on the meta device from the kept configs."""

# mypy: disallow-untyped-calls=False

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from adgen_diffusion.bfl_layout import _quantizable as _fp8_in_file
from adgen_diffusion.bfl_layout import to_bfl_layout
from adgen_diffusion.kept_configs import KeptRepo, kept_repo

# Quantizer scales (bitsandbytes absmax, int8/fp8 row scales, the FP8 file's scalars) are fp32.
SCALE_BYTES = 4
FP8_CLASS = "Flux2Transformer2DModel"
# In diffusers naming, the tensors BFL's FP8 file stores as float8 (bfl_layout._quantizable in BFL naming).
_FP8_BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ComponentSize:
    """What one component occupies, counted per stored dtype; `parameters` counts every stored element once.

    `loaded` is set only where loading changes the layout: for the FP8 transformer this size is the file as
    stored (float8 block weights plus a 0-d fp32 `weight_scale` and `input_scale` each, the rest bf16) and
    `loaded` is what diffusers' BFL quantizer keeps (the same weights, one fp32 scale per row, no input_scale);
    both have no linear weights left for a weight-only quantizer, so their `quantized_bytes` is `total_bytes`.
    """

    name: str
    class_name: str
    parameters: int
    bytes_by_dtype: Mapping[str, int]
    linear_weight_parameters: int
    largest_tensor_bytes: int
    # Stored bytes of the linear weights a weight-only quantizer converts, and their (rows, columns).
    linear_weight_bytes: int = 0
    linear_weight_shapes: tuple[tuple[int, int], ...] = field(default=(), repr=False)
    loaded: ComponentSize | None = None

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_by_dtype.values())

    @property
    def loaded_bytes(self) -> int:
        """Bytes once in memory: `loaded` where loading changes the layout, else the stored total."""
        return (self.loaded or self).total_bytes

    def quantized_bytes(self, bits: int, *, block_size: int | None) -> int:
        """Linear weights at `bits` plus fp32 scales (one per block, or one per row when `block_size` is None)."""
        shapes = self.linear_weight_shapes
        quantized = sum(math.ceil(rows * cols * bits / 8) for rows, cols in shapes)
        scales = sum(rows if block_size is None else math.ceil(rows * cols / block_size) for rows, cols in shapes)
        return self.total_bytes - self.linear_weight_bytes + quantized + scales * SCALE_BYTES


@dataclass(frozen=True)
class _Built:
    """One component's checkpoint tensors on the meta device, as built (float32), shared tensors once."""

    class_name: str
    state: Tensors
    linear: frozenset[str]


class ModelSizer:
    """Meta-device sizes of the kept real repositories, computed once per repo and component, cached on the instance.

    Not locked: two threads sizing the same repo at once at worst both build it.
    """

    def __init__(self) -> None:
        # Keyed by the configs' folder too: a tiny twin's local configs may carry the real repo's name.
        self._built: dict[tuple[str, str], _Built] = {}
        self._sizes: dict[tuple[str, str, bool], dict[str, ComponentSize]] = {}

    def component_sizes(
        self, repo: str, revision: str = "main", *, stored_dtype: str = "bfloat16", fp8_transformer: bool = False
    ) -> dict[str, ComponentSize]:
        """Sizes of every weighted component of a kept real repository (see `sizes_of`)."""
        return self.sizes_of(kept_repo(repo, revision), stored_dtype=stored_dtype, fp8_transformer=fp8_transformer)

    def sizes_of(
        self, kept: KeptRepo, *, stored_dtype: str = "bfloat16", fp8_transformer: bool = False
    ) -> dict[str, ComponentSize]:
        """Sizes of every weighted component; floating tensors counted at `stored_dtype`, integer ones as built.

        `fp8_transformer` sizes the transformer as BFL's FP8 single file (see ComponentSize.loaded), whose wide
        tensors are bf16 whatever `stored_dtype` says.
        """
        key = (str(kept.root), stored_dtype, fp8_transformer)
        if key not in self._sizes:
            self._sizes[key] = self._measure_repo(kept, _dtype(stored_dtype), fp8_transformer)
        return dict(self._sizes[key])

    def _measure_repo(self, kept: KeptRepo, stored: torch.dtype, fp8_transformer: bool) -> dict[str, ComponentSize]:
        sizes: dict[str, ComponentSize] = {}
        for component in kept.weighted_components():
            built = self._component(kept, component)
            if component == "transformer" and fp8_transformer:
                sizes[component] = _fp8_size(component, built)
            else:
                sizes[component] = _measure(component, built.class_name, _cast(built.state, stored), built.linear)
        return sizes

    def _component(self, kept: KeptRepo, component: str) -> _Built:
        key = (str(kept.root), component)
        if key not in self._built:
            library, class_name = kept.weighted_components()[component]
            model = _build(library, class_name, kept.component_config(component))
            state = _checkpoint_tensors(model)
            linear_ids = {id(w) for w in _quantizable_linear_weights(model, library)}
            linear = frozenset(name for name, tensor in state.items() if id(tensor) in linear_ids)
            self._built[key] = _Built(class_name, state, linear)
        return self._built[key]


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{name!r} is not a floating torch dtype")
    return dtype


def _build(library: str, class_name: str, config: dict[str, Any]) -> nn.Module:
    # Imported here: diffusers and transformers take seconds to import and only sizing needs them.
    import diffusers
    import transformers

    # Meta tensors have shapes and dtypes but no storage, so even the 20 B transformer builds in well under a second.
    with torch.device("meta"):
        if library == "diffusers":
            model_class = getattr(diffusers, class_name)
            # from_config only reads __init__'s arguments; passing the rest (the kept Flux2 VAE's force_upcast)
            # only logs a warning per build.
            accepted = inspect.signature(model_class.__init__).parameters
            model: nn.Module = model_class.from_config({k: v for k, v in config.items() if k in accepted})
        elif library == "transformers":
            # The config class for `model_type` applies nested configs and defaults, tie_word_embeddings included.
            model = getattr(transformers, class_name)(transformers.AutoConfig.for_model(**config))
        else:
            raise ValueError(f"cannot size a {library} component ({class_name})")
    return model


def _checkpoint_tensors(model: nn.Module) -> Tensors:
    """Parameters and persistent buffers (what a checkpoint holds), each shared tensor under its first name."""
    # state_dict leaves out non-persistent buffers (rotary inv_freq); keep_vars keeps tied weights one object.
    state: Tensors = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            state[name] = tensor
    return state


def _quantizable_linear_weights(model: nn.Module, library: str) -> list[torch.Tensor]:
    """The nn.Linear weights bitsandbytes / torchao convert on load, with each library's own skip list."""
    if library == "transformers":
        from transformers.quantizers.base import get_keys_to_not_convert
        from transformers.quantizers.quantizers_utils import should_convert_module

        # transformers' quantizers skip the output embedding, tied weights, the last module and fp32 modules.
        skips = [*get_keys_to_not_convert(model), *(getattr(model, "_keep_in_fp32_modules", None) or [])]
        return [
            module.weight
            for name, module in model.named_modules()
            if type(module) is nn.Linear and should_convert_module(name, skips)
        ]
    # diffusers' quantizers convert every nn.Linear except the class's `_keep_in_fp32_modules` (no default skips;
    # `_skip_layerwise_casting_patterns` only concerns layerwise casting).
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    return [
        module.weight
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not any(key + "." in name or key == name for key in keep)
    ]


def _cast(state: Tensors, stored: torch.dtype) -> Tensors:
    # Checkpoints store floating tensors in one dtype; integer buffers (BatchNorm's num_batches_tracked) keep theirs.
    return {name: t.detach().to(stored) if t.is_floating_point() else t.detach() for name, t in state.items()}


def _measure(name: str, class_name: str, state: Tensors, linear: frozenset[str]) -> ComponentSize:
    by_dtype: dict[str, int] = {}
    for tensor in state.values():
        dtype = str(tensor.dtype).removeprefix("torch.")
        by_dtype[dtype] = by_dtype.get(dtype, 0) + _bytes(tensor)
    weights = [state[key] for key in sorted(linear)]
    return ComponentSize(
        name=name,
        class_name=class_name,
        parameters=sum(t.numel() for t in state.values()),
        bytes_by_dtype=by_dtype,
        linear_weight_parameters=sum(t.numel() for t in weights),
        largest_tensor_bytes=max((_bytes(t) for t in state.values()), default=0),
        linear_weight_bytes=sum(_bytes(t) for t in weights),
        linear_weight_shapes=tuple((t.shape[0], t.shape[1]) for t in weights),
    )


def _bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.dtype.itemsize


def _fp8_size(name: str, built: _Built) -> ComponentSize:
    """BFL's FP8 single file as stored, with the loaded fp8r layout under `loaded`; nothing left to quantize."""
    if built.class_name != FP8_CLASS:
        raise ValueError(f"the FP8 single file is a {FP8_CLASS}, not a {built.class_name}")
    wide = _cast(built.state, torch.bfloat16)
    loaded = _measure(name, built.class_name, _fp8_loaded(wide), frozenset())
    stored = _measure(name, built.class_name, _fp8_file(wide), frozenset())
    return replace(stored, loaded=loaded)


def _fp8_file(wide: Tensors) -> Tensors:
    # BFL keys (fused QKV: one scale pair per fused weight), each block linear with 0-d weight_scale and input_scale.
    out: Tensors = {}
    for key, tensor in to_bfl_layout(wide).items():
        if not _fp8_in_file(key, tensor):
            out[key] = tensor
            continue
        out[key] = tensor.to(torch.float8_e4m3fn)
        stem = key.removesuffix("weight")
        out[stem + "weight_scale"] = torch.empty((), dtype=torch.float32, device="meta")
        out[stem + "input_scale"] = torch.empty((), dtype=torch.float32, device="meta")
    return out


def _fp8_loaded(wide: Tensors) -> Tensors:
    # The loader expands each 0-d weight_scale to one per row and drops input_scale (fp8r scales activations live).
    out: Tensors = {}
    for key, tensor in wide.items():
        out[key] = tensor
        if key.startswith(_FP8_BLOCKS) and key.endswith(".weight") and tensor.ndim == 2:
            out[key] = tensor.to(torch.float8_e4m3fn)
            out[key.removesuffix("weight") + "weight_scale"] = torch.empty(
                tensor.shape[0], dtype=torch.float32, device="meta"
            )
    return out
