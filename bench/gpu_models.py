# mypy: disallow-untyped-calls=False
"""Random-weight sets of the real pipelines, built from the kept real configs, written into a Hugging Face cache.

`full` scale writes each component with the kept config as it is (the real classes, keys and dimensions, so
the real checkpoint's tensor names, shapes and bytes), `small` the same configs with widths and block counts
divided down so the same code runs on a CPU in seconds. Weights are random bf16, written shard by shard (one
shard in host RAM at a time) under <HF_HOME>/hub/models--org--name/snapshots/<commit>/, with refs/main
pointing at it, so DiffusionEngine (not tiny) finds the set with HF_HUB_OFFLINE=1 as it would the real one.

The tokenizer is a small byte-level Qwen2Tokenizer (the twins' one) over the real added tokens; the text
encoder keeps the real vocabulary size, so its embedding is real-sized and every id the tokenizer makes is
in range.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from adgen_diffusion.kept_configs import KeptRepo, kept_repo
from adgen_diffusion.twins import byte_tokenizer

_LOGGER = logging.getLogger(__name__)

# Bump when what is written changes, so stale sets are rebuilt instead of reused.
BUILD_VERSION = "2"
MARKER_NAME = ".adgen-bench-gpu.json"
# Any 40-hex commit: the cache layout needs one, nothing checks it.
FAKE_COMMIT = "0" * 39 + "2"
# Real checkpoints ship bf16.
STORED_DTYPE = torch.bfloat16
_INIT_STD = 0.02
# Random values are drawn once into a pool and tiled into every tensor from a random offset: drawing 10^10 normal
# values one by one takes minutes (torch's seeded normal_ runs on one core), copying them runs at memory speed.
_POOL_ELEMENTS = 1 << 24
GIB = 1024**3


@dataclass(frozen=True)
class Scale:
    """One build size: `full` keeps the kept configs as they are, `small` shrinks them for CPU."""

    name: str
    shrink: bool
    # Largest safetensors shard written at once: bounds the builder's host RAM.
    shard_bytes: int


SCALES: dict[str, Scale] = {
    "full": Scale("full", shrink=False, shard_bytes=4 * GIB),
    # Small enough that the text encoder still spans several shards and an index file.
    "small": Scale("small", shrink=True, shard_bytes=256 * 1024),
}


@dataclass(frozen=True)
class ModelSet:
    """A registry id and the repository whose cache entry stands in for it (the registry entry's repo)."""

    model_id: str
    repo: str


MODEL_SETS: dict[str, ModelSet] = {
    model_set.model_id: model_set
    for model_set in (
        ModelSet("flux2-klein-4b", "black-forest-labs/FLUX.2-klein-4B"),
        ModelSet("z-image-turbo", "Tongyi-MAI/Z-Image-Turbo"),
        # 34.8 GB: only when asked for (--models); with the two above it would not leave room on a 64 GiB disk.
        ModelSet("flux2-klein-9b", "black-forest-labs/FLUX.2-klein-9B"),
    )
}
DEFAULT_MODELS = ("flux2-klein-4b", "z-image-turbo")

# ----- shrinking the kept configs (small scale) -----

# The text encoders' width at small scale; widths that are multiples of the real text width follow it.
_SMALL_TEXT_WIDTH = 32
_SMALL_FLUX2_HEAD_DIM = 16
_SMALL_Z_IMAGE_HEAD_DIM = 32

Rule = Callable[[Any, int], Any]


def _text_multiple(real: int, real_text_width: int) -> int:
    """The same multiple of the text width (klein stacks three hidden states; Z-Image uses one)."""
    multiple, rest = divmod(real, real_text_width)
    assert rest == 0 and multiple > 0, f"{real} is not a multiple of the text width {real_text_width}"
    return multiple * _SMALL_TEXT_WIDTH


def _axes_summing_to(total: int) -> Rule:
    """Rope axes scaled to sum to `total` in the real proportions, each even (rotary pairs)."""

    def rule(real: list[int], _: int) -> list[int]:
        scaled = [axis * total // sum(real) for axis in real]
        assert sum(scaled) == total and all(a % 2 == 0 for a in scaled), f"{real} does not scale to {total}"
        return scaled

    return rule


def _channels_over(divisor: int) -> Rule:
    def rule(real: list[int], _: int) -> list[int]:
        assert all(c % divisor == 0 for c in real), f"{real} is not divisible by {divisor}"
        return [c // divisor for c in real]

    return rule


# The text encoders keep the real layer count (klein reads layers 9/18/27, Z-Image the second-to-last) and the
# real vocabulary; everything else narrow.
_QWEN3_SMALL: dict[str, Any] = {
    "hidden_size": _SMALL_TEXT_WIDTH,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
}
_KL_VAE_SMALL: dict[str, Any] = {"block_out_channels": _channels_over(32), "layers_per_block": 1, "norm_num_groups": 4}

# Class name → config key → small value, or a rule (real value, real text width) → small value.
SHRINK_RULES: dict[str, dict[str, Any]] = {
    "Qwen3ForCausalLM": _QWEN3_SMALL,
    "Qwen3Model": _QWEN3_SMALL,
    "Flux2Transformer2DModel": {
        "num_layers": 1,
        "num_single_layers": 2,
        "num_attention_heads": 2,
        "attention_head_dim": _SMALL_FLUX2_HEAD_DIM,
        "axes_dims_rope": _axes_summing_to(_SMALL_FLUX2_HEAD_DIM),
        "joint_attention_dim": _text_multiple,
    },
    "ZImageTransformer2DModel": {
        "dim": 2 * _SMALL_Z_IMAGE_HEAD_DIM,
        "n_heads": 2,
        "n_kv_heads": 2,
        "n_layers": 2,
        "n_refiner_layers": 1,
        "axes_dims": _axes_summing_to(_SMALL_Z_IMAGE_HEAD_DIM),
        "cap_feat_dim": _text_multiple,
    },
    "AutoencoderKLFlux2": _KL_VAE_SMALL,
    "AutoencoderKL": _KL_VAE_SMALL,
}


def shrink(class_name: str, config: Mapping[str, Any], real_text_width: int) -> dict[str, Any]:
    """A copy of `config` with the class's ruled keys replaced; a rule naming a missing key is a bug."""
    shrunk = copy.deepcopy(dict(config))
    for key, rule in SHRINK_RULES[class_name].items():
        if key not in shrunk:
            raise KeyError(f"shrink rule {class_name}.{key} names a key the kept config does not have")
        shrunk[key] = rule(shrunk[key], real_text_width) if callable(rule) else copy.deepcopy(rule)
    return shrunk


# ----- the set's configs and meta-device models -----


@dataclass(frozen=True)
class SetSpec:
    """Everything written for one set: the kept files (shrunk at small scale) and each weighted component."""

    model_set: ModelSet
    scale: Scale
    kept: KeptRepo
    # Weighted component → (library, class name, config as written).
    weighted: dict[str, tuple[str, str, dict[str, Any]]]


def set_spec(model_set: ModelSet, scale: Scale) -> SetSpec:
    kept = kept_repo(model_set.repo)
    weighted = kept.weighted_components()
    configs = {name: kept.component_config(name) for name in weighted}
    if scale.shrink:
        text_width = next(
            int(configs[name]["hidden_size"]) for name, (library, _) in weighted.items() if library == "transformers"
        )
        configs = {name: shrink(weighted[name][1], configs[name], text_width) for name in weighted}
    return SetSpec(
        model_set,
        scale,
        kept,
        {name: (library, class_name, configs[name]) for name, (library, class_name) in weighted.items()},
    )


def meta_model(library: str, class_name: str, config: Mapping[str, Any]) -> torch.nn.Module:
    """The component on the meta device: every shape real, no storage (as the planner's sizer builds it)."""
    import diffusers
    import transformers

    with torch.device("meta"):
        if library == "diffusers":
            model: torch.nn.Module = getattr(diffusers, class_name).from_config(dict(config))
        else:
            model = getattr(transformers, class_name)(transformers.AutoConfig.for_model(**config))
    return model


def checkpoint_tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Parameters and persistent buffers, tied tensors once under the first name (as save_pretrained writes)."""
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


def _components(spec: SetSpec) -> Iterator[tuple[str, str, dict[str, Any], torch.nn.Module]]:
    for name, (library, class_name, config) in spec.weighted.items():
        yield name, library, config, meta_model(library, class_name, config)


def set_bytes(spec: SetSpec) -> int:
    """Bytes the set's weights take on disk."""
    return sum(_stored_bytes(t) for _, _, _, model in _components(spec) for _, t in checkpoint_tensors(model))


# ----- random weights, shard by shard -----


class RandomFill:
    """Random tensors shaped like meta ones: N(0, 0.02) weights, norm scales near 1, running variances 1."""

    def __init__(self, seed: int) -> None:
        self._generator = torch.Generator().manual_seed(seed)
        self._pool = (torch.randn(_POOL_ELEMENTS, generator=self._generator) * _INIT_STD).to(STORED_DTYPE)

    def like(self, name: str, meta: torch.Tensor) -> torch.Tensor:
        if not meta.is_floating_point():
            return torch.zeros(meta.shape, dtype=meta.dtype)
        tensor = torch.empty(meta.shape, dtype=STORED_DTYPE)
        if name.endswith("running_var"):
            return tensor.fill_(1.0)
        flat = tensor.view(-1)
        start = int(torch.randint(0, _POOL_ELEMENTS, (), generator=self._generator))
        done = 0
        while done < flat.numel():
            count = min(flat.numel() - done, _POOL_ELEMENTS - start)
            flat[done : done + count].copy_(self._pool[start : start + count])
            done += count
            start = 0
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


def write_random_weights(model: torch.nn.Module, directory: Path, stem: str, shard_bytes: int, fill: RandomFill) -> int:
    """Random weights for a meta-device model in the library's file names, one shard in memory at a time."""
    tensors = checkpoint_tensors(model)
    shards = _plan_shards(tensors, shard_bytes)
    weight_map: dict[str, str] = {}
    for index, shard in enumerate(shards, start=1):
        single = len(shards) == 1
        file_name = f"{stem}.safetensors" if single else f"{stem}-{index:05d}-of-{len(shards):05d}.safetensors"
        state = {name: fill.like(name, meta) for name, meta in shard}
        save_file(state, str(directory / file_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(state, file_name))
        del state
    total = sum(_stored_bytes(t) for _, t in tensors)
    if len(shards) > 1:
        index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (directory / f"{stem}.safetensors.index.json").write_text(json.dumps(index_json, indent=2))
    return total


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def _write_set(spec: SetSpec, directory: Path, seed: int) -> None:
    """model_index, scheduler and component configs as kept (shrunk at small scale), tokenizer, random weights."""
    kept = spec.kept
    _write_json(directory / "model_index.json", kept.model_index())
    _write_json(directory / "scheduler" / "scheduler_config.json", kept.read("scheduler/scheduler_config.json"))
    byte_tokenizer(kept.read("tokenizer/tokenizer_config.json")).save_pretrained(directory / "tokenizer")
    fill = RandomFill(seed)
    for name, library, config, model in _components(spec):
        target = directory / name
        # The config as kept, not as this transformers/diffusers version would re-save it: the service parses it
        # exactly as it parses the real checkpoint's.
        _write_json(target / "config.json", config)
        stem = "diffusion_pytorch_model" if library == "diffusers" else "model"
        written = write_random_weights(model, target, stem, spec.scale.shard_bytes, fill)
        _LOGGER.info("wrote %s/%s: %.2f GB", spec.model_set.model_id, name, written / 1e9)


# ----- the cache layout -----


def cache_snapshot(hub_dir: Path, repo: str) -> Path:
    """Where huggingface_hub's cache keeps `repo` at revision main (our fake commit)."""
    return hub_dir / f"models--{repo.replace('/', '--')}" / "snapshots" / FAKE_COMMIT


def repo_cache_dir(hub_dir: Path, repo: str) -> Path:
    return hub_dir / f"models--{repo.replace('/', '--')}"


def _marker(scale: Scale) -> dict[str, str]:
    return {"version": BUILD_VERSION, "scale": scale.name}


def is_built(hub_dir: Path, model_set: ModelSet, scale: Scale) -> bool:
    marker = cache_snapshot(hub_dir, model_set.repo) / MARKER_NAME
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    refs = repo_cache_dir(hub_dir, model_set.repo) / "refs" / "main"
    return bool(recorded == _marker(scale)) and refs.is_file() and refs.read_text() == FAKE_COMMIT


def build_set(hub_dir: Path, model_set: ModelSet, scale: Scale, seed: int = 0) -> Path:
    """Writes the set into the cache as revision main; staged, so a crash never leaves a set that looks whole."""
    snapshot = cache_snapshot(hub_dir, model_set.repo)
    if is_built(hub_dir, model_set, scale):
        return snapshot
    # Another scale's (or an older build's) copy of this repo: the disk is needed for this one.
    shutil.rmtree(repo_cache_dir(hub_dir, model_set.repo), ignore_errors=True)
    staging = snapshot.with_name(FAKE_COMMIT + ".partial")
    staging.mkdir(parents=True)
    _write_set(set_spec(model_set, scale), staging, seed)
    (staging / MARKER_NAME).write_text(json.dumps(_marker(scale)))
    staging.rename(snapshot)
    refs = repo_cache_dir(hub_dir, model_set.repo) / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text(FAKE_COMMIT)
    _LOGGER.info("built %s (%s scale) in %s", model_set.model_id, scale.name, snapshot)
    return snapshot


def remove_set(hub_dir: Path, model_set: ModelSet) -> None:
    shutil.rmtree(repo_cache_dir(hub_dir, model_set.repo), ignore_errors=True)


def weight_files(snapshot: Path) -> list[Path]:
    return sorted(snapshot.glob("*/*.safetensors"))
