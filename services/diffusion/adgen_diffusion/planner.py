"""The memory planner: for a box (device and host budgets), how each component of a model should live.

It enumerates the placements the registry allows (stored dtype on the device, quantized on load, a
pre-quantized variant, a text encoder released after encoding, a transformer streamed from disk, whole-
pipeline model offload, VAE tiling), predicts each plan's peak device and host memory from the meta-device
sizes plus the activations of the requested size, drops every plan that exceeds a budget, and picks the
cheapest of the rest by quality loss plus speed cost. It loads nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adgen_diffusion.families import Workload, family_of
from adgen_diffusion.kept_configs import KeptRepo, kept_repo
from adgen_diffusion.registry import COMPONENTS, ModelEntry, Quantization, QuantizedVariant, Task
from adgen_diffusion.sizes import ComponentSize, ModelSizer

GIB = 1024**3
# CUDA context, cuBLAS/cuDNN workspaces and allocator fragmentation: outside torch's allocator, inside the card.
DEVICE_RESERVE_BYTES = 1 * GIB
# The service process itself (Python, torch, the CUDA runtime, diffusers, transformers), anonymous memory.
HOST_BASELINE_BYTES = 2 * GIB
# Activation estimates are first-order; plans must fit with this much to spare on top of them.
ACTIVATION_MARGIN = 1.25
# Compute dtype bytes (bf16 on a GPU); CPU runs are float32 but only run tiny twins.
_ACT_BYTES = 2
# Hidden-width tensors alive at the widest point of a transformer block (QKV, gated MLP expansion, residuals).
_TRANSFORMER_LIVE_WIDTHS = 16
# Peak decode memory per output pixel per full-resolution channel of the VAE (bf16): measured on CPU with the
# real VAE configs (`python -m bench.vae_activation`): AutoencoderKL ≈ 3.0 kB/px at 256 channels, Qwen ≈ 7.7 kB/px
# at 192 (its causal 3-D convs keep a feature cache).
_VAE_BYTES_PER_PIXEL_CHANNEL = {"kl": 12.0, "qwen": 40.0}
# Fraction of a streamed transformer resident at once: two block groups (the running one and the prefetch).
_STREAMED_GROUPS = 2

# Quality points of each quantization per component (0 = the stored weights). Weight-only 8-bit formats with
# per-row scales are near-lossless; NF4 costs visible detail on the transformer, less on a text encoder.
_QUALITY = {
    ("transformer", Quantization.NONE): 0,
    ("transformer", Quantization.FLOAT8): 1,
    ("transformer", Quantization.INT8): 1,
    ("transformer", Quantization.NF4): 3,
    ("text_encoder", Quantization.NONE): 0,
    ("text_encoder", Quantization.FLOAT8): 1,
    ("text_encoder", Quantization.INT8): 1,
    ("text_encoder", Quantization.NF4): 2,
}
# Speed points per job: dequantizing matmuls every step, re-reading a text encoder every job, moving every
# component over PCIe every job, reading the whole transformer from disk every step (tens of GB a step).
_SPEED_QUANTIZED_TRANSFORMER = 1
_SPEED_RELEASED = 2
_SPEED_HOST_OFFLOAD = 2
_SPEED_STREAMED = 10
_BITS = {Quantization.FLOAT8: 8, Quantization.INT8: 8, Quantization.NF4: 4}
# bitsandbytes NF4 quantizes in blocks of 64 with an absmax each; the 8-bit formats scale per row.
_BLOCK = {Quantization.FLOAT8: None, Quantization.INT8: None, Quantization.NF4: 64}


class Residency(enum.Enum):
    """Where a component's weights live between and during jobs."""

    DEVICE = "device"
    # Text encoder: read onto the device for encoding, freed before denoising.
    RELEASED = "released"
    # Group offload streamed from disk: a block group at a time on the device, weights on disk.
    STREAMED = "streamed"
    # Model offload: weights in host RAM, the component on the device only while it runs.
    HOST = "host"


@dataclass(frozen=True)
class Box:
    """The machine a plan is for: memory budgets and what its accelerator can do."""

    device_bytes: int
    host_bytes: int
    # A CUDA device: bitsandbytes, model offload and device streams need one.
    accelerator: bool = True
    # FP8 tensor cores (compute capability 8.9+): torchao float8.
    fp8_compute: bool = True

    @property
    def unified(self) -> bool:
        """On the CPU, the "device" is host RAM: one budget for both."""
        return not self.accelerator


