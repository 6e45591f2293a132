# mypy: disallow-untyped-calls=False
"""Random-weight pipelines at the real models' sizes, written shard by shard into a Hugging Face cache layout."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLFlux2,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    Flux2Transformer2DModel,
    ZImagePipeline,
    ZImageTransformer2DModel,
)
from safetensors.torch import save_file
from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

from adgen_diffusion.tiny import byte_tokenizer

_LOGGER = logging.getLogger(__name__)

# Bump when a config below changes, so stale sets are rebuilt instead of reused.
BUILD_VERSION = "1"
MARKER_NAME = ".adgen-bench-gpu.json"
# Any 40-hex commit: the cache layout needs one, nothing checks it.
FAKE_COMMIT = "0" * 39 + "1"
# Real checkpoints ship bf16; small scale keeps that, so the CPU run converts like production CPU would.
STORED_DTYPE = torch.bfloat16
_INIT_STD = 0.02


@dataclass(frozen=True)
class Scale:
    """Dimensions of one build: `full` is the real models', `small` the same code divided down for CPU."""

    name: str
    qwen: dict[str, Any]
    flux2: dict[str, Any]
    flux2_vae: dict[str, Any]
    zimage: dict[str, Any]
    zimage_vae: dict[str, Any]
    # Largest safetensors shard written at once: bounds the builder's host RAM.
    shard_bytes: int


