# mypy: disallow-untyped-calls=False
"""CPU benchmark: denoising step time through the gRPC service (StreamGenerate) against a direct pipeline call.

Run: .venv/bin/python -m bench.diffusion_overhead [--models flux2-klein-4b z-image-turbo] [--side 256] [--steps 8]
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adgen.diffusion.v1 import diffusion_service_pb2 as pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as pb_grpc
from adgen.type.v1 import progress_pb2
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.engine import DiffusionEngine
from adgen_diffusion.registry import ModelRegistry
from adgen_diffusion.server import create_server
from adgen_diffusion.twins import build_all_tiny_models
from adgen_wire.channel import create_aio_channel

PROMPT = "iced strawberry latte on a wooden cafe table, summer light"
SEED = 7


@dataclass(frozen=True)
class Run:
    """One generation: when each denoising step finished, and the call's wall time."""

    step_times: list[float]
    wall_s: float

    @property
    def step_s(self) -> float:
        """Median time between consecutive step ends: pure step time plus any per-step overhead."""
        return statistics.median(b - a for a, b in zip(self.step_times, self.step_times[1:], strict=False))


def _direct(engine: DiffusionEngine, side: int, steps: int) -> Run:
    """The resident pipeline called as a user of diffusers would, with the same arguments as the service."""
    resident = engine._resident
    assert resident is not None
    step_times: list[float] = []

    def on_step_end(_pipe: Any, _step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        step_times.append(time.perf_counter())
        return tensors

    started = time.perf_counter()
    with torch.inference_mode():
        resident.pipeline(
            prompt=PROMPT,
            height=side,
            width=side,
            num_inference_steps=steps,
            guidance_scale=resident.entry.default_guidance,
            generator=torch.Generator(device="cpu").manual_seed(SEED),
            callback_on_step_end=on_step_end,
            output_type="pil",
        )
    return Run(step_times, time.perf_counter() - started)


async def _through_service(stub: pb_grpc.DiffusionServiceAsyncStub, model_id: str, side: int, steps: int) -> Run:
    """StreamGenerate, timing each DENOISING event as the client receives it."""
    request = pb.GenerateRequest(
        model_id=model_id, prompt=PROMPT, width=side, height=side, num_inference_steps=steps, seed=SEED
    )
    request.guidance_scale = ModelRegistry.load().get(model_id).default_guidance
    step_times: list[float] = []
    started = time.perf_counter()
    async for event in stub.StreamGenerate(pb.StreamGenerateRequest(request=request)):
        if event.HasField("progress") and event.progress.stage == progress_pb2.PROGRESS_STAGE_DENOISING:
            step_times.append(time.perf_counter())
        if event.HasField("result"):
            assert len(event.result.images) == 1
    return Run(step_times, time.perf_counter() - started)


async def bench_model(
    engine: DiffusionEngine, stub: pb_grpc.DiffusionServiceAsyncStub, model_id: str, side: int, steps: int, repeats: int
) -> tuple[list[Run], list[Run]]:
    # One untimed call each way: the service call loads the model, both warm up kernels and caches.
    await _through_service(stub, model_id, side, steps)
    await asyncio.to_thread(_direct, engine, side, steps)
    direct, service = [], []
    # Alternated, so drift in the machine's speed hits both sides alike.
    for _ in range(repeats):
        direct.append(await asyncio.to_thread(_direct, engine, side, steps))
        service.append(await _through_service(stub, model_id, side, steps))
    return direct, service


async def run(models_dir: Path, model_ids: list[str], side: int, steps: int, repeats: int) -> None:
    build_all_tiny_models(models_dir)
    engine = DiffusionEngine(ModelRegistry.load(tiny=True), models_dir, device="cpu")
    settings = DiffusionSettings(host="127.0.0.1", port=0, tiny=True, models_dir=models_dir, device="cpu")
    server = await create_server(settings, engine=engine)
    rows = []
    try:
        async with create_aio_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.DiffusionServiceStub(channel)
            for model_id in model_ids:
                direct, service = await bench_model(engine, stub, model_id, side, steps, repeats)
                rows.append((model_id, direct, service))
    finally:
        await server.stop(None)
    print("\n== denoising step time: service (gRPC StreamGenerate) vs direct pipeline call, CPU, tiny twins ==")
    threads = torch.get_num_threads()
    print(f"{side}x{side}, {steps} steps, {repeats} alternated runs each side, medians; torch threads {threads}")
    header = (
        f"{'model':22} {'direct step ms':>15} {'service step ms':>16} {'overhead ms':>12} {'step ratio':>11}"
        f" {'direct call s':>14} {'service call s':>15} {'call ratio':>11}"
    )
    print(header)
    print("-" * len(header))
    for model_id, direct, service in rows:
        direct_step = statistics.median([r.step_s for r in direct])
        service_step = statistics.median([r.step_s for r in service])
        direct_wall = statistics.median([r.wall_s for r in direct])
        service_wall = statistics.median([r.wall_s for r in service])
        print(
            f"{model_id:22} {direct_step * 1e3:15.2f} {service_step * 1e3:16.2f}"
            f" {(service_step - direct_step) * 1e3:12.2f} {service_step / direct_step:11.3f}"
            f" {direct_wall:14.3f} {service_wall:15.3f} {service_wall / direct_wall:11.3f}"
        )
    print(
        "step: median gap between consecutive step ends (direct: diffusers callback; service: DENOISING events as"
        " the client receives them).\ncall: whole call (direct: pipeline() to PIL; service: request to result, PNG"
        " encoding and transfer included)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--models", nargs="+", default=["flux2-klein-4b", "z-image-turbo"])
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    print("$ " + shlex.join([Path(sys.executable).name, "-m", "bench.diffusion_overhead", *sys.argv[1:]]))
    asyncio.run(run(options.models_dir, options.models, options.side, options.steps, options.repeats))


if __name__ == "__main__":
    main()
