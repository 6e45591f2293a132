"""Carries out a memory plan on a weights location: one pipeline, each component placed as the plan says."""

# mypy: disallow-untyped-calls=False

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from diffusers.quantizers.pipe_quant_config import PipelineQuantizationConfig

from adgen_diffusion.errors import ModelLoadError, PlacementUnsupportedError
from adgen_diffusion.families import family_of
from adgen_diffusion.memory import release_device_memory
from adgen_diffusion.planner import ComponentPlan, Plan, Residency
from adgen_diffusion.registry import LoraSpec, ModelEntry, Quantization
from adgen_diffusion.single_file import load_transformer
from adgen_diffusion.weights import WeightsLocation

_LOGGER = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Name of the one adapter a LoRA entry loads.
_LORA_ADAPTER = "adgen"
# AutoencoderKL-style VAEs tile at their sample_size (1024), which saves nothing at 1024²; half of it does.
_KL_TILE_SIDE = 512


@dataclass
class ReleasedTextEncoder:
    """A text encoder read onto the device before each job and freed before the transformer's first step."""

    pipeline: Any
    device: torch.device
    directory: Path
    class_name: str
    load_kwargs: dict[str, Any]
    module: torch.nn.Module | None = None

    def attach(self) -> None:
        """Reads the encoder (streamed from its safetensors) and hands it to the pipeline for this job."""
        if self.module is None:
            model_class = getattr(transformers, self.class_name)
            self.module = model_class.from_pretrained(str(self.directory), **self.load_kwargs)
        self.pipeline.text_encoder = self.module

    def release(self, *_: Any) -> None:
        """Drops the encoder so its memory is free before denoising (a transformer forward pre-hook)."""
        if self.module is None:
            return
        self.pipeline.text_encoder = None
        self.module = None
        release_device_memory(self.device)