_VAE_BLOCKS = {"down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}
# Z-Image's VAE is FLUX.1's: 16 latent channels, no quant convs.
_ZIMAGE_VAE_FIXED = {
    **_VAE_BLOCKS,
    "latent_channels": 16,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "sample_size": 1024,
}

SCALES: dict[str, Scale] = {
    # FLUX.2 klein 4B (5 double + 20 single blocks, 24x128 heads, text dim 3x2560), Qwen3-4B, the FLUX.2 VAE;
    # Z-Image-Turbo (the diffusers defaults are its config: 3840 wide, 30 layers) with Qwen3-4B and FLUX.1's VAE.
    "full": Scale(
        name="full",
        qwen={
            "vocab_size": 151936,
            "hidden_size": 2560,
            "intermediate_size": 9728,
            "num_hidden_layers": 36,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 40960,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
        },
        flux2={
            "num_layers": 5,
            "num_single_layers": 20,
            "attention_head_dim": 128,
            "num_attention_heads": 24,
            "axes_dims_rope": (32, 32, 32, 32),
        },
        flux2_vae={},
        zimage={},
        zimage_vae={"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32},
        shard_bytes=4 * 1024**3,
    ),
    # Same layer kinds and the 36-layer encoder (klein reads its layers 9/18/27), everything narrow.
    "small": Scale(
        name="small",
        qwen={
            "vocab_size": 512,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 36,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "max_position_embeddings": 1024,
        },
        flux2={
            "num_layers": 1,
            "num_single_layers": 2,
            "attention_head_dim": 32,
            "num_attention_heads": 2,
            "axes_dims_rope": (8, 8, 8, 8),
        },
        flux2_vae={"block_out_channels": (8, 8, 8, 8), "layers_per_block": 1, "norm_num_groups": 4},
        zimage={
            "dim": 64,
            "n_layers": 2,
            "n_refiner_layers": 1,
            "n_heads": 2,
            "n_kv_heads": 2,
            "axes_dims": [8, 12, 12],
            "axes_lens": [1024, 512, 512],
        },
        zimage_vae={"block_out_channels": [8, 8, 8, 8], "layers_per_block": 1, "norm_num_groups": 4},
        # Small enough that the text encoder still spans several shards and an index file.
        shard_bytes=256 * 1024,
    ),
}


@dataclass(frozen=True)
class ModelSet:
    """A registry id and the Hugging Face repo whose cache entry stands in for it."""

    model_id: str
    repo: str
    build: Callable[[Scale], Any]


def _token_id(tokenizer: Any, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(token_id, int)
    return token_id


def _qwen3(model_class: type[Any], scale: Scale) -> Any:
    tokenizer = byte_tokenizer()
    config = Qwen3Config(
        **scale.qwen,
        tie_word_embeddings=True,
        bos_token_id=_token_id(tokenizer, "<|endoftext|>"),
        eos_token_id=_token_id(tokenizer, "<|im_end|>"),
        pad_token_id=_token_id(tokenizer, "<|endoftext|>"),
    )
    return model_class(config)


def build_flux2_klein(scale: Scale) -> Any:
    """FLUX.2 klein 4B's pipeline on the meta device: every shape real (at full scale), no storage."""
    with torch.device("meta"):
        text_encoder = _qwen3(Qwen3ForCausalLM, scale)
        transformer = Flux2Transformer2DModel(
            patch_size=1,
            in_channels=128,
            # klein conditions on three of the encoder's hidden states, concatenated.
            joint_attention_dim=3 * scale.qwen["hidden_size"],
            timestep_guidance_channels=256,
            guidance_embeds=False,
            mlp_ratio=3.0,
            **scale.flux2,
        )
        vae = AutoencoderKLFlux2(**scale.flux2_vae)
    return Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=byte_tokenizer(),
        transformer=transformer,
        is_distilled=True,
    )


def build_z_image(scale: Scale) -> Any:
    """Z-Image-Turbo's pipeline on the meta device."""
    with torch.device("meta"):
        text_encoder = _qwen3(Qwen3Model, scale)
        transformer = ZImageTransformer2DModel(cap_feat_dim=scale.qwen["hidden_size"], **scale.zimage)
        vae = AutoencoderKL(**_ZIMAGE_VAE_FIXED, **scale.zimage_vae)
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=byte_tokenizer(),
        transformer=transformer,
    )


MODEL_SETS: dict[str, ModelSet] = {
    "flux2-klein-4b": ModelSet("flux2-klein-4b", "black-forest-labs/FLUX.2-klein-4B", build_flux2_klein),
    "z-image-turbo": ModelSet("z-image-turbo", "Tongyi-MAI/Z-Image-Turbo", build_z_image),
}


def _unique_tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """State-dict entries with tied tensors once (the first name), as save_pretrained writes them."""
    seen: set[int] = set()
    unique = []
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            unique.append((name, tensor))
    return unique


def _stored_bytes(tensor: torch.Tensor) -> int:
    dtype = STORED_DTYPE if tensor.is_floating_point() else tensor.dtype
    return tensor.numel() * dtype.itemsize


def set_bytes(pipeline: Any) -> int:
    """Bytes the set's weights take on disk."""
    modules = [m for m in pipeline.components.values() if isinstance(m, torch.nn.Module)]
    return sum(_stored_bytes(t) for m in modules for _, t in _unique_tensors(m))


def _random_like(name: str, meta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random values shaped like `meta`: norms near 1, running variances 1, weights N(0, 0.02), never all zero."""
    if not meta.is_floating_point():
        return torch.zeros(meta.shape, dtype=meta.dtype)
    tensor = torch.empty(meta.shape, dtype=STORED_DTYPE)
    if name.endswith("running_var"):
        return tensor.fill_(1.0)
    tensor.normal_(0.0, _INIT_STD, generator=generator)
    # 1-D weights are norm scales: centred on 1 so activations keep their size through 36 layers.
    if meta.ndim == 1 and name.endswith("weight"):
        tensor.add_(1.0)
    return tensor


def _plan_shards(tensors: list[tuple[str, torch.Tensor]], shard_bytes: int) -> list[list[tuple[str, torch.Tensor]]]:
    shards: list[list[tuple[str, torch.Tensor]]] = [[]]
    size = 0
    for name, tensor in tensors:
        nbytes = _stored_bytes(tensor)
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, tensor))
        size += nbytes
    return shards


def write_random_weights(
    model: torch.nn.Module, directory: Path, stem: str, shard_bytes: int, generator: torch.Generator
) -> None:
    """Random weights for a meta-device model, one shard in memory at a time, in the library's file names."""
    shards = _plan_shards(_unique_tensors(model), shard_bytes)
    weight_map: dict[str, str] = {}
    for index, shard in enumerate(shards, start=1):
        file_name = (
            f"{stem}.safetensors" if len(shards) == 1 else f"{stem}-{index:05d}-of-{len(shards):05d}.safetensors"
        )
        state = {name: _random_like(name, meta, generator) for name, meta in shard}
        save_file(state, str(directory / file_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(state, file_name))
        del state
    if len(shards) > 1:
        total = sum(_stored_bytes(t) for shard in shards for _, t in shard)
        index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (directory / f"{stem}.safetensors.index.json").write_text(json.dumps(index_json, indent=2))


def _save_pipeline(pipeline: Any, directory: Path, shard_bytes: int, seed: int) -> None:
    """What save_pretrained writes, with each model's weights drawn at random shard by shard."""
    generator = torch.Generator().manual_seed(seed)
    pipeline.save_config(directory)
    for name, component in pipeline.components.items():
        target = directory / name
        target.mkdir(parents=True, exist_ok=True)
        if isinstance(component, torch.nn.Module):
            # diffusers models are ConfigMixins; transformers models keep a PreTrainedConfig on .config.
            model: Any = component
            is_diffusers = hasattr(model, "save_config")
            if is_diffusers:
                model.save_config(target)
            else:
                model.config.save_pretrained(target)
            stem = "diffusion_pytorch_model" if is_diffusers else "model"
            write_random_weights(component, target, stem, shard_bytes, generator)
        else:
            component.save_pretrained(target)


def cache_snapshot(hub_dir: Path, repo: str) -> Path:
    """Where huggingface_hub's cache keeps `repo` at revision main (our fake commit)."""
    return hub_dir / f"models--{repo.replace('/', '--')}" / "snapshots" / FAKE_COMMIT


def is_built(hub_dir: Path, model_set: ModelSet, scale: Scale) -> bool:
    marker = cache_snapshot(hub_dir, model_set.repo) / MARKER_NAME
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return bool(recorded == {"version": BUILD_VERSION, "scale": scale.name})


def build_set(hub_dir: Path, model_set: ModelSet, scale: Scale, seed: int = 0) -> Path:
    """Writes the set into the cache as revision main; staged, so a crash never leaves a set that looks whole."""
    snapshot = cache_snapshot(hub_dir, model_set.repo)
    if is_built(hub_dir, model_set, scale):
        return snapshot
    staging = snapshot.with_name(FAKE_COMMIT + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(snapshot, ignore_errors=True)
    staging.mkdir(parents=True)
    _save_pipeline(model_set.build(scale), staging, scale.shard_bytes, seed)
    (staging / MARKER_NAME).write_text(json.dumps({"version": BUILD_VERSION, "scale": scale.name}))
    staging.rename(snapshot)
    refs = snapshot.parent.parent / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text(FAKE_COMMIT)
    _LOGGER.info("built %s (%s scale) in %s", model_set.model_id, scale.name, snapshot)
    return snapshot


def weight_files(snapshot: Path) -> list[Path]:
    return sorted(snapshot.glob("*/*.safetensors"))
