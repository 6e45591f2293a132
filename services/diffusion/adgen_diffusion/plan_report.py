"""`adgen-diffusion plan`: the planner's decisions for a box, as a table or JSON, without loading anything."""

from __future__ import annotations

import json
from typing import Any

from adgen_diffusion.errors import ModelNotFoundError
from adgen_diffusion.planner import GIB, Box, MemoryPlanner, PlanDecision, parse_size
from adgen_diffusion.registry import ModelRegistry

# The seed box's L4 (Ada): FP8 tensor cores.
_DEFAULT_CAPABILITY = (8, 9)


def plan_report(
    model_ids: list[str],
    *,
    device_memory: str | None,
    host_memory: str | None,
    compute_capability: str | None,
    width: int = 0,
    height: int = 0,
    as_json: bool = False,
) -> str:
    """Plans each named model (every model when none is named); ValueError names a bad argument."""
    registry = ModelRegistry.load()
    try:
        entries = [registry.get(model_id) for model_id in model_ids] or list(registry)
    except ModelNotFoundError as error:
        raise ValueError(str(error)) from None
    planner = MemoryPlanner(_box(device_memory, host_memory, compute_capability))
    decisions = [planner.plan(entry, width, height) for entry in entries]
    if as_json:
        return json.dumps([decision_json(d) for d in decisions], indent=2)
    return _table(planner.box, decisions)


def _box(device_memory: str | None, host_memory: str | None, compute_capability: str | None) -> Box:
    import torch

    from adgen_diffusion.memory import detect_box

    cuda = torch.cuda.is_available()
    detected = detect_box(torch.device("cuda" if cuda else "cpu"))
    device = parse_size(device_memory) if device_memory else detected.device_bytes
    host = parse_size(host_memory) if host_memory else detected.host_bytes
    if compute_capability:
        major, _, minor = compute_capability.partition(".")
        if not (major.isdigit() and minor.isdigit()):
            raise ValueError(f"--compute-capability {compute_capability!r} is not like 8.9")
        capability = (int(major), int(minor))
    elif cuda:
        capability = torch.cuda.get_device_capability()
    else:
        # Budgets without a GPU emulate a GPU box: the seed box's L4 unless told otherwise.
        capability = _DEFAULT_CAPABILITY
    return Box(device_bytes=device, host_bytes=host, accelerator=True, fp8_compute=capability >= (8, 9))


def decision_json(decision: PlanDecision) -> dict[str, Any]:
    """One model's decision: the chosen plan, or the smallest plan considered when none fits."""
    plan = decision.chosen or decision.smallest
    return {
        "model_id": decision.model_id,
        "fits": decision.fits,
        "plan": plan.summary,
        "components": {
            c.name: {
                "placement": c.residency.value,
                "dtype": c.storage,
                "quantization": c.quantization.value,
                "prequantized": c.prequantized,
                "tiled": c.tiling,
                "weight_bytes": c.weight_bytes,
            }
            for c in plan.components
        },
        "variant_repo": plan.variant.repo if plan.variant else None,
        "weight_bytes": plan.weight_bytes,
        "peak_device_bytes": plan.peak_device_bytes,
        "peak_host_bytes": plan.peak_host_bytes,
        "quality_trade": plan.quality_trade,
        "quality_loss": plan.quality_loss,
        "speed_cost": plan.speed_cost,
        "width": plan.width,
        "height": plan.height,
        "device_budget_bytes": decision.box.device_bytes,
        "host_budget_bytes": decision.box.host_bytes,
        "plans_considered": decision.considered,
    }


def _table(box: Box, decisions: list[PlanDecision]) -> str:
    lines = [
        f"Box: {box.device_bytes / GIB:.1f} GiB device, {box.host_bytes / GIB:.1f} GiB host RAM"
        f"{', FP8 compute' if box.fp8_compute else ''}. Peaks are predictions at the native size, margins included.",
        f"{'model':38} {'fits':4} {'device':>9} {'host':>9}  {'quality trade':34} plan",
    ]
    for decision in decisions:
        plan = decision.chosen or decision.smallest
        fits = "yes" if decision.fits else "NO"
        device, host = plan.peak_device_bytes / GIB, plan.peak_host_bytes / GIB
        lines.append(
            f"{decision.model_id:38} {fits:4} {device:6.1f} GiB {host:5.1f} GiB  {plan.quality_trade:34} {plan.summary}"
        )
    return "\n".join(lines)
