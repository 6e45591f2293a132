"""Where a registry entry's weights are on this machine: a tiny twin, or the Hugging Face cache."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import is_offline_mode, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from adgen_diffusion.errors import ModelNotCachedError
from adgen_diffusion.registry import ModelEntry
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
    """A directory `from_pretrained` can read, plus the single transformer file when the entry has one."""

    pipeline_dir: Path
    single_file: Path | None = None


def _tiny_location(entry: ModelEntry, models_dir: Path) -> WeightsLocation:
    directory = tiny_dir(models_dir, entry.tiny)
    if entry.single_file is None:
        return WeightsLocation(directory)
    # Like the real pair (config repo + one file): the twin holds a pipeline without transformer weights.
    return WeightsLocation(directory, directory / entry.single_file)


def is_available(entry: ModelEntry, models_dir: Path, *, tiny: bool) -> bool:
    """Whether loading `entry` needs no download."""
    if tiny:
        return is_built(tiny_dir(models_dir, entry.tiny))
    try:
        _cached_location(entry)
    except LocalEntryNotFoundError:
        return False
    return True


def locate(entry: ModelEntry, models_dir: Path, *, tiny: bool) -> WeightsLocation:
    """The weights on disk; downloads when missing unless offline, where it fails fast instead."""
    if tiny:
        if not is_built(tiny_dir(models_dir, entry.tiny)):
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
    return download(entry)


def _cached_location(entry: ModelEntry) -> WeightsLocation:
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
    """Fetches an entry's files into the Hugging Face cache (HF_HOME); needs network."""
    if entry.single_file is None:
        path = snapshot_download(entry.repo, revision=entry.revision, allow_patterns=PIPELINE_PATTERNS)
        return WeightsLocation(Path(path))
    config_dir = snapshot_download(entry.config_repo or entry.repo, allow_patterns=_CONFIG_REPO_PATTERNS)
    file_dir = snapshot_download(entry.repo, revision=entry.revision, allow_patterns=[entry.single_file])
    return WeightsLocation(Path(config_dir), Path(file_dir) / entry.single_file)


def load_single_file_transformer(
    entry: ModelEntry, location: WeightsLocation, *, dtype: torch.dtype, device: torch.device | None
) -> torch.nn.Module:
    """The transformer of a single-file entry, with its config from the pipeline directory (never the Hub)."""
    from adgen_diffusion.single_file import load_transformer

    assert location.single_file is not None
    return load_transformer(location.single_file, location.pipeline_dir, dtype=dtype, device=device, model_id=entry.id)
