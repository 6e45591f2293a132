# mypy: disallow-untyped-calls=False
"""CPU benchmark: what CreateAd adds to an image over the pipeline call itself (denoise + VAE decode).

A direct call of the resident tiny-twin pipeline through the diffusion engine, and CreateAd through the three real
services (diffusion on the tiny twins, the template copywriter, the orchestrator), alternated in one run, at each
size and format. "Added" is everything of CreateAd's wall time but the denoise and decode of its own job (the
diffusion service's JobTimings): copy, queue, load, the raw hop, crop, labels, the final encode, gRPC.

Run: .venv/bin/python -m bench.ad_latency [--sizes 1080x1080 1080x1350] [--steps 2] [--repeats 5]
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

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import image_pb2
from adgen_copywriter.config import BackendChoice, CopywriterSettings
from adgen_copywriter.server import create_server as create_copywriter
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.engine import DiffusionEngine
from adgen_diffusion.registry import ModelRegistry
from adgen_diffusion.server import create_server as create_diffusion
from adgen_diffusion.twins import build_all_tiny_models
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.server import create_server as create_orchestrator
from adgen_orchestrator.sizing import Size, SizeRules, generation_size
from adgen_runtime.server import RunningServer
from adgen_wire.channel import create_aio_channel

MODEL_ID = "flux2-klein-4b"
KEYWORD = "여름 느낌 딸기 생과일 주스"
PROMPT = "iced strawberry latte on a wooden cafe table, summer light"
SEED = 7
FORMATS = {"JPEG (default)": image_pb2.IMAGE_FORMAT_UNSPECIFIED, "PNG": image_pb2.IMAGE_FORMAT_PNG}
TARGET_MS = 30.0  # At 1080x1350 with the default format: 5 % of a 0.57 s FLUX.2 klein 4B image on an H100.


@dataclass(frozen=True)
class AdRun:
    """One CreateAd: its wall time as the client saw it and the response's own timings, in seconds."""

    wall_s: float
    copy_s: float
    queue_s: float
    load_s: float
    denoise_s: float
    decode_s: float
    encode_s: float
    deliver_s: float

    @property
    def added_s(self) -> float:
        """Everything but the pipeline's own work."""
        return self.wall_s - self.denoise_s - self.decode_s


def _s(duration: Any) -> float:
    return float(duration.ToNanoseconds()) / 1e9


def _direct(engine: DiffusionEngine, size: Size, steps: int) -> float:
    """The resident pipeline called as a user of diffusers would: denoise and VAE decode to a PIL image."""
    resident = engine._resident
    assert resident is not None
    started = time.perf_counter()
    with torch.inference_mode():
        resident.pipeline(
            prompt=PROMPT,
            height=size.height,
            width=size.width,
            num_inference_steps=steps,
            guidance_scale=resident.entry.default_guidance,
            generator=torch.Generator(device="cpu").manual_seed(SEED),
            output_type="pil",
        )
    return time.perf_counter() - started


async def _create_ad(
    stub: ad_grpc.AdServiceAsyncStub, size: Size, steps: int, image_format: image_pb2.ImageFormat.ValueType
) -> AdRun:
    request = ad_pb.CreateAdRequest(
        keyword=KEYWORD,
        width=size.width,
        height=size.height,
        seed=SEED,
        model_id=MODEL_ID,
        num_inference_steps=steps,
        output_format=image_format,
    )
    started = time.perf_counter()
    ad = await stub.CreateAd(request)
    wall_s = time.perf_counter() - started
    (image,) = ad.images
    t = image.timings
    return AdRun(
        wall_s, _s(ad.copy_duration), _s(t.queue), _s(t.load), _s(t.denoise), _s(t.decode), _s(t.encode), _s(t.deliver)
    )