@dataclass
class LoadedPipeline:
    """A pipeline placed per its plan, and what tearing it down must also remove."""

    pipeline: Any
    plan: Plan
    released_encoder: ReleasedTextEncoder | None = None
    # Group offload files of a transformer streamed from disk; removed on unload.
    offload_dir: Path | None = None
    hooks: list[Any] = field(default_factory=list)

    def modules(self) -> list[torch.nn.Module]:
        found = [m for m in self.pipeline.components.values() if isinstance(m, torch.nn.Module)]
        if self.released_encoder is not None and self.released_encoder.module is not None:
            found.append(self.released_encoder.module)
        return found

    def set_tiling(self, tiled: bool) -> None:
        vae = getattr(self.pipeline, "vae", None)
        if vae is None:
            return
        if tiled:
            vae.enable_tiling()
            if hasattr(vae, "tile_sample_min_size"):
                vae.tile_sample_min_size = min(vae.tile_sample_min_size, _KL_TILE_SIDE)
                vae.tile_latent_min_size = vae.tile_sample_min_size // 8
        else:
            vae.disable_tiling()

    def teardown(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()
        if self.released_encoder is not None:
            self.released_encoder.module = None
        if self.offload_dir is not None:
            shutil.rmtree(self.offload_dir, ignore_errors=True)


class PipelineLoader:
    """Loads an entry's pipeline from a location under a plan, on one device."""

    def __init__(self, device: torch.device, scratch_dir: Path | None = None) -> None:
        self.device = device
        self.scratch_dir = scratch_dir

    @property
    def on_accelerator(self) -> bool:
        return self.device.type == "cuda"

    def load(self, entry: ModelEntry, plan: Plan, location: WeightsLocation) -> LoadedPipeline:
        self.check(entry, plan)
        family = family_of(entry.family)
        # CPU runs only serve tiny twins: float32, since bf16 matmuls on a CPU are slow and gain nothing.
        dtype = _DTYPES[entry.dtype] if self.on_accelerator else torch.float32
        kwargs = {**self._component_kwargs(entry, plan, location, dtype), **family.load_kwargs(location.pipeline_dir)}
        pipeline = getattr(diffusers, family.pipeline_class).from_pretrained(location.pipeline_dir, **kwargs)
        loaded = LoadedPipeline(pipeline, plan)
        try:
            self._finish(entry, loaded, location, dtype)
        except BaseException:
            loaded.teardown()
            raise
        return loaded

    def _component_kwargs(
        self, entry: ModelEntry, plan: Plan, location: WeightsLocation, dtype: torch.dtype
    ) -> dict[str, Any]:
        """from_pretrained's arguments for the plan: device map, on-load quantization, components loaded apart."""
        transformer, encoder = plan.component("transformer"), plan.component("text_encoder")
        streamed = transformer.residency is Residency.STREAMED
        offloaded = transformer.residency is Residency.HOST
        kwargs: dict[str, Any] = {"dtype": dtype}
        if self.on_accelerator and not offloaded:
            if self.device.index is not None:
                torch.cuda.set_device(self.device)
            # Stream each tensor straight to the device: no full host copy, no host dtype conversion.
            kwargs["device_map"] = "cuda"
        quantized = {c.name: _quantization_config(c, dtype) for c in (transformer, encoder) if _on_load(c)}
        if encoder.residency is Residency.RELEASED:
            kwargs["text_encoder"] = None
            quantized.pop("text_encoder", None)
        if quantized:
            kwargs["quantization_config"] = PipelineQuantizationConfig(quant_mapping=quantized)
        if location.single_file is not None:
            on_device = self.device if self.on_accelerator and not (streamed or offloaded) else None
            kwargs["transformer"] = load_transformer(
                location.single_file, location.pipeline_dir, dtype=dtype, device=on_device, model_id=entry.id
            )
        elif streamed:
            # Loaded apart, on the host side of the group offload: the other components still stream to the device.
            transformer_class = getattr(diffusers, _component_class(location.pipeline_dir, "transformer"))
            kwargs["transformer"] = transformer_class.from_pretrained(
                location.pipeline_dir, subfolder="transformer", dtype=dtype
            )
        return kwargs

    def _finish(self, entry: ModelEntry, loaded: LoadedPipeline, location: WeightsLocation, dtype: torch.dtype) -> None:
        pipeline, plan = loaded.pipeline, loaded.plan
        if entry.lora is not None:
            assert location.lora_file is not None
            _apply_lora(
                pipeline, entry.id, entry.lora, location.lora_file, fuse=entry.lora.fuse and not plan.lora_unfused
            )
        transformer, encoder = plan.component("transformer"), plan.component("text_encoder")
        if transformer.residency is Residency.HOST:
            pipeline.enable_model_cpu_offload(device=self.device)
        elif transformer.residency is Residency.STREAMED:
            loaded.offload_dir = Path(tempfile.mkdtemp(prefix=f"adgen-{entry.id}-", dir=self.scratch_dir))
            pipeline.transformer.enable_group_offload(
                onload_device=self.device,
                offload_device=torch.device("cpu"),
                offload_type="block_level",
                num_blocks_per_group=1,
                use_stream=self.on_accelerator,
                offload_to_disk_path=str(loaded.offload_dir),
            )
        if encoder.residency is Residency.RELEASED:
            loaded.released_encoder = self._released_encoder(entry, pipeline, encoder, location, dtype)
            # Freed the moment denoising starts: every pipeline encodes (CFG included) before its first step.
            loaded.hooks.append(pipeline.transformer.register_forward_pre_hook(loaded.released_encoder.release))
        loaded.set_tiling(plan.component("vae").tiling)
        pipeline.set_progress_bar_config(disable=True)

    def _released_encoder(
        self, entry: ModelEntry, pipeline: Any, plan: ComponentPlan, location: WeightsLocation, dtype: torch.dtype
    ) -> ReleasedTextEncoder:
        class_name = _component_class(location.pipeline_dir, "text_encoder")
        kwargs: dict[str, Any] = {"dtype": dtype}
        if self.on_accelerator:
            kwargs["device_map"] = str(self.device)
        if _on_load(plan):
            kwargs["quantization_config"] = _quantization_config(plan, dtype, library="transformers")
        return ReleasedTextEncoder(pipeline, self.device, location.pipeline_dir / "text_encoder", class_name, kwargs)

    def check(self, entry: ModelEntry, plan: Plan) -> None:
        """PlacementUnsupportedError when this device cannot carry out `plan` (checked before anything unloads)."""
        if self.on_accelerator:
            return
        for component in plan.components:
            if component.residency is Residency.HOST:
                raise PlacementUnsupportedError(entry.id, "model offload", str(self.device))
            # bitsandbytes needs CUDA even for stored NF4; torchao float8 needs FP8 tensor cores (BFL's fp8r does not).
            needs_cuda = component.quantization is Quantization.NF4 or (
                component.quantization is Quantization.FLOAT8 and not component.prequantized
            )
            if needs_cuda:
                raise PlacementUnsupportedError(entry.id, f"{component.name} {component.storage}", str(self.device))


def _component_class(pipeline_dir: Path, component: str) -> str:
    """The class model_index.json names for a component."""
    index = json.loads((pipeline_dir / "model_index.json").read_text())
    _, class_name = index[component]
    return str(class_name)


def _on_load(component: ComponentPlan) -> bool:
    """Quantized while loading (not stored that way)."""
    return component.quantization is not Quantization.NONE and not component.prequantized


def _quantization_config(component: ComponentPlan, dtype: torch.dtype, library: str = "") -> Any:
    """The quantizer config of a component's on-load quantization, for its own library."""
    library = library or ("transformers" if component.name == "text_encoder" else "diffusers")
    module = transformers if library == "transformers" else diffusers
    if component.quantization is Quantization.NF4:
        return module.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    scheme = Float8WeightOnlyConfig() if component.quantization is Quantization.FLOAT8 else Int8WeightOnlyConfig()
    return module.TorchAoConfig(scheme)


def _apply_lora(pipeline: Any, model_id: str, lora: LoraSpec, lora_file: Path, *, fuse: bool) -> None:
    """Loads the LoRA into the transformer, fuses it (or keeps it as an adapter), then swaps in its scheduler."""
    if importlib.util.find_spec("peft") is None:
        raise ModelLoadError(model_id, "applying its LoRA needs the peft package, which is not installed")
    pipeline.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name, adapter_name=_LORA_ADAPTER)
    # diffusers only warns when no key matches the transformer; serving the bare base model would be wrong.
    if _LORA_ADAPTER not in pipeline.get_list_adapters().get("transformer", []):
        raise ModelLoadError(model_id, f"its LoRA {lora.weight_name} matched no layer of the transformer")
    if fuse:
        pipeline.fuse_lora(components=["transformer"], lora_scale=lora.scale)
        # Fused weights stay; the PEFT wrapper modules (and their A/B copies) go.
        pipeline.unload_lora_weights()
    elif lora.scale != 1.0:
        pipeline.set_adapters([_LORA_ADAPTER], adapter_weights=[lora.scale])
    if lora.scheduler:
        pipeline.scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config, **dict(lora.scheduler))


