"""The allowlist of models: ids, where their weights come from, and how to run them."""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from adgen_diffusion.errors import ModelNotFoundError

PLACEMENTS = ("gpu", "model_offload", "sequential_offload", "group_offload")
DTYPES = ("bfloat16", "float16", "float32")


class Task(enum.Enum):
    """What a model can be asked to do."""

    TEXT_TO_IMAGE = "text_to_image"
    IMAGE_EDIT = "image_edit"


SchedulerValue = float | int | bool | str


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA applied on top of an entry's base weights at load (e.g. a few-step distillation)."""

    repo: str
    weight_name: str
    # Directory under <models_dir>/tiny/ holding a random LoRA of the same name for the tiny twin.
    tiny: str
    revision: str = "main"
    # Fused LoRAs cost nothing per step; the adapter modules are removed after fusing.
    fuse: bool = True
    scale: float = 1.0
    # Scheduler config values the LoRA was distilled with, applied over the base scheduler's config.
    scheduler: tuple[tuple[str, SchedulerValue], ...] = ()


@dataclass(frozen=True)
class ModelEntry:
    """One allowed model, as declared in models.toml."""

    id: str
    display_name: str
    repo: str
    revision: str
    pipeline_class: str
    tasks: frozenset[Task]
    default_steps: int
    default_guidance: float
    size_multiple: int
    min_side: int
    max_side: int
    native_side: int
    dtype: str
    placement: str
    vae_tiling: bool
    license: str
    commercial_use: bool
    tiny: str
    min_steps: int = 1
    single_file: str | None = None
    config_repo: str | None = None
    lora: LoraSpec | None = None

    def supports(self, task: Task) -> bool:
        return task in self.tasks

    @property
    def needs_accelerator(self) -> bool:
        return self.placement != "gpu"


@dataclass(frozen=True)
class TinyLimits:
    """Size limits every entry takes while its tiny twin stands in for it."""

    min_side: int
    native_side: int


def _entry(model_id: str, raw: dict[str, Any]) -> ModelEntry:
    fields = dict(raw)
    try:
        fields["tasks"] = frozenset(Task(t) for t in fields["tasks"])
        if "lora" in fields:
            fields["lora"] = _lora(fields["lora"])
        entry = ModelEntry(id=model_id, **fields)
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"models.toml entry {model_id!r} is invalid: {error}") from error
    if entry.placement not in PLACEMENTS:
        raise ValueError(f"models.toml entry {model_id!r}: placement must be one of {PLACEMENTS}")
    if entry.dtype not in DTYPES:
        raise ValueError(f"models.toml entry {model_id!r}: dtype must be one of {DTYPES}")
    if not entry.tasks:
        raise ValueError(f"models.toml entry {model_id!r} declares no tasks")
    if entry.min_side > entry.max_side or entry.min_side % entry.size_multiple:
        raise ValueError(f"models.toml entry {model_id!r}: min_side must be a multiple of size_multiple <= max_side")
    # Defaults are what a request gets when it names nothing: they must pass the entry's own checks.
    if not entry.min_side <= entry.native_side <= entry.max_side or entry.native_side % entry.size_multiple:
        raise ValueError(f"models.toml entry {model_id!r}: native_side must be a legal side between min and max")
    if not 1 <= entry.min_steps <= entry.default_steps:
        raise ValueError(f"models.toml entry {model_id!r}: default_steps must be at least min_steps (>= 1)")
    return entry


def _lora(raw: dict[str, Any]) -> LoraSpec:
    fields = dict(raw)
    fields["scheduler"] = tuple(sorted(fields.get("scheduler", {}).items()))
    return LoraSpec(**fields)


class ModelRegistry:
    """Registry ids mapped to entries; the tiny switch swaps in each entry's twin limits."""

    def __init__(self, entries: dict[str, ModelEntry], tiny_limits: TinyLimits, *, tiny: bool = False) -> None:
        self._entries = entries
        self.tiny_limits = tiny_limits
        self.tiny = tiny

    @classmethod
    def load(cls, path: Path | None = None, *, tiny: bool = False) -> ModelRegistry:
        """Reads a models.toml; without a path, the one shipped in this package."""
        if path is None:
            text = resources.files("adgen_diffusion").joinpath("models.toml").read_text(encoding="utf-8")
        else:
            text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
        entries = {model_id: _entry(model_id, fields) for model_id, fields in raw.get("models", {}).items()}
        limits = raw.get("tiny", {})
        tiny_limits = TinyLimits(
            min_side=int(limits.get("min_side", 32)), native_side=int(limits.get("native_side", 256))
        )
        return cls(entries, tiny_limits, tiny=tiny)

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.get(model_id) for model_id in self._entries)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._entries

    def ids(self) -> list[str]:
        return list(self._entries)

    def get(self, model_id: str) -> ModelEntry:
        """The entry as this process serves it (tiny limits applied in tiny mode); unknown → ModelNotFoundError."""
        entry = self._entries.get(model_id)
        if entry is None:
            raise ModelNotFoundError(model_id)
        if not self.tiny:
            return entry
        return replace(entry, min_side=self.tiny_limits.min_side, native_side=self.tiny_limits.native_side)
