"""Where a registry entry's weights are on this machine: a tiny twin, or the Hugging Face cache."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from huggingface_hub import hf_hub_download, is_offline_mode, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from adgen_diffusion.errors import ModelNotCachedError
from adgen_diffusion.registry import ModelEntry, QuantizedVariant
from adgen_diffusion.tiny import is_built, tiny_dir

_LOGGER = logging.getLogger(__name__)

# Files a pipeline load reads; the rest of a repo (sample images, original checkpoints) is skipped.
PIPELINE_PATTERNS = ["model_index.json", "*/*.json", "*/*.safetensors", "*/*.txt", "*/*.jinja", "*/*.model"]
# The config repo's own transformer weights are not needed: the single file replaces them.
_CONFIG_REPO_PATTERNS = [
    "model_index.json",
    "transformer/config.json",
    "text_encoder/*",
    "tokenizer/*",
    "vae/*",
    "scheduler/*",
]


@dataclass(frozen=True)
class WeightsLocation:
    """A directory `from_pretrained` can read, plus the entry's single transformer file and LoRA file, if any."""

    pipeline_dir: Path
    single_file: Path | None = None
    lora_file: Path | None = None


def with_variant(entry: ModelEntry, variant: QuantizedVariant | None) -> ModelEntry:
    """The entry as a plan loads it: from a pre-quantized variant's repo when the plan names one."""
    if variant is None:
        return entry
    return replace(entry, repo=variant.repo, revision=variant.revision, single_file=None, config_repo=None)


def _tiny_location(entry: ModelEntry, models_dir: Path) -> WeightsLocation:
    directory = tiny_dir(models_dir, entry.tiny)
    lora_file = tiny_dir(models_dir, entry.lora.tiny) / entry.lora.weight_name if entry.lora else None
    if entry.single_file is None:
        return WeightsLocation(directory, lora_file=lora_file)
    # Like the real pair (config repo + one file): the twin holds a pipeline without transformer weights.
    return WeightsLocation(directory, directory / entry.single_file, lora_file)


def _tiny_built(entry: ModelEntry, models_dir: Path) -> bool:
    lora_built = entry.lora is None or is_built(tiny_dir(models_dir, entry.lora.tiny))
    return lora_built and is_built(tiny_dir(models_dir, entry.tiny))


def is_available(entry: ModelEntry, models_dir: Path, *, tiny: bool) -> bool:
    """Whether loading `entry` needs no download."""
    if tiny:
        return _tiny_built(entry, models_dir)
    try:
        _cached_location(entry)
    except LocalEntryNotFoundError:
        return False
    return True


def locate(entry: ModelEntry, models_dir: Path, *, tiny: bool) -> WeightsLocation:
    """The weights on disk; downloads when missing unless offline, where it fails fast instead."""
    if tiny:
        if not _tiny_built(entry, models_dir):
            raise ModelNotCachedError(entry.id, "its tiny twin is not built; run `adgen-diffusion build-tiny`.")
        return _tiny_location(entry, models_dir)
    try:
        return _cached_location(entry)
    except LocalEntryNotFoundError:
        if is_offline_mode():
            raise ModelNotCachedError(
                entry.id,
                "it is not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE); "
                f"run `adgen-diffusion fetch {entry.id}` on a machine with network.",
            ) from None
    _LOGGER.warning("downloading %s from %s; pre-fetch with `adgen-diffusion fetch`", entry.id, entry.repo)
    try:
        return download(entry)
    except Exception:
        # No network, a gated repo, a full disk: the caller needs the reason, not a generic INTERNAL.
        _LOGGER.exception("downloading %s failed", entry.id)
        raise ModelNotCachedError(
            entry.id,
            "it is not cached and downloading it failed (see the service log); "
            f"run `adgen-diffusion fetch {entry.id}` on a machine with network.",
        ) from None


def _cached_location(entry: ModelEntry) -> WeightsLocation:
    return _with_lora(entry, _cached_base_location(entry), local_files_only=True)


def _with_lora(entry: ModelEntry, location: WeightsLocation, *, local_files_only: bool) -> WeightsLocation:
    """Adds the entry's LoRA file (from its own repo in the same cache); raises LocalEntryNotFoundError if absent."""
    if entry.lora is None:
        return location
    lora = entry.lora
    path = hf_hub_download(lora.repo, lora.weight_name, revision=lora.revision, local_files_only=local_files_only)
    return replace(location, lora_file=Path(path))


def _cached_base_location(entry: ModelEntry) -> WeightsLocation:
    if entry.single_file is None:
        return WeightsLocation(Path(snapshot_download(entry.repo, revision=entry.revision, local_files_only=True)))
    config_dir = snapshot_download(entry.config_repo or entry.repo, local_files_only=True)
    file_dir = snapshot_download(
        entry.repo, revision=entry.revision, allow_patterns=[entry.single_file], local_files_only=True
    )
    single = Path(file_dir) / entry.single_file
    if not single.is_file():
        raise LocalEntryNotFoundError(f"{entry.single_file} is not cached")
    return WeightsLocation(Path(config_dir), single)


def download(entry: ModelEntry) -> WeightsLocation:
    """Fetches an entry's files (LoRA included) into the Hugging Face cache (HF_HOME); needs network."""
    return _with_lora(entry, _download_base(entry), local_files_only=False)


def _download_base(entry: ModelEntry) -> WeightsLocation:
    if entry.single_file is None:
        path = snapshot_download(entry.repo, revision=entry.revision, allow_patterns=PIPELINE_PATTERNS)
        return WeightsLocation(Path(path))
    config_dir = snapshot_download(entry.config_repo or entry.repo, allow_patterns=_CONFIG_REPO_PATTERNS)
    file_dir = snapshot_download(entry.repo, revision=entry.revision, allow_patterns=[entry.single_file])
    return WeightsLocation(Path(config_dir), Path(file_dir) / entry.single_file)
