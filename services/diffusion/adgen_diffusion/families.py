"""One adapter per pipeline family: the pipeline class, its call arguments, its loading needs, its activation sizes.

The registry names an entry's family; nothing else in the service switches on pipeline classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from adgen_diffusion.registry import Task

# FLUX.2 refuses reference images smaller than this on either side.
_FLUX_MIN_REFERENCE_SIDE = 64
# Pixels per transformer token: an 8x VAE and 2x2 patches (klein packs them in its VAE, the others patchify).
_PIXELS_PER_TOKEN_SIDE = 16
# The reference image Qwen-Image-Edit-Plus encodes with its VAE, and the one its vision tower sees (pixels).
_QWEN_VAE_IMAGE_PIXELS = 1024 * 1024
_QWEN_CONDITION_IMAGE_PIXELS = 384 * 384


@dataclass(frozen=True)
class PromptJob:
    """What a family needs of a job to build its call."""

    task: Task
    prompt: str
    width: int
    height: int
    guidance: float
    image: Image.Image | None = None


@dataclass(frozen=True)
class Workload:
    """The sizes that set a job's activation memory: sequence lengths and widths of each component."""

    transformer_tokens: int
    transformer_width: int
    # Blocks a streamed transformer is split into (one group each).
    transformer_blocks: int
    text_tokens: int
    text_width: int
    text_layers: int
    text_intermediate: int
    # Pixels the VAE decodes (and encodes, for references) at full resolution, and its widest full-res channels.
    vae_pixels: int
    vae_channels: int
    vae_tile_pixels: int
    # "kl" (AutoencoderKL-style 2-D decoder) or "qwen" (causal 3-D decoder with a feature cache).
    vae_kind: str = "kl"


class PipelineFamily(Protocol):
    """What differs between pipeline families."""

    name: str
    pipeline_class: str

    def call_kwargs(self, job: PromptJob) -> dict[str, Any]: ...

    def load_kwargs(self, pipeline_dir: Path) -> dict[str, Any]: ...

    def workload(self, configs: Mapping[str, Mapping[str, Any]], width: int, height: int, task: Task) -> Workload: ...


def _image_tokens(width: int, height: int) -> int:
    return (width // _PIXELS_PER_TOKEN_SIDE) * (height // _PIXELS_PER_TOKEN_SIDE)


def _text_shape(config: Mapping[str, Any]) -> tuple[int, int, int]:
    """(hidden, layers, intermediate) of a transformers text config, nested (VL models) or flat."""
    text = config.get("text_config", config)
    return int(text["hidden_size"]), int(text["num_hidden_layers"]), int(text["intermediate_size"])


def _kl_vae(config: Mapping[str, Any]) -> tuple[int, int]:
    """(widest full-resolution channels, tile side) of an AutoencoderKL-style decoder."""
    channels = list(config["block_out_channels"])
    # The last up block runs at full resolution on the input of the second-widest level.
    return int(channels[1]), int(config.get("sample_size", 512))


class Flux2KleinFamily:
    """FLUX.2 [klein]: distilled, guidance as a plain scale, reference images as a list."""

    name = "flux2-klein"
    pipeline_class = "Flux2KleinPipeline"

    def call_kwargs(self, job: PromptJob) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "prompt": job.prompt,
            "height": job.height,
            "width": job.width,
            "guidance_scale": job.guidance,
        }
        if job.task is Task.IMAGE_EDIT and job.image is not None:
            kwargs["image"] = [_at_least(job.image, _FLUX_MIN_REFERENCE_SIDE)]
        return kwargs

    def load_kwargs(self, pipeline_dir: Path) -> dict[str, Any]:
        return {}

    def workload(self, configs: Mapping[str, Mapping[str, Any]], width: int, height: int, task: Task) -> Workload:
        transformer = configs["transformer"]
        hidden, layers, intermediate = _text_shape(configs["text_encoder"])
        text_tokens = 512
        tokens = _image_tokens(width, height) * (2 if task is Task.IMAGE_EDIT else 1) + text_tokens
        channels, tile = _kl_vae(configs["vae"])
        return Workload(
            transformer_tokens=tokens,
            transformer_width=int(transformer["num_attention_heads"]) * int(transformer["attention_head_dim"]),
            transformer_blocks=int(transformer["num_layers"]) + int(transformer["num_single_layers"]),
            text_tokens=text_tokens,
            text_width=hidden,
            text_layers=layers,
            text_intermediate=intermediate,
            vae_pixels=width * height,
            vae_channels=channels,
            vae_tile_pixels=tile * tile,
        )


