"""Tiny random twins of the real pipelines, built from the kept real configs by shrinking dimensions only."""

# mypy: disallow-untyped-calls=False

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from safetensors.torch import save_file
from tokenizers import AddedToken
from tokenizers.pre_tokenizers import ByteLevel

from adgen_diffusion.bfl_layout import quantize_fp8_per_tensor, to_bfl_layout
from adgen_diffusion.kept_configs import KeptRepo, kept_repo
from adgen_diffusion.tiny import MARKER_NAME, TINY_VERSION, is_built, tiny_dir

_LOGGER = logging.getLogger(__name__)

SEED = 1234
KLEIN_4B = "black-forest-labs/FLUX.2-klein-4B"
KLEIN_9B = "black-forest-labs/FLUX.2-klein-9B"
QWEN_EDIT = "Qwen/Qwen-Image-Edit-2511"
Z_IMAGE = "Tongyi-MAI/Z-Image-Turbo"

# The width and heads of every tiny text encoder; transformer widths that are a multiple of the real text width follow.
TEXT_WIDTH = 32
_TEXT_HEADS = 2
# Transformer head dims: the rope axes are scaled to sum to these (even axes, so 16 is too narrow for Qwen-Edit's).
_FLUX2_HEAD_DIM = 16
_QWEN_HEAD_DIM = 32
_Z_IMAGE_HEAD_DIM = 32
# A minimal stand-in for Qwen's chat template: klein and Z-Image call apply_chat_template, Qwen-Edit formats its own.
_QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)


@dataclass(frozen=True)
class Sizes:
    """What a shrink rule may read besides the real value: the twin's vocabulary and the text widths."""

    vocab_size: int
    # A real token id → the twin tokenizer's id of the same token.
    token_ids: Mapping[int, int]
    real_text_width: int
    tiny_text_width: int = TEXT_WIDTH


Rule = Callable[[Any, Sizes], Any]


def vocabulary(real: int, sizes: Sizes) -> int:
    """The twin tokenizer's length."""
    return sizes.vocab_size


def same_token(real: int, sizes: Sizes) -> int:
    """The twin's id of the token the real id names (ids move with the vocabulary)."""
    return sizes.token_ids[real]


def text_width_multiple(real: int, sizes: Sizes) -> int:
    """The same multiple of the text width as in the real config (klein: 3 stacked hidden states; others: 1)."""
    multiple, rest = divmod(real, sizes.real_text_width)
    assert rest == 0 and multiple > 0, f"{real} is not a multiple of the text width {sizes.real_text_width}"
    return multiple * sizes.tiny_text_width