def _clear_method_caches(module_type: type) -> None:
    """Empties lru_caches on the class's methods: diffusers caches RoPE tables per `self` (QwenEmbedRope),
    which would keep each unloaded model's RoPE module and tables alive for good."""
    for attribute in vars(module_type).values():
        # diffusers' lru_cache_unless_export hides the cache inside a wrapper's closure.
        candidates = [attribute, *(_cell_contents(cell) for cell in getattr(attribute, "__closure__", None) or ())]
        for candidate in candidates:
            clear = getattr(candidate, "cache_clear", None)
            if callable(clear):
                clear()


def _cell_contents(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


def remove_pipeline_hooks(pipeline: Any) -> int:
    """Removes offload hooks: accelerate's (model offload) and diffusers' own (group offload).

    `remove_all_hooks` only knows accelerate's; group offloading's hooks would otherwise keep wrapping forwards
    (and their module groups) until the garbage collector breaks the cycles. Returns how many were removed.
    """
    remove_accelerate_hooks = getattr(pipeline, "remove_all_hooks", None)
    if callable(remove_accelerate_hooks):
        remove_accelerate_hooks()
    removed = 0
    for component in getattr(pipeline, "components", {}).values():
        if not isinstance(component, torch.nn.Module):
            continue
        for module in component.modules():
            _clear_method_caches(type(module))
            registry = getattr(module, "_diffusers_hook", None)
            if registry is None:
                continue
            for name in list(registry.hooks):
                registry.remove_hook(name, recurse=False)
                removed += 1
    return removed
