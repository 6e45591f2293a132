"""The memory planner on the real models' meta-device sizes: what each box gets, and what it never gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from adgen_diffusion.planner import (
    GIB,
    HOST_BASELINE_BYTES,
    Box,
    MemoryPlanner,
    PlanDecision,
    Residency,
    host_memory_bytes,
    parse_size,
)
from adgen_diffusion.registry import ModelRegistry, Quantization, Task
from adgen_diffusion.sizes import ModelSizer

SEED_BOX = Box(device_bytes=24 * GIB, host_bytes=16 * GIB)
SMALL_CARD_BOX = Box(device_bytes=16 * GIB, host_bytes=32 * GIB)
BIG_BOX = Box(device_bytes=80 * GIB, host_bytes=64 * GIB)
# Every registry id is a seed model (test_registry pins the list).
SEED_MODELS = tuple(entry.id for entry in ModelRegistry.load())


@pytest.fixture(scope="module")
def sizer() -> ModelSizer:
    return ModelSizer()


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry.load()


def _decide(box: Box, sizer: ModelSizer, registry: ModelRegistry, model_id: str) -> PlanDecision:
    return MemoryPlanner(box, sizer).plan(registry.get(model_id))


@pytest.mark.parametrize("model_id", SEED_MODELS)
def test_every_seed_model_fits_the_seed_box_within_both_budgets(
    sizer: ModelSizer, registry: ModelRegistry, model_id: str
) -> None:
    decision = _decide(SEED_BOX, sizer, registry, model_id)
    assert decision.fits, decision.smallest.summary
    plan = decision.chosen
    assert plan is not None
    assert plan.peak_device_bytes <= SEED_BOX.device_bytes
    assert plan.peak_host_bytes <= SEED_BOX.host_bytes
    # 16 GB of host RAM holds none of these models whole: nothing may live in host RAM.
    assert all(c.residency is not Residency.HOST for c in plan.components)


def test_seed_box_keeps_klein_4b_whole_and_quantizes_only_what_does_not_fit(
    sizer: ModelSizer, registry: ModelRegistry
) -> None:
    klein_4b = _decide(SEED_BOX, sizer, registry, "flux2-klein-4b").chosen
    assert klein_4b is not None and klein_4b.quality_trade == "none"
    assert {c.residency for c in klein_4b.components} == {Residency.DEVICE}

    klein_9b = _decide(SEED_BOX, sizer, registry, "flux2-klein-9b").chosen
    assert klein_9b is not None and klein_9b.quality_trade != "none"
    # 34.8 GB of bf16 weights on a 24 GiB card: something must shrink, and 8-bit is enough.
    assert klein_9b.component("transformer").quantization in {Quantization.FLOAT8, Quantization.INT8}

    fp8 = _decide(SEED_BOX, sizer, registry, "flux2-klein-9b-fp8").chosen
    assert fp8 is not None
    assert fp8.component("transformer").storage == "float8_e4m3fn" and fp8.component("transformer").prequantized
    # The FP8 file is that model's own weights: only the text encoder's quantization is a trade.
    assert fp8.quality_trade.startswith("text encoder")


def test_seed_box_runs_qwen_edit_with_a_4bit_transformer(sizer: ModelSizer, registry: ModelRegistry) -> None:
    for model_id in ("qwen-image-edit-2511", "qwen-image-edit-2511-lightning-4step"):
        plan = _decide(SEED_BOX, sizer, registry, model_id).chosen
        assert plan is not None
        assert plan.component("transformer").quantization is Quantization.NF4
        assert "transformer nf4" in plan.quality_trade
    lightning = _decide(SEED_BOX, sizer, registry, "qwen-image-edit-2511-lightning-4step").chosen
    # A LoRA is not fused into 4-bit weights (that would requantize it); it stays an adapter.
    assert lightning is not None and lightning.lora_unfused and "LoRA kept as an adapter" in lightning.summary


@pytest.mark.parametrize("model_id", SEED_MODELS)
def test_an_80gb_box_keeps_every_model_whole_in_bf16(sizer: ModelSizer, registry: ModelRegistry, model_id: str) -> None:
    plan = _decide(BIG_BOX, sizer, registry, model_id).chosen
    assert plan is not None
    assert plan.quality_trade == "none" and plan.speed_cost == (1 if model_id == "flux2-klein-9b-fp8" else 0)
    assert {c.residency for c in plan.components} == {Residency.DEVICE}


def test_a_16gb_card_with_32gb_of_host_ram_offloads_or_quantizes(sizer: ModelSizer, registry: ModelRegistry) -> None:
    decisions = {model_id: _decide(SMALL_CARD_BOX, sizer, registry, model_id) for model_id in SEED_MODELS}
    klein_4b = decisions["flux2-klein-4b"].chosen
    # 16 GB of weights plus activations do not fit 16 GiB, but the host holds them: model offload, no quality loss.
    assert klein_4b is not None and klein_4b.quality_trade == "none"
    assert klein_4b.component("transformer").residency is Residency.HOST
    assert klein_4b.peak_host_bytes <= SMALL_CARD_BOX.host_bytes
    qwen = decisions["qwen-image-edit-2511"].chosen
    assert qwen is not None and qwen.peak_device_bytes <= SMALL_CARD_BOX.device_bytes
    for decision in decisions.values():
        if decision.chosen is not None:
            assert decision.chosen.peak_host_bytes <= SMALL_CARD_BOX.host_bytes


def test_a_plan_never_needs_more_host_ram_than_the_budget(sizer: ModelSizer, registry: ModelRegistry) -> None:
    # A huge card on a small host: model offload (all weights in host RAM) would be fastest to fit, and is refused.
    box = Box(device_bytes=16 * GIB, host_bytes=8 * GIB)
    for model_id in SEED_MODELS:
        decision = _decide(box, sizer, registry, model_id)
        if decision.chosen is not None:
            assert decision.chosen.peak_host_bytes <= box.host_bytes
            assert all(c.residency is not Residency.HOST for c in decision.chosen.components)


def test_no_plan_fits_when_the_host_cannot_hold_the_process_itself(sizer: ModelSizer, registry: ModelRegistry) -> None:
    box = Box(device_bytes=80 * GIB, host_bytes=HOST_BASELINE_BYTES // 2)
    decision = _decide(box, sizer, registry, "flux2-klein-4b")
    assert not decision.fits and decision.chosen is None
    # The smallest plan considered is still reported, for the refusal's details.
    assert decision.smallest.peak_host_bytes > box.host_bytes and decision.considered > 1


def test_float8_is_only_planned_on_gpus_with_fp8_compute(sizer: ModelSizer, registry: ModelRegistry) -> None:
    box = Box(device_bytes=24 * GIB, host_bytes=16 * GIB, fp8_compute=False)
    plan = _decide(box, sizer, registry, "flux2-klein-9b").chosen
    assert plan is not None
    assert all(c.quantization is not Quantization.FLOAT8 for c in plan.components)


def test_without_cuda_only_int8_and_the_stored_dtype_are_planned(sizer: ModelSizer, registry: ModelRegistry) -> None:
    cpu = Box(device_bytes=64 * GIB, host_bytes=64 * GIB, accelerator=False, fp8_compute=False)
    planner = MemoryPlanner(cpu, sizer)
    for model_id in SEED_MODELS:
        decision = planner.plan(registry.get(model_id))
        for plan in (decision.chosen, decision.smallest):
            assert plan is not None
            for component in plan.components:
                assert component.residency is not Residency.HOST
                if not component.prequantized:
                    assert component.quantization in {Quantization.NONE, Quantization.INT8}


def test_predicted_peaks_grow_with_the_image_and_tiling_bounds_the_vae(
    sizer: ModelSizer, registry: ModelRegistry
) -> None:
    planner = MemoryPlanner(BIG_BOX, sizer)
    entry = registry.get("qwen-image-edit-2511")
    small = planner.plan_with(entry, width=512, height=512, task=Task.IMAGE_EDIT)
    large = planner.plan_with(entry, width=2048, height=2048, task=Task.IMAGE_EDIT)
    tiled = planner.plan_with(entry, width=2048, height=2048, task=Task.IMAGE_EDIT, vae_tiling=True)
    assert small.peak_device_bytes < large.peak_device_bytes
    assert tiled.peak_device_bytes < large.peak_device_bytes
    assert small.weight_bytes == large.weight_bytes


def test_quantized_and_released_components_shrink_the_device_peak(sizer: ModelSizer, registry: ModelRegistry) -> None:
    planner = MemoryPlanner(BIG_BOX, sizer)
    entry = registry.get("flux2-klein-9b")
    whole = planner.plan_with(entry)
    int8 = planner.plan_with(entry, text_encoder=(Quantization.INT8, Residency.DEVICE))
    nf4 = planner.plan_with(entry, text_encoder=(Quantization.NF4, Residency.DEVICE))
    released = planner.plan_with(entry, text_encoder=(Quantization.NONE, Residency.RELEASED))
    streamed = planner.plan_with(entry, transformer=(Quantization.NONE, Residency.STREAMED))
    assert whole.peak_device_bytes > int8.peak_device_bytes > nf4.peak_device_bytes
    assert released.peak_device_bytes < whole.peak_device_bytes
    # Only two block groups of a streamed transformer are on the device at once.
    assert streamed.peak_device_bytes < whole.peak_device_bytes - whole.component("transformer").weight_bytes * 0.9
    assert released.speed_cost > whole.speed_cost and streamed.speed_cost > released.speed_cost
    assert int8.component("text_encoder").weight_bytes < whole.component("text_encoder").weight_bytes / 1.5


def test_a_pre_quantized_variant_names_its_own_repo_and_licence(sizer: ModelSizer, registry: ModelRegistry) -> None:
    entry = registry.get("qwen-image-edit-2511")
    (variant,) = entry.variants
    assert (variant.repo, variant.license, variant.commercial_use) == (
        "ovedrive/Qwen-Image-Edit-2511-4bit",
        "Apache-2.0",
        True,
    )
    plan = MemoryPlanner(SEED_BOX, sizer).plan_with(
        entry,
        transformer=(Quantization.NF4, Residency.DEVICE),
        text_encoder=(Quantization.NF4, Residency.DEVICE),
        variant=variant,
        vae_tiling=True,
    )
    assert plan.variant is variant and variant.repo in plan.summary
    assert all(c.prequantized for c in plan.components if c.name != "vae")
    assert plan.peak_device_bytes <= SEED_BOX.device_bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [("24GiB", 24 * GIB), ("16 GiB", 16 * GIB), ("16GB", 16 * 10**9), ("512MiB", 512 * 1024**2), ("1000", 1000)],
)
def test_sizes_parse_binary_and_decimal_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_a_size_without_a_number_is_refused() -> None:
    with pytest.raises(ValueError, match="24GiB"):
        parse_size("lots")


def test_host_memory_is_the_cgroup_limit_when_one_is_set(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text(f"{16 * GIB}\n")
    assert host_memory_bytes(tmp_path) == 16 * GIB
    (tmp_path / "memory.max").write_text("max\n")
    assert 0 < host_memory_bytes(tmp_path) != 16 * GIB
