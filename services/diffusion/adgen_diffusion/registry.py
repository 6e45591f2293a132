"""The allowlist of models: ids, where their weights come from, and how to run them."""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from adgen_diffusion.errors import ModelNotFoundError

# Weighted components the planner places; their options come from [component_defaults] and the entry.
COMPONENTS = ("transformer", "text_encoder", "vae")
# models.toml is written by hand: a misspelt key is an error, not a silently ignored line.
_STRICT = ConfigDict(extra="forbid")


class Task(enum.Enum):
    """What a model can be asked to do."""

    TEXT_TO_IMAGE = "text_to_image"
    IMAGE_EDIT = "image_edit"


class Quantization(enum.Enum):
    """How a component's weights are held in memory."""

    NONE = "none"
    # torchao float8 weight-only: needs FP8 tensor cores (compute capability 8.9+).
    FLOAT8 = "float8"
    # torchao int8 weight-only, per-row scales: any device.
    INT8 = "int8"
    # bitsandbytes NF4 (4-bit, blocks of 64): CUDA only.
    NF4 = "nf4"


SchedulerValue = float | int | bool | str


@dataclass(frozen=True, config=_STRICT)
class ComponentOptions:
    """What the planner may do with one component of an entry."""

    # On-load quantizations allowed, besides keeping the stored dtype.
    quantize: tuple[Quantization, ...] = ()
    # Text encoder only: load it for encoding, then free it before denoising.
    release_after_encode: bool = False
    # Group offload streamed from disk: for weights larger than host RAM.
    stream_from_disk: bool = False
    # VAE only: decode (and encode) in tiles.
    tiling: bool = False


@dataclass(frozen=True, config=_STRICT)
class QuantizedVariant:
    """A pre-quantized copy of an entry's weights in its own repository, with its own licence."""

    name: str
    repo: str
    revision: str
    license: str
    commercial_use: bool
    # Component → how it is stored there; components not named come from the entry's own repo.
    quantized: tuple[tuple[str, Quantization], ...]


@dataclass(frozen=True, config=_STRICT)
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
    # Bytes of the LoRA file (the planner counts it on the device when it stays an unfused adapter).
    size_bytes: int = 0
    # Scheduler config values the LoRA was distilled with, applied over the base scheduler's config.
    scheduler: tuple[tuple[str, SchedulerValue], ...] = ()


@dataclass(frozen=True, config=_STRICT)
class ModelEntry:
    """One allowed model, as declared in models.toml; construction validates it."""

    id: str
    display_name: str
    repo: str
    revision: str
    # The pipeline family; each has one adapter in families.py.
    family: Literal["flux2-klein", "z-image", "qwen-image-edit-plus"]
    tasks: Annotated[frozenset[Task], Field(min_length=1)]
    default_steps: int
    default_guidance: float
    size_multiple: Annotated[int, Field(gt=0)]
    min_side: int
    max_side: int
    native_side: int
    dtype: Literal["bfloat16", "float16", "float32"]
    license: str
    commercial_use: bool
    tiny: str
    min_steps: int = 1
    single_file: str | None = None
    config_repo: str | None = None
    lora: LoraSpec | None = None
    components: tuple[tuple[str, ComponentOptions], ...] = ()
    # Whole-pipeline model offload (weights in host RAM, components take turns on the device).
    host_offload: bool = True
    variants: tuple[QuantizedVariant, ...] = ()

    def __post_init__(self) -> None:
        if self.min_side > self.max_side or self.min_side % self.size_multiple:
            raise ValueError("min_side must be a multiple of size_multiple <= max_side")
        # Defaults are what a request gets when it names nothing: they must pass the entry's own checks.
        if not self.min_side <= self.native_side <= self.max_side or self.native_side % self.size_multiple:
            raise ValueError("native_side must be a legal side between min and max")
        if not 1 <= self.min_steps <= self.default_steps:
            raise ValueError("default_steps must be at least min_steps (>= 1)")

    def supports(self, task: Task) -> bool:
        return task in self.tasks

    def options(self, component: str) -> ComponentOptions:
        return dict(self.components).get(component, ComponentOptions())

    @property
    def config_source(self) -> str:
        """The repo whose configs describe the pipeline (a single-file entry's config repo)."""
        return self.config_repo or self.repo


@dataclass(frozen=True, config=_STRICT)
class TinyLimits:
    """Size limits every entry takes while its tiny twin stands in for it."""

    min_side: int
    native_side: int


def _entry(model_id: str, raw: dict[str, Any], component_defaults: dict[str, Any]) -> ModelEntry:
    """One models.toml table as an entry: pydantic checks types and names, the entry its own rules."""
    fields = dict(raw)
    try:
        if "lora" in fields:
            lora = dict(fields["lora"])
            lora["scheduler"] = tuple(sorted(lora.get("scheduler", {}).items()))
            fields["lora"] = lora
        fields["components"] = _components(component_defaults, fields.get("components", {}))
        fields["variants"] = tuple(_variant(v) for v in fields.get("variants", []))
        return ModelEntry(id=model_id, **fields)
    except ValidationError as error:
        problems = "; ".join(_problem(e) for e in error.errors())
        raise ValueError(f"models.toml entry {model_id!r} is invalid: {problems}") from None
    except (TypeError, ValueError) as error:
        raise ValueError(f"models.toml entry {model_id!r} is invalid: {error}") from None


def _problem(error: Any) -> str:
    """One validation error as `field: what is wrong (got value)`."""
    where = ".".join(map(str, error["loc"])) or "entry"
    given = error.get("input")
    shown = f" (got {given!r})" if isinstance(given, str | int | float | bool) else ""
    return f"{where}: {error['msg']}{shown}"


def _components(defaults: dict[str, Any], overrides: dict[str, Any]) -> tuple[tuple[str, ComponentOptions], ...]:
    unknown = (set(defaults) | set(overrides)) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; known: {COMPONENTS}")
    return tuple(
        (name, ComponentOptions(**{**defaults.get(name, {}), **overrides.get(name, {})})) for name in COMPONENTS
    )


def _variant(raw: dict[str, Any]) -> dict[str, Any]:
    fields = dict(raw)
    quantized = fields.get("quantized", {})
    if not set(quantized) <= set(COMPONENTS):
        raise ValueError(f"variant {fields.get('name')!r} quantizes unknown components")
    fields["quantized"] = tuple(sorted(quantized.items()))
    return fields


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
        defaults = raw.get("component_defaults", {})
        entries = {model_id: _entry(model_id, fields, defaults) for model_id, fields in raw.get("models", {}).items()}
        limits = raw.get("tiny", {})
        tiny_limits = TinyLimits(
            min_side=int(limits.get("min_side", 32)), native_side=int(limits.get("native_side", 256))
        )
        return cls(entries, tiny_limits, tiny=tiny)

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.get(model_id) for model_id in self._entries)

    def get(self, model_id: str) -> ModelEntry:
        """The entry as this process serves it (tiny limits applied in tiny mode); unknown → ModelNotFoundError."""
        entry = self._entries.get(model_id)
        if entry is None:
            raise ModelNotFoundError(model_id)
        if not self.tiny:
            return entry
        return replace(entry, min_side=self.tiny_limits.min_side, native_side=self.tiny_limits.native_side)