@dataclass(frozen=True)
class ComponentPlan:
    """How one component lives under a plan."""

    name: str
    residency: Residency
    quantization: Quantization
    # What the weights are in memory: "bfloat16", "float8_e4m3fn", "int8", "nf4".
    storage: str
    weight_bytes: int
    # True when the weights arrive quantized (the FP8 file, a variant); False when quantized while loading.
    prequantized: bool = False
    tiling: bool = False

    def describe(self) -> str:
        label = _LABELS[self.name]
        if self.name == "vae":
            return f"{label} {'tiled' if self.tiling else 'whole'}"
        how = self.storage
        if self.quantization is not Quantization.NONE:
            how += " (pre-quantized)" if self.prequantized else " (quantized on load)"
        return f"{label} {how} {_WHERE[self.residency]}"


@dataclass(frozen=True)
class Plan:
    """One way to run a model on a box, with what it is predicted to need."""

    model_id: str
    components: tuple[ComponentPlan, ...]
    peak_device_bytes: int
    peak_host_bytes: int
    quality_loss: int
    speed_cost: int
    width: int
    height: int
    variant: QuantizedVariant | None = None
    # Kept as a separate adapter because its base weights are quantized (a fused LoRA would be requantized).
    lora_unfused: bool = False

    @property
    def cost(self) -> int:
        return self.quality_loss + self.speed_cost

    @property
    def weight_bytes(self) -> int:
        return sum(c.weight_bytes for c in self.components)

    def component(self, name: str) -> ComponentPlan:
        return next(c for c in self.components if c.name == name)

    @property
    def summary(self) -> str:
        text = "; ".join(c.describe() for c in self.components)
        if self.variant is not None:
            text += f"; weights from {self.variant.repo}"
        if self.lora_unfused:
            text += "; LoRA kept as an adapter"
        return text

    @property
    def quality_trade(self) -> str:
        """What the plan gives up against the stored weights, in words ("none" when nothing)."""
        trades = [
            f"{_LABELS[c.name]} {c.storage}"
            for c in self.components
            if c.quantization is not Quantization.NONE and not (c.prequantized and self.variant is None)
        ]
        return ", ".join(trades) or "none"

    @property
    def load_key(self) -> tuple[Any, ...]:
        """What must match for a resident pipeline to serve this plan without a reload (tiling toggles live)."""
        return (
            self.variant,
            tuple((c.name, c.residency, c.quantization) for c in self.components if c.name != "vae"),
        )


@dataclass(frozen=True)
class PlanDecision:
    """The planner's answer for one model: the chosen plan, if any fits, and the smallest plan considered."""

    model_id: str
    box: Box
    chosen: Plan | None
    smallest: Plan
    considered: int

    @property
    def fits(self) -> bool:
        return self.chosen is not None


@dataclass(frozen=True)
class _Phase:
    """Device and host bytes while one part of a job runs."""

    device: int
    host: int