async def _start(models_dir: Path, engine: DiffusionEngine) -> list[RunningServer]:
    diffusion = await create_diffusion(
        DiffusionSettings(host="127.0.0.1", port=0, tiny=True, models_dir=models_dir, device="cpu"), engine=engine
    )
    copywriter = await create_copywriter(CopywriterSettings(port=0, backend=BackendChoice.TEMPLATE))
    orchestrator = await create_orchestrator(
        OrchestratorSettings(
            port=0,
            http_enabled=False,
            copywriter_target=f"127.0.0.1:{copywriter.port}",
            diffusion_target=f"127.0.0.1:{diffusion.port}",
        )
    )
    return [diffusion, copywriter, orchestrator]


async def run(models_dir: Path, sizes: list[Size], steps: int, repeats: int) -> None:
    build_all_tiny_models(models_dir)
    engine = DiffusionEngine(ModelRegistry.load(tiny=True), models_dir, device="cpu")
    servers = await _start(models_dir, engine)
    rows: list[tuple[Size, str, list[float], list[AdRun]]] = []
    try:
        async with create_aio_channel(f"127.0.0.1:{servers[-1].port}") as channel:
            stub = ad_grpc.AdServiceStub(channel)
            for size in sizes:
                render = generation_size(size, SizeRules())
                for name, image_format in FORMATS.items():
                    # Untimed: loads the model, warms kernels, the model catalog and the channels.
                    await _create_ad(stub, size, steps, image_format)
                    await asyncio.to_thread(_direct, engine, render, steps)
                    direct, ads = [], []
                    for _ in range(repeats):  # Alternated, so drift in the machine's speed hits both alike.
                        direct.append(await asyncio.to_thread(_direct, engine, render, steps))
                        ads.append(await _create_ad(stub, size, steps, image_format))
                    rows.append((size, name, direct, ads))
    finally:
        for server in reversed(servers):
            await server.stop(None)
    _print(rows, steps, repeats)


def _ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def _print(rows: list[tuple[Size, str, list[float], list[AdRun]]], steps: int, repeats: int) -> None:
    print(f"\n== CreateAd vs the pipeline call, CPU, tiny {MODEL_ID} twin, {steps} steps, {repeats} alternated runs ==")
    header = (
        f"{'size':10} {'format':15} {'direct ms':>10} {'denoise+decode ms':>18} {'CreateAd ms':>12} {'added ms':>9}"
        f" {'copy':>6} {'queue':>6} {'load':>6} {'encode':>7} {'deliver':>8}"
    )
    print(header)
    print("-" * len(header))
    for size, name, direct, ads in rows:
        print(
            f"{size.width}x{size.height:<5} {name:15} {_ms(direct):10.0f}"
            f" {_ms([a.denoise_s + a.decode_s for a in ads]):18.0f} {_ms([a.wall_s for a in ads]):12.0f}"
            f" {_ms([a.added_s for a in ads]):9.1f} {_ms([a.copy_s for a in ads]):6.1f}"
            f" {_ms([a.queue_s for a in ads]):6.1f} {_ms([a.load_s for a in ads]):6.1f}"
            f" {_ms([a.encode_s for a in ads]):7.1f} {_ms([a.deliver_s for a in ads]):8.1f}"
        )
    print(
        "direct: the resident pipeline's __call__ at the render size (denoise + VAE decode to PIL), for scale.\n"
        "added: CreateAd's wall time (client side) minus the denoise and decode of its own job; copy, queue, load,"
        " encode, deliver: the response's timings (medians; deliver = the raw hop, crop, labels, gRPC)."
        f"\ntarget: added <= {TARGET_MS:.0f} ms at 1080x1350 with the default format."
    )


def _size(text: str) -> Size:
    width, height = text.lower().split("x")
    return Size(int(width), int(height))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--sizes", nargs="+", type=_size, default=[Size(1080, 1080), Size(1080, 1350)])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    print("$ " + shlex.join([Path(sys.executable).name, "-m", "bench.ad_latency", *sys.argv[1:]]))
    asyncio.run(run(options.models_dir, options.sizes, options.steps, options.repeats))


if __name__ == "__main__":
    main()
