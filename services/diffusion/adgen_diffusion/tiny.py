"""Builds tiny, randomly initialised twins of the real pipelines, fully offline, for tests and the demo."""

# mypy: disallow-untyped-calls=False

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLFlux2,
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    Flux2Transformer2DModel,
    QwenImageEditPlusPipeline,
    QwenImageTransformer2DModel,
    ZImagePipeline,
    ZImageTransformer2DModel,
)
from safetensors.torch import save_file
from tokenizers import AddedToken
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen2VLImageProcessorPil,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3Model,
)

from adgen_diffusion.bfl_layout import quantize_fp8_per_row, to_bfl_layout
from adgen_diffusion.qwen_processor import Qwen2VLImageOnlyProcessor

_LOGGER = logging.getLogger(__name__)

# Bump when a config below changes, so stale twins are rebuilt instead of reused.
TINY_VERSION = "2"
MARKER_NAME = ".adgen-tiny.json"
SEED = 1234

_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<think>",
    "</think>",
)
_QWEN3_CHAT_TEMPLATE = (
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


def byte_tokenizer() -> Qwen2Tokenizer:
    """The real Qwen tokenizer class over a 265-token byte vocabulary: every byte is one token."""
    alphabet = sorted(ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate(alphabet)}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token=None,  # type: ignore[arg-type]
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in _SPECIALS], special_tokens=True)
    tokenizer.chat_template = _QWEN3_CHAT_TEMPLATE
    return tokenizer


def _token_id(tokenizer: Qwen2Tokenizer, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(token_id, int)
    return token_id


def build_flux2_klein() -> Any:
    """FLUX.2 klein with real latent geometry: 8x VAE, 32 latent channels, a 28-layer Qwen3 encoder."""
    tokenizer = byte_tokenizer()
    vocab = len(tokenizer)
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=32,
            num_hidden_layers=28,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            bos_token_id=_token_id(tokenizer, "<|endoftext|>"),
            eos_token_id=_token_id(tokenizer, "<|im_end|>"),
            pad_token_id=_token_id(tokenizer, "<|endoftext|>"),
        )
    )
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=128,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=32,
        num_attention_heads=2,
        joint_attention_dim=96,
        timestep_guidance_channels=256,
        axes_dims_rope=(8, 8, 8, 8),
        guidance_embeds=False,
        mlp_ratio=2.0,
    )
    vae = AutoencoderKLFlux2(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=32,
        norm_num_groups=4,
        sample_size=1024,
    )
    return Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,
    )


def build_z_image() -> Any:
    """Z-Image-Turbo with real geometry: 8x VAE, 16 latent channels, the Turbo scheduler."""
    tokenizer = byte_tokenizer()
    text_encoder = Qwen3Model(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=1024,
            bos_token_id=_token_id(tokenizer, "<|endoftext|>"),
            eos_token_id=_token_id(tokenizer, "<|im_end|>"),
            pad_token_id=_token_id(tokenizer, "<|endoftext|>"),
        )
    )
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=64,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        qk_norm=True,
        cap_feat_dim=32,
        axes_dims=[8, 12, 12],
        axes_lens=[1024, 512, 512],
    )
    vae = AutoencoderKL(
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[8, 8, 8, 8],
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
        sample_size=1024,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False)
    return ZImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )


def build_qwen_image_edit_plus() -> Any:
    """Qwen-Image-Edit-Plus with real geometry: 8x causal VAE, 16 latent channels, the real scheduler."""
    tokenizer = byte_tokenizer()
    image_token_id = _token_id(tokenizer, "<|image_pad|>")
    text_encoder = Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(
            text_config={
                "vocab_size": len(tokenizer),
                "hidden_size": 32,
                "intermediate_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "max_position_embeddings": 4096,
                "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6},
                "bos_token_id": _token_id(tokenizer, "<|endoftext|>"),
                "eos_token_id": _token_id(tokenizer, "<|im_end|>"),
                "pad_token_id": _token_id(tokenizer, "<|endoftext|>"),
            },
            vision_config={
                "depth": 2,
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_heads": 2,
                "out_hidden_size": 32,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "window_size": 112,
                "fullatt_block_indexes": [0],
            },
            image_token_id=image_token_id,
            video_token_id=_token_id(tokenizer, "<|video_pad|>"),
            vision_start_token_id=_token_id(tokenizer, "<|vision_start|>"),
            vision_end_token_id=_token_id(tokenizer, "<|vision_end|>"),
            tie_word_embeddings=True,
        )
    )
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 16,
        latents_std=[1.0] * 16,
    )
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=64,
        out_channels=16,
        num_layers=2,
        attention_head_dim=32,
        num_attention_heads=2,
        joint_attention_dim=32,
        guidance_embeds=False,
        axes_dims_rope=(8, 12, 12),
        zero_cond_t=True,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=0.5,
        invert_sigmas=False,
        max_image_seq_len=8192,
        max_shift=0.9,
        num_train_timesteps=1000,
        shift=1.0,
        shift_terminal=0.02,
        stochastic_sampling=False,
        time_shift_type="exponential",
        use_beta_sigmas=False,
        use_dynamic_shifting=True,
        use_exponential_sigmas=False,
        use_karras_sigmas=False,
    )
    processor = Qwen2VLImageOnlyProcessor(image_processor=Qwen2VLImageProcessorPil(), tokenizer=tokenizer)
    return QwenImageEditPlusPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        processor=processor,
        transformer=transformer,
    )