class ZImageFamily:
    """Z-Image-Turbo: guidance 0 (distilled), text only."""

    name = "z-image"
    pipeline_class = "ZImagePipeline"

    def call_kwargs(self, job: PromptJob) -> dict[str, Any]:
        return {"prompt": job.prompt, "height": job.height, "width": job.width, "guidance_scale": job.guidance}

    def load_kwargs(self, pipeline_dir: Path) -> dict[str, Any]:
        return {}

    def workload(self, configs: Mapping[str, Mapping[str, Any]], width: int, height: int, task: Task) -> Workload:
        hidden, layers, intermediate = _text_shape(configs["text_encoder"])
        text_tokens = 512
        channels, tile = _kl_vae(configs["vae"])
        return Workload(
            transformer_tokens=_image_tokens(width, height) + text_tokens,
            transformer_width=int(configs["transformer"]["dim"]),
            # The main layers plus the noise and caption refiners.
            transformer_blocks=int(configs["transformer"]["n_layers"])
            + 2 * int(configs["transformer"]["n_refiner_layers"]),
            text_tokens=text_tokens,
            text_width=hidden,
            text_layers=layers,
            text_intermediate=intermediate,
            vae_pixels=width * height,
            vae_channels=channels,
            vae_tile_pixels=tile * tile,
        )


class QwenImageEditPlusFamily:
    """Qwen-Image-Edit-Plus: true CFG against a blank prompt, images as a list, an image-only processor."""

    name = "qwen-image-edit-plus"
    pipeline_class = "QwenImageEditPlusPipeline"

    def call_kwargs(self, job: PromptJob) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "prompt": job.prompt,
            "height": job.height,
            "width": job.width,
            "image": [job.image],
            # 1.0 turns true CFG off (one transformer pass a step).
            "true_cfg_scale": job.guidance,
        }
        if job.guidance > 1.0:
            kwargs["negative_prompt"] = " "
        return kwargs

    def load_kwargs(self, pipeline_dir: Path) -> dict[str, Any]:
        # The real Qwen2VLProcessor needs torchvision for its video half; edits only use images.
        from adgen_diffusion.qwen_processor import load_image_only_processor

        return {"processor": load_image_only_processor(pipeline_dir / "processor")}

    def workload(self, configs: Mapping[str, Mapping[str, Any]], width: int, height: int, task: Task) -> Workload:
        transformer = configs["transformer"]
        hidden, layers, intermediate = _text_shape(configs["text_encoder"])
        # The instruction plus the condition image's vision tokens (14-pixel patches merged 2x2).
        text_tokens = 256 + _QWEN_CONDITION_IMAGE_PIXELS // (28 * 28)
        reference_tokens = _QWEN_VAE_IMAGE_PIXELS // _PIXELS_PER_TOKEN_SIDE**2
        vae = configs["vae"]
        return Workload(
            transformer_tokens=_image_tokens(width, height) + reference_tokens + text_tokens,
            transformer_width=int(transformer["num_attention_heads"]) * int(transformer["attention_head_dim"]),
            transformer_blocks=int(transformer["num_layers"]),
            text_tokens=text_tokens,
            text_width=hidden,
            text_layers=layers,
            text_intermediate=intermediate,
            vae_pixels=max(width * height, _QWEN_VAE_IMAGE_PIXELS),
            vae_channels=int(vae["base_dim"]) * int(vae["dim_mult"][1]),
            # enable_tiling's default tile in diffusers' AutoencoderKLQwenImage.
            vae_tile_pixels=256 * 256,
            vae_kind="qwen",
        )


_FAMILIES: dict[str, PipelineFamily] = {
    family.name: family for family in (Flux2KleinFamily(), ZImageFamily(), QwenImageEditPlusFamily())
}


def family_of(name: str) -> PipelineFamily:
    """The adapter of a registry family name (the registry validates names at load)."""
    return _FAMILIES[name]


def _at_least(image: Image.Image, side: int) -> Image.Image:
    """Scales an image up, keeping its aspect, until both sides reach `side`."""
    scale = max(side / image.width, side / image.height)
    if scale <= 1:
        return image
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