@dataclass
class MemoryPlanner:
    """Plans every registry entry for one box; sizes come from the kept configs on the meta device."""

    box: Box
    sizer: ModelSizer = field(default_factory=ModelSizer)
    # Where an entry's configs are read: the kept real ones, or (tiny mode) its twin's directory.
    configs_of: Callable[[ModelEntry], KeptRepo] = field(default=lambda entry: kept_repo(entry.config_source))

    def plan(self, entry: ModelEntry, width: int = 0, height: int = 0, task: Task | None = None) -> PlanDecision:
        """The best plan for `entry` at `width`×`height` (0: the entry's native side) for `task`."""
        width, height = width or entry.native_side, height or entry.native_side
        task = task or _default_task(entry)
        sizes = self.sizes(entry)
        workload = self._workload(entry, sizes, width, height, task)
        plans = [
            self._predict(entry, candidate, sizes, workload, width, height)
            for candidate in _candidates(entry, self.box)
        ]
        fitting = [p for p in plans if self._fits(p)]
        chosen = min(fitting, key=_rank) if fitting else None
        smallest = min(plans, key=lambda p: (p.peak_device_bytes, p.peak_host_bytes))
        return PlanDecision(entry.id, self.box, chosen, smallest, len(plans))

    def plan_with(
        self,
        entry: ModelEntry,
        *,
        transformer: tuple[Quantization, Residency] = (Quantization.NONE, Residency.DEVICE),
        text_encoder: tuple[Quantization, Residency] = (Quantization.NONE, Residency.DEVICE),
        vae_tiling: bool = False,
        variant: QuantizedVariant | None = None,
        width: int = 0,
        height: int = 0,
        task: Task | None = None,
    ) -> Plan:
        """One given combination, predicted (whether or not it fits): for operators, tests and benchmarks."""
        host_offload = Residency.HOST in (transformer[1], text_encoder[1])
        candidate = _Candidate(transformer, text_encoder, vae_tiling, host_offload=host_offload, variant=variant)
        return self._predict_at(entry, candidate, width, height, task)

    def replan(
        self,
        entry: ModelEntry,
        plan: Plan,
        width: int,
        height: int,
        task: Task | None,
        *,
        vae_tiling: bool,
        batch: int = 1,
    ) -> Plan:
        """`plan` predicted again at another size (and tiling), for `batch` images in one pipeline call: can a
        resident pipeline serve this job as it is?"""
        transformer, encoder = plan.component("transformer"), plan.component("text_encoder")
        candidate = _Candidate(
            (transformer.quantization, transformer.residency),
            (encoder.quantization, encoder.residency),
            vae_tiling,
            host_offload=transformer.residency is Residency.HOST,
            variant=plan.variant,
        )
        return self._predict_at(entry, candidate, width, height, task, batch)

    def fits(self, plan: Plan) -> bool:
        return self._fits(plan)

    def _predict_at(
        self, entry: ModelEntry, candidate: _Candidate, width: int, height: int, task: Task | None, batch: int = 1
    ) -> Plan:
        width, height = width or entry.native_side, height or entry.native_side
        task = task or _default_task(entry)
        sizes = self.sizes(entry)
        workload = dataclasses.replace(self._workload(entry, sizes, width, height, task), batch=batch)
        return self._predict(entry, candidate, sizes, workload, width, height)

    def _workload(
        self, entry: ModelEntry, sizes: Mapping[str, ComponentSize], width: int, height: int, task: Task
    ) -> Workload:
        configs = {name: self.configs(entry).component_config(name) for name in sizes}
        return family_of(entry.family).workload(configs, width, height, task)

    def configs(self, entry: ModelEntry) -> KeptRepo:
        return self.configs_of(entry)

    def sizes(self, entry: ModelEntry) -> dict[str, ComponentSize]:
        # CPU runs load float32 (loader.py); GPU runs the stored bf16.
        stored = "float32" if self.box.unified else "bfloat16"
        return self.sizer.sizes_of(
            self.configs(entry), stored_dtype=stored, fp8_transformer=entry.single_file is not None
        )

    def _fits(self, plan: Plan) -> bool:
        if self.box.unified:
            return plan.peak_host_bytes <= self.box.host_bytes
        return plan.peak_device_bytes <= self.box.device_bytes and plan.peak_host_bytes <= self.box.host_bytes

    def _predict(
        self,
        entry: ModelEntry,
        candidate: _Candidate,
        sizes: Mapping[str, ComponentSize],
        workload: Workload,
        width: int,
        height: int,
    ) -> Plan:
        components = tuple(_component_plan(entry, name, candidate, sizes[name]) for name in COMPONENTS if name in sizes)
        by_name = {c.name: c for c in components}
        lora_bytes = entry.lora.size_bytes if entry.lora is not None else 0
        lora_unfused = bool(lora_bytes) and by_name["transformer"].quantization is not Quantization.NONE
        phases = _phases(by_name, sizes, workload, lora_bytes if lora_unfused else 0)
        peak_device = max(p.device for p in phases) + (DEVICE_RESERVE_BYTES if self.box.accelerator else 0)
        peak_host = max(p.host for p in phases) + HOST_BASELINE_BYTES
        if self.box.unified:
            peak_host += peak_device
        quality = sum(_QUALITY.get((c.name, c.quantization), 0) for c in components if not _stored_as_is(entry, c))
        return Plan(
            model_id=entry.id,
            components=components,
            peak_device_bytes=peak_device,
            peak_host_bytes=peak_host,
            quality_loss=quality,
            speed_cost=_speed(components, lora_unfused),
            width=width,
            height=height,
            variant=candidate.variant,
            lora_unfused=lora_unfused,
        )


@dataclass(frozen=True)
class _Candidate:
    """One combination of options, before prediction."""

    transformer: tuple[Quantization, Residency]
    text_encoder: tuple[Quantization, Residency]
    vae_tiling: bool
    host_offload: bool = False
    variant: QuantizedVariant | None = None


def _default_task(entry: ModelEntry) -> Task:
    return Task.IMAGE_EDIT if entry.tasks == {Task.IMAGE_EDIT} else Task.TEXT_TO_IMAGE