# Directory name under <models_dir>/tiny/ -> builder.
TINY_BUILDERS: dict[str, Callable[[], Any]] = {
    "flux2-klein": build_flux2_klein,
    "z-image": build_z_image,
    "qwen-image-edit-plus": build_qwen_image_edit_plus,
}
# Single-file twins: (pipeline twin they share their random weights with, transformer file name).
FP8_TWINS: dict[str, tuple[str, str]] = {"flux2-klein-fp8": ("flux2-klein", "flux-2-klein-9b-fp8.safetensors")}
# LoRA twins: (pipeline twin whose transformer they adapt, LoRA file names as in the real repo).
LORA_TWINS: dict[str, tuple[str, tuple[str, ...]]] = {
    "qwen-image-edit-2511-lightning": (
        "qwen-image-edit-plus",
        (
            "Qwen-Image-Edit-2511-Lightning-4steps-V1.0-bf16.safetensors",
            "Qwen-Image-Edit-2511-Lightning-8steps-V1.0-bf16.safetensors",
        ),
    )
}
TINY_LORA_RANK = 4
# Big enough that the fused weights visibly change the image, small enough to keep activations finite.
_TINY_LORA_STD = 0.3


def tiny_lora_state_dict(transformer: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A random bf16 LoRA on every Linear of the transformer blocks, in diffusers/PEFT key layout."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in transformer.named_modules():
        if not (name.startswith("transformer_blocks.") and isinstance(module, torch.nn.Linear)):
            continue
        down = torch.randn(TINY_LORA_RANK, module.in_features, generator=generator) * _TINY_LORA_STD
        up = torch.randn(module.out_features, TINY_LORA_RANK, generator=generator) * _TINY_LORA_STD
        state[f"transformer.{name}.lora_A.weight"] = down.to(torch.bfloat16)
        state[f"transformer.{name}.lora_B.weight"] = up.to(torch.bfloat16)
    return state


def save_lora_twin(pipeline: Any, directory: Path, file_names: tuple[str, ...]) -> None:
    """One random LoRA file per name (each its own seed), like a LoRA repo with several variants."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, file_name in enumerate(file_names):
        save_file(tiny_lora_state_dict(pipeline.transformer, SEED + 1 + index), str(directory / file_name))


def save_fp8_single_file_twin(pipeline: Any, directory: Path, file_name: str) -> None:
    """Like the real 9B FP8 pair: a pipeline without transformer weights, plus one FP8 file in BFL layout."""
    pipeline.save_pretrained(directory)
    for weights_file in (directory / "transformer").glob("*.safetensors*"):
        weights_file.unlink()
    state = {key: tensor.contiguous() for key, tensor in pipeline.transformer.state_dict().items()}
    save_file(quantize_fp8_per_row(to_bfl_layout(state)), str(directory / file_name))


def tiny_dir(models_dir: Path, name: str) -> Path:
    """Where the tiny twin `name` lives."""
    return models_dir / "tiny" / name


def is_built(directory: Path) -> bool:
    """True when `directory` holds a complete twin of the current TINY_VERSION."""
    marker = directory / MARKER_NAME
    if not marker.is_file():
        return False
    try:
        recorded: dict[str, Any] = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return recorded.get("version") == TINY_VERSION


def build_tiny_model(models_dir: Path, name: str, *, force: bool = False) -> Path:
    """Builds one twin into `<models_dir>/tiny/<name>/` unless a current one is there already."""
    target = tiny_dir(models_dir, name)
    if is_built(target) and not force:
        return target
    base, single_file = FP8_TWINS.get(name, (name, None))
    base, lora_files = LORA_TWINS.get(name, (base, ()))
    # Seeded per model, so each twin is the same whatever else was built before it.
    torch.manual_seed(SEED)
    pipeline = TINY_BUILDERS[base]()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if lora_files:
        save_lora_twin(pipeline, staging, lora_files)
    elif single_file is None:
        pipeline.save_pretrained(staging)
    else:
        save_fp8_single_file_twin(pipeline, staging, single_file)
    (staging / MARKER_NAME).write_text(json.dumps({"version": TINY_VERSION, "seed": SEED}))
    shutil.rmtree(target, ignore_errors=True)
    # Rename last: a crash mid-build never leaves a directory that looks complete.
    staging.rename(target)
    _LOGGER.info("built tiny model %s in %s", name, target)
    return target


def build_all_tiny_models(models_dir: Path, *, force: bool = False) -> list[Path]:
    """Builds every twin that is missing or stale; returns their directories."""
    return [build_tiny_model(models_dir, name, force=force) for name in [*TINY_BUILDERS, *FP8_TWINS, *LORA_TWINS]]