def scaled_to(total: int, *, even: bool = True) -> Rule:
    """Rope axes scaled to sum to `total` in the real proportions; each even (rotary pairs) unless `even=False`."""

    def rule(real: list[int], sizes: Sizes) -> list[int]:
        scaled = [axis * total // sum(real) for axis in real]
        assert sum(scaled) == total, f"{real} does not scale to {total}"
        assert not even or all(axis % 2 == 0 for axis in scaled), f"{real} scaled to {scaled}: odd axes"
        return scaled

    return rule


def divided_by(divisor: int) -> Rule:
    """Each channel count divided by `divisor` (VAE blocks keep their real proportions)."""

    def rule(real: list[int], sizes: Sizes) -> list[int]:
        assert all(channels % divisor == 0 for channels in real)
        return [channels // divisor for channels in real]

    return rule


_QWEN3_TEXT: dict[str, Any] = {
    "hidden_size": TEXT_WIDTH,
    "intermediate_size": 64,
    "num_attention_heads": _TEXT_HEADS,
    "num_key_value_heads": 1,
    "head_dim": TEXT_WIDTH // _TEXT_HEADS,
    "vocab_size": vocabulary,
    "bos_token_id": same_token,
    "eos_token_id": same_token,
}
# FLUX.2's VAE and Z-Image's (FLUX.1's) share one block layout: channels /32 keep the proportions, 4 groups divide them.
_FLUX_VAE: dict[str, Any] = {"block_out_channels": divided_by(32), "layers_per_block": 1, "norm_num_groups": 4}

# Shrink rules, one table per component class: config key (dotted inside nested configs) → the tiny value, or a
# rule computing it from the real one. Every key not named here keeps its real value.
SHRINK_RULES: dict[str, dict[str, Any]] = {
    # klein stacks the hidden states of layers 9, 18 and 27, so its encoder keeps 28 layers (narrow ones);
    # max_window_layers equals the layer count, as in the real files.
    "Qwen3ForCausalLM": {**_QWEN3_TEXT, "num_hidden_layers": 28, "max_window_layers": 28},
    # Z-Image reads the second-to-last hidden state.
    "Qwen3Model": {**_QWEN3_TEXT, "num_hidden_layers": 2, "max_window_layers": 2},
    "Qwen2_5_VLForConditionalGeneration": {
        "text_config.hidden_size": TEXT_WIDTH,
        "text_config.intermediate_size": 64,
        "text_config.num_hidden_layers": 1,
        "text_config.max_window_layers": 1,
        "text_config.num_attention_heads": _TEXT_HEADS,
        "text_config.num_key_value_heads": 1,
        # Sections count frequency pairs: they sum to half the head dim and may be odd.
        "text_config.rope_scaling.mrope_section": scaled_to(TEXT_WIDTH // _TEXT_HEADS // 2, even=False),
        "text_config.vocab_size": vocabulary,
        "text_config.bos_token_id": same_token,
        "text_config.eos_token_id": same_token,
        "vision_config.depth": 2,
        "vision_config.hidden_size": 16,
        "vision_config.intermediate_size": 32,
        "vision_config.num_heads": 2,
        "vision_config.out_hidden_size": text_width_multiple,
        # Full attention in the last block, windowed attention before it, like each real group of 8 blocks.
        "vision_config.fullatt_block_indexes": [1],
        "image_token_id": same_token,
        "video_token_id": same_token,
        "vision_start_token_id": same_token,
        "vision_end_token_id": same_token,
    },
    "Flux2Transformer2DModel": {
        "num_layers": 1,
        "num_single_layers": 2,
        "num_attention_heads": 2,
        "attention_head_dim": _FLUX2_HEAD_DIM,
        "axes_dims_rope": scaled_to(_FLUX2_HEAD_DIM),
        "joint_attention_dim": text_width_multiple,
    },
    "QwenImageTransformer2DModel": {
        "num_layers": 2,
        "num_attention_heads": 2,
        "attention_head_dim": _QWEN_HEAD_DIM,
        "axes_dims_rope": scaled_to(_QWEN_HEAD_DIM),
        "joint_attention_dim": text_width_multiple,
    },
    "ZImageTransformer2DModel": {
        "dim": 2 * _Z_IMAGE_HEAD_DIM,
        "n_heads": 2,
        "n_kv_heads": 2,
        "n_layers": 2,
        "n_refiner_layers": 1,
        "axes_dims": scaled_to(_Z_IMAGE_HEAD_DIM),
        "cap_feat_dim": text_width_multiple,
    },
    "AutoencoderKLFlux2": _FLUX_VAE,
    "AutoencoderKL": _FLUX_VAE,
    "AutoencoderKLQwenImage": {"base_dim": 4, "num_res_blocks": 1},
}


def shrink(config: Mapping[str, Any], rules: Mapping[str, Any], sizes: Sizes) -> dict[str, Any]:
    """A copy of the real `config` with each ruled key replaced; a rule naming a key the config lacks is a bug."""
    shrunk = copy.deepcopy(dict(config))
    for dotted, rule in rules.items():
        *parents, key = dotted.split(".")
        section = shrunk
        for parent in parents:
            section = section[parent]
        if key not in section:
            raise KeyError(f"shrink rule {dotted!r} names a key the real config does not have")
        section[key] = rule(section[key], sizes) if callable(rule) else copy.deepcopy(rule)
    return shrunk


def byte_tokenizer(tokenizer_config: Mapping[str, Any], **kwargs: Any) -> transformers.Qwen2Tokenizer:
    """The real Qwen tokenizer class over 256 byte tokens plus the real added tokens, in their real order.

    Every byte is one token, so no merges are needed; the other kept keys (eos/pad tokens, flags) pass through.
    """
    decoder = tokenizer_config["added_tokens_decoder"]
    added = [decoder[key] for key in sorted(decoder, key=int)]
    vocab = {token: index for index, token in enumerate(sorted(ByteLevel.alphabet()))}
    # In the vocabulary at fixed ids, so the tokenizer's own special-token bookkeeping cannot reorder them.
    vocab.update({token["content"]: len(vocab) + index for index, token in enumerate(added)})
    options = {key: value for key, value in tokenizer_config.items() if key != "added_tokens_decoder"}
    tokenizer = transformers.Qwen2Tokenizer(vocab=vocab, merges=[], **options, **kwargs)
    for token in added:
        atomic = AddedToken(token["content"], special=token["special"], normalized=False)
        tokenizer.add_tokens([atomic], special_tokens=token["special"])
    tokenizer.chat_template = _QWEN_CHAT_TEMPLATE
    return tokenizer


def _token_ids(tokenizer: Any, tokenizer_config: Mapping[str, Any]) -> dict[int, int]:
    contents = {int(key): token["content"] for key, token in tokenizer_config["added_tokens_decoder"].items()}
    return {real: tokenizer.convert_tokens_to_ids(content) for real, content in contents.items()}


def _text_width(config: Mapping[str, Any]) -> int:
    width = config["hidden_size"] if "hidden_size" in config else config["text_config"]["hidden_size"]
    assert isinstance(width, int)
    return width


@dataclass(frozen=True)
class _Recipe:
    """One repo's kept configs with the twin's tokenizer and the sizes its shrink rules read."""

    kept: KeptRepo
    tokenizer: Any
    sizes: Sizes


def _recipe(repo: str) -> _Recipe:
    kept = kept_repo(repo)
    tokenizer_config = kept.read("tokenizer/tokenizer_config.json")
    tokenizer = byte_tokenizer(tokenizer_config)
    text_encoder = next(name for name, (library, _) in kept.weighted_components().items() if library == "transformers")
    real_width = _text_width(kept.component_config(text_encoder))
    return _Recipe(kept, tokenizer, Sizes(len(tokenizer), _token_ids(tokenizer, tokenizer_config), real_width))


def _build_weighted(recipe: _Recipe, component: str) -> Any:
    """A weighted component of the class model_index names, from its kept config with the dimensions shrunk."""
    library, class_name = recipe.kept.components()[component]
    config = shrink(recipe.kept.component_config(component), SHRINK_RULES[class_name], recipe.sizes)
    # A re-saver's local path, not part of the model.
    config.pop("_name_or_path", None)
    if library == "diffusers":
        return getattr(diffusers, class_name).from_config(config)
    model_class = getattr(transformers, class_name)
    return model_class(model_class.config_class(**config))


def _build_component(recipe: _Recipe, component: str) -> Any:
    if component == "scheduler":
        _, class_name = recipe.kept.components()[component]
        return getattr(diffusers, class_name).from_config(recipe.kept.read("scheduler/scheduler_config.json"))
    if component == "tokenizer":
        return recipe.tokenizer
    if component == "processor":
        # Written by hand (_write_processor): the real class needs torchvision to be built at all.
        return None
    return _build_weighted(recipe, component)


def build_pipeline(repo: str) -> Any:
    """The twin of `repo` in memory: its pipeline class with every component built from the kept configs."""
    recipe = _recipe(repo)
    components = {name: _build_component(recipe, name) for name in recipe.kept.components()}
    index = recipe.kept.model_index()
    # Pipeline-level config keys (klein's is_distilled) pass through as they are kept.
    options = {key: value for key, value in index.items() if not key.startswith("_") and key not in components}
    return getattr(diffusers, index["_class_name"])(**components, **options)


def build_transformer(repo: str) -> torch.nn.Module:
    """Only the twin's transformer: the module names and shapes a LoRA twin adapts."""
    transformer: torch.nn.Module = _build_weighted(_recipe(repo), "transformer")
    return transformer


def _write_kept_class_names(directory: Path, kept: KeptRepo) -> None:
    """model_index.json with the real class names where transformers spells one class two ways.

    transformers 5 has one class for Qwen2TokenizerFast and Qwen2Tokenizer, so save_pretrained records the
    other name; the processor is written by hand. Any other difference is a drift and fails here.
    """
    path = directory / "model_index.json"
    index = json.loads(path.read_text())
    for name, (library, class_name) in kept.components().items():
        saved = index.get(name)
        if saved == [library, class_name]:
            continue
        is_alias = (
            library == "transformers" and saved is not None and saved[1] == getattr(transformers, class_name).__name__
        )
        if not (is_alias or name == "processor"):
            raise RuntimeError(f"{kept.repo} twin saved {name} as {saved}, the real model_index has {class_name}")
        index[name] = [library, class_name]
    path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def _write_processor(directory: Path, kept: KeptRepo) -> None:
    """The real processor folder's files: image and video preprocessor configs plus the tokenizer files."""
    folder = directory / "processor"
    _write_json(folder / "preprocessor_config.json", kept.read("processor/preprocessor_config.json"))
    _write_json(folder / "video_preprocessor_config.json", kept.read("processor/video_preprocessor_config.json"))
    _, class_name = kept.components()["processor"]
    # ProcessorMixin.save_pretrained records its class in the tokenizer config it writes.
    byte_tokenizer(kept.read("tokenizer/tokenizer_config.json"), processor_class=class_name).save_pretrained(folder)


def save_pipeline_twin(directory: Path, repo: str) -> Any:
    """Writes the twin of `repo` as the real repo lays it out; returns the pipeline."""
    kept = kept_repo(repo)
    pipeline = build_pipeline(repo)
    pipeline.save_pretrained(directory)
    if "processor" in kept.components():
        _write_processor(directory, kept)
    _write_kept_class_names(directory, kept)
    return pipeline


def save_fp8_twin(directory: Path, repo: str, file_name: str) -> None:
    """Like the real pair: `repo`'s twin without transformer weights, plus one FP8 file in BFL's layout."""
    pipeline = save_pipeline_twin(directory, repo)
    for weights_file in (directory / "transformer").glob("*.safetensors*"):
        weights_file.unlink()
    state = {key: tensor.contiguous() for key, tensor in pipeline.transformer.state_dict().items()}
    save_file(quantize_fp8_per_tensor(to_bfl_layout(state)), str(directory / file_name))


LORA_RANK = 4
# Not the rank, so a loader that ignored `.alpha` would fuse a visibly different weight.
LORA_ALPHA = 2.0
# Big enough that the fused weights visibly change the image, small enough to keep activations finite.
_LORA_STD = 0.3


def kohya_lora(transformer: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A random bf16 LoRA on every Linear of the transformer blocks, in the kohya layout the Lightning files use."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in transformer.named_modules():
        if not (name.startswith("transformer_blocks.") and isinstance(module, torch.nn.Linear)):
            continue
        down = torch.randn(LORA_RANK, module.in_features, generator=generator) * _LORA_STD
        up = torch.randn(module.out_features, LORA_RANK, generator=generator) * _LORA_STD
        state[f"{name}.lora_down.weight"] = down.to(torch.bfloat16)
        state[f"{name}.lora_up.weight"] = up.to(torch.bfloat16)
        state[f"{name}.alpha"] = torch.tensor(LORA_ALPHA, dtype=torch.bfloat16)
    return state


def save_lora_twin(directory: Path, repo: str, file_names: tuple[str, ...]) -> None:
    """One random LoRA file per name (each its own seed) for `repo`'s twin transformer, like a LoRA repo."""
    directory.mkdir(parents=True, exist_ok=True)
    transformer = build_transformer(repo)
    for index, file_name in enumerate(file_names):
        save_file(kohya_lora(transformer, SEED + 1 + index), str(directory / file_name))


# Directory name under <models_dir>/tiny/ (the registry's `tiny` fields) → what writes it.
TWINS: dict[str, Callable[[Path], object]] = {
    "flux2-klein-4b": partial(save_pipeline_twin, repo=KLEIN_4B),
    "flux2-klein-9b": partial(save_pipeline_twin, repo=KLEIN_9B),
    "flux2-klein-9b-fp8": partial(save_fp8_twin, repo=KLEIN_9B, file_name="flux-2-klein-9b-fp8.safetensors"),
    "qwen-image-edit-2511": partial(save_pipeline_twin, repo=QWEN_EDIT),
    "qwen-image-edit-2511-lightning": partial(
        save_lora_twin,
        repo=QWEN_EDIT,
        file_names=(
            "Qwen-Image-Edit-2511-Lightning-4steps-V1.0-bf16.safetensors",
            "Qwen-Image-Edit-2511-Lightning-8steps-V1.0-bf16.safetensors",
        ),
    ),
    "z-image-turbo": partial(save_pipeline_twin, repo=Z_IMAGE),
}


def build_tiny_model(models_dir: Path, name: str, *, force: bool = False) -> Path:
    """Builds one twin into `<models_dir>/tiny/<name>/` unless a current one is there already."""
    target = tiny_dir(models_dir, name)
    if is_built(target) and not force:
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    # Seeded per twin, so each is the same whatever else was built before it.
    torch.manual_seed(SEED)
    TWINS[name](staging)
    (staging / MARKER_NAME).write_text(json.dumps({"version": TINY_VERSION, "seed": SEED}))
    shutil.rmtree(target, ignore_errors=True)
    # Rename last: a crash mid-build never leaves a directory that looks complete.
    staging.rename(target)
    _LOGGER.info("built tiny model %s in %s", name, target)
    return target


def build_all_tiny_models(models_dir: Path, *, force: bool = False) -> list[Path]:
    """Builds every twin that is missing or stale; returns their directories."""
    return [build_tiny_model(models_dir, name, force=force) for name in TWINS]