def _candidates(entry: ModelEntry, box: Box) -> Iterator[_Candidate]:
    """Every combination the registry and the box allow."""
    allowed = _allowed_quantizations(box)
    transformer_options = entry.options("transformer")
    encoder_options = entry.options("text_encoder")
    tiling = (False, True) if entry.options("vae").tiling else (False,)
    transformer = [(q, Residency.DEVICE) for q in (Quantization.NONE, *transformer_options.quantize) if q in allowed]
    if transformer_options.stream_from_disk:
        transformer.append((Quantization.NONE, Residency.STREAMED))
    encoder = [(q, Residency.DEVICE) for q in (Quantization.NONE, *encoder_options.quantize) if q in allowed]
    if encoder_options.release_after_encode:
        encoder += [(q, Residency.RELEASED) for q, _ in list(encoder)]
    for t, e, tiled in itertools.product(transformer, encoder, tiling):
        yield _Candidate(t, e, tiled)
    if entry.host_offload and box.accelerator:
        for tiled in tiling:
            none = (Quantization.NONE, Residency.HOST)
            yield _Candidate(none, none, tiled, host_offload=True)
    for variant in entry.variants:
        stored = dict(variant.quantized)
        if not set(stored.values()) <= allowed:
            continue
        for tiled in tiling:
            yield _Candidate(
                (stored.get("transformer", Quantization.NONE), Residency.DEVICE),
                (stored.get("text_encoder", Quantization.NONE), Residency.DEVICE),
                tiled,
                variant=variant,
            )


def _allowed_quantizations(box: Box) -> set[Quantization]:
    allowed = {Quantization.NONE, Quantization.INT8}
    if box.accelerator:
        allowed.add(Quantization.NF4)
    if box.accelerator and box.fp8_compute:
        allowed.add(Quantization.FLOAT8)
    return allowed


def _component_plan(entry: ModelEntry, name: str, candidate: _Candidate, size: ComponentSize) -> ComponentPlan:
    if name == "vae":
        residency = Residency.HOST if candidate.host_offload else Residency.DEVICE
        return ComponentPlan(
            name, residency, Quantization.NONE, "bfloat16", size.loaded_bytes, tiling=candidate.vae_tiling
        )
    quantization, residency = candidate.transformer if name == "transformer" else candidate.text_encoder
    if name == "transformer" and entry.single_file is not None:
        # BFL's FP8 file: block linears stay float8 as stored (fp8r), the rest bf16.
        return ComponentPlan(
            name, residency, Quantization.FLOAT8, "float8_e4m3fn", size.loaded_bytes, prequantized=True
        )
    if quantization is Quantization.NONE:
        return ComponentPlan(name, residency, quantization, "bfloat16", size.loaded_bytes)
    weight_bytes = size.quantized_bytes(_BITS[quantization], block_size=_BLOCK[quantization])
    storage = {Quantization.FLOAT8: "float8_e4m3fn", Quantization.INT8: "int8", Quantization.NF4: "nf4"}[quantization]
    prequantized = candidate.variant is not None
    return ComponentPlan(name, residency, quantization, storage, weight_bytes, prequantized=prequantized)


def _stored_as_is(entry: ModelEntry, component: ComponentPlan) -> bool:
    # The FP8 file is that entry's own weights: serving it as stored gives nothing up.
    return component.name == "transformer" and entry.single_file is not None


def _phases(
    by_name: Mapping[str, ComponentPlan],
    sizes: Mapping[str, ComponentSize],
    workload: Workload,
    lora_bytes: int,
) -> list[_Phase]:
    """Device and host bytes while encoding, loading, denoising and decoding."""
    transformer, encoder, vae = by_name["transformer"], by_name["text_encoder"], by_name["vae"]
    streamed = _STREAMED_GROUPS * _largest_block_bytes(sizes["transformer"], workload)

    def on_device(component: ComponentPlan, *, running: bool) -> int:
        if component.residency is Residency.DEVICE:
            return component.weight_bytes
        if component.residency is Residency.STREAMED:
            return streamed if running else 0
        # Released and host-offloaded components are on the device only while they run.
        return component.weight_bytes if running else 0

    host_resident = sum(c.weight_bytes for c in by_name.values() if c.residency is Residency.HOST)
    host_resident += streamed if transformer.residency is Residency.STREAMED else 0
    # Loading streams tensor by tensor (device_map, mmapped safetensors): about one tensor at a time in host RAM.
    load_host = max(s.largest_tensor_bytes for s in sizes.values())
    idle = sum(on_device(c, running=False) for c in by_name.values()) + lora_bytes
    # A batched call holds every image's activations at once (text, denoising and the VAE decode run batched).
    text_act = _margin(_text_activation(workload)) * workload.batch
    denoise_act = _margin(
        workload.transformer_tokens * workload.transformer_width * _ACT_BYTES * _TRANSFORMER_LIVE_WIDTHS
    )
    denoise_act *= workload.batch
    vae_act = _margin(_vae_activation(workload, vae.tiling)) * workload.batch

    def running(component: ComponentPlan, activation: int) -> int:
        return idle - on_device(component, running=False) + on_device(component, running=True) + activation

    released_reload = load_host if encoder.residency is Residency.RELEASED else 0
    return [
        _Phase(idle, host_resident + load_host),
        _Phase(running(encoder, text_act), host_resident + released_reload),
        _Phase(running(transformer, denoise_act), host_resident),
        _Phase(running(vae, vae_act), host_resident),
    ]


