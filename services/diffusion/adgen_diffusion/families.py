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
# klein and Z-Image pad prompts to their text encoders' max_sequence_length.
_MAX_TEXT_TOKENS = 512


@dataclass(frozen=True)
class PromptJob:
    """What a family needs of a job to build its call."""

    task: Task
    # One prompt, or one per image of a batched call.
    prompt: str | list[str]
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
    # Images in one pipeline call: activations scale with it.
    batch: int = 1


class PipelineFamily(Protocol):
    """What differs between pipeline families."""

    name: str
    pipeline_class: str

    def call_kwargs(self, job: PromptJob) -> dict[str, Any]: ...

    def load_kwargs(self, pipeline_dir: Path) -> dict[str, Any]: ...

    def workload(self, configs: Mapping[str, Mapping[str, Any]], width: int, height: int, task: Task) -> Workload: ...


def _image_tokens(width: int, height: int) -> int:
    return (width // _PIXELS_PER_TOKEN_SIDE) * (height // _PIXELS_PER_TOKEN_SIDE)


@dataclass(frozen=True)
class _VaeShape:
    channels: int
    tile_side: int
    kind: str = "kl"


def _kl_vae(config: Mapping[str, Any]) -> _VaeShape:
    """An AutoencoderKL-style decoder: its last up block runs at full resolution on the second-widest level."""
    return _VaeShape(channels=int(list(config["block_out_channels"])[1]), tile_side=int(config.get("sample_size", 512)))


def _workload(
    configs: Mapping[str, Mapping[str, Any]],
    *,
    image_tokens: int,
    transformer_width: int,
    transformer_blocks: int,
    text_tokens: int,
    vae_pixels: int,
    vae: _VaeShape | None = None,
) -> Workload:
    """A family's workload: its own token counts and widths, the text encoder's and VAE's shapes from their configs."""
    text = configs["text_encoder"].get("text_config", configs["text_encoder"])
    vae = vae or _kl_vae(configs["vae"])
    return Workload(
        transformer_tokens=image_tokens + text_tokens,
        transformer_width=transformer_width,
        transformer_blocks=transformer_blocks,
        text_tokens=text_tokens,
        text_width=int(text["hidden_size"]),
        text_layers=int(text["num_hidden_layers"]),
        text_intermediate=int(text["intermediate_size"]),
        vae_pixels=vae_pixels,
        vae_channels=vae.channels,
        vae_tile_pixels=vae.tile_side**2,
        vae_kind=vae.kind,
    )


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
        references = 1 if task is Task.IMAGE_EDIT else 0
        return _workload(
            configs,
            image_tokens=_image_tokens(width, height) * (1 + references),
            transformer_width=int(transformer["num_attention_heads"]) * int(transformer["attention_head_dim"]),
            transformer_blocks=int(transformer["num_layers"]) + int(transformer["num_single_layers"]),
            text_tokens=_MAX_TEXT_TOKENS,
            vae_pixels=width * height,
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
        transformer = configs["transformer"]
        return _workload(
            configs,
            image_tokens=_image_tokens(width, height),
            transformer_width=int(transformer["dim"]),
            # The main layers plus the noise and caption refiners.
            transformer_blocks=int(transformer["n_layers"]) + 2 * int(transformer["n_refiner_layers"]),
            text_tokens=_MAX_TEXT_TOKENS,
            vae_pixels=width * height,
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
            kwargs["negative_prompt"] = [" "] * len(job.prompt) if isinstance(job.prompt, list) else " "
        return kwargs

    def load_kwargs(self, pipeline_dir: Path) -> dict[str, Any]:
        # The real Qwen2VLProcessor needs torchvision for its video half; edits only use images.
        from adgen_diffusion.qwen_processor import load_image_only_processor

        return {"processor": load_image_only_processor(pipeline_dir / "processor")}

    def workload(self, configs: Mapping[str, Mapping[str, Any]], width: int, height: int, task: Task) -> Workload:
        transformer, vae = configs["transformer"], configs["vae"]
        return _workload(
            configs,
            image_tokens=_image_tokens(width, height) + _QWEN_VAE_IMAGE_PIXELS // _PIXELS_PER_TOKEN_SIDE**2,
            transformer_width=int(transformer["num_attention_heads"]) * int(transformer["attention_head_dim"]),
            transformer_blocks=int(transformer["num_layers"]),
            # The instruction plus the condition image's vision tokens (14-pixel patches merged 2x2).
            text_tokens=256 + _QWEN_CONDITION_IMAGE_PIXELS // (28 * 28),
            vae_pixels=max(width * height, _QWEN_VAE_IMAGE_PIXELS),
            vae=_VaeShape(
                channels=int(vae["base_dim"]) * int(vae["dim_mult"][1]),
                # enable_tiling's default tile in diffusers' AutoencoderKLQwenImage.
                tile_side=256,
                kind="qwen",
            ),
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