def _largest_block_bytes(size: ComponentSize, workload: Workload) -> int:
    return size.loaded_bytes // max(workload.transformer_blocks, 1)


def _text_activation(workload: Workload) -> int:
    # Every layer's hidden states are returned (klein reads three of them), plus one MLP expansion at a time.
    hidden = workload.text_tokens * workload.text_width * _ACT_BYTES * (workload.text_layers + 1)
    return hidden + workload.text_tokens * workload.text_intermediate * _ACT_BYTES * 2


def _vae_activation(workload: Workload, tiled: bool) -> int:
    pixels = min(workload.vae_pixels, workload.vae_tile_pixels) if tiled else workload.vae_pixels
    per_pixel = _VAE_BYTES_PER_PIXEL_CHANNEL[workload.vae_kind] * workload.vae_channels
    # Tiles are blended into one float32 image of the full size.
    blended = workload.vae_pixels * 3 * 4 if tiled else 0
    return int(pixels * per_pixel) + blended


def _margin(activation: int) -> int:
    return int(activation * ACTIVATION_MARGIN)


def _speed(components: tuple[ComponentPlan, ...], lora_unfused: bool) -> int:
    cost = int(lora_unfused)
    for component in components:
        if component.name == "transformer" and component.quantization is not Quantization.NONE:
            cost += _SPEED_QUANTIZED_TRANSFORMER
        cost += {
            Residency.DEVICE: 0,
            Residency.RELEASED: _SPEED_RELEASED,
            Residency.STREAMED: _SPEED_STREAMED,
            Residency.HOST: 0,
        }[component.residency]
    if any(c.residency is Residency.HOST for c in components):
        cost += _SPEED_HOST_OFFLOAD
    return cost


def _rank(plan: Plan) -> tuple[int, int, bool, int]:
    """Cheapest first; ties go to the better quality, then to no tiling, then to the smaller device peak."""
    return (plan.cost, plan.quality_loss, plan.component("vae").tiling, plan.peak_device_bytes)


_LABELS = {"transformer": "transformer", "text_encoder": "text encoder", "vae": "VAE"}
_WHERE = {
    Residency.DEVICE: "on the device",
    Residency.RELEASED: "released after encoding",
    Residency.STREAMED: "streamed from disk",
    Residency.HOST: "offloaded to host RAM",
}


def parse_size(text: str) -> int:
    """`24GiB`, `16GB`, `512MiB` or a plain byte count → bytes."""
    units = {
        "kib": 1024,
        "mib": 1024**2,
        "gib": GIB,
        "tib": 1024**4,
        "kb": 10**3,
        "mb": 10**6,
        "gb": 10**9,
        "tb": 10**12,
    }
    cleaned = text.strip().lower().replace(" ", "")
    for unit in sorted(units, key=len, reverse=True):
        if cleaned.endswith(unit):
            number = cleaned.removesuffix(unit)
            return int(float(number) * units[unit])
    cleaned = cleaned.removesuffix("b")
    if not cleaned.replace(".", "", 1).isdigit():
        raise ValueError(f"{text!r} is not a size such as 24GiB, 16GB or 512MiB")
    return int(float(cleaned))


def host_memory_bytes(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The cgroup's memory limit when one is set, else MemAvailable."""
    for limit_file in (cgroup_root / "memory.max", cgroup_root / "memory" / "memory.limit_in_bytes"):
        try:
            value = limit_file.read_text().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < 1 << 60:
            return int(value)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
