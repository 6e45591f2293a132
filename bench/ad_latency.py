# mypy: disallow-untyped-calls=False
"""CPU benchmark: what CreateAd adds to an image over the pipeline call itself (denoise + VAE decode).

A direct call of the resident tiny-twin pipeline through the diffusion engine, and CreateAd through the three real
services (diffusion on the tiny twins, the template copywriter, the orchestrator), alternated in one run, at each
size and format. "Added" is everything of CreateAd's wall time but the denoise and decode of its own job (the
diffusion service's JobTimings): copy, queue, load, the raw hop, crop, labels, the final encode, gRPC.

The services run as they are deployed, each in its own process (`--layouts processes`); for comparison, the same
with the orchestrator's allocators left at their defaults (`processes-default-malloc`: ADGEN_ORCHESTRATOR_
KEEP_IMAGE_BUFFERS=false, so every image's pages fault in afresh), and all three on the bench's one event loop
(`one-process`), where every hop also waits for the GIL and the loop.

Run: .venv/bin/python -m bench.ad_latency [--sizes 1080x1080 1080x1350] [--steps 2] [--repeats 5]
     [--layouts processes processes-default-malloc one-process]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

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


@asynccontextmanager
async def _one_process(models_dir: Path, engine: DiffusionEngine) -> AsyncIterator[int]:
    """The three services on this process's event loop; yields the orchestrator's port."""
    servers = await _start(models_dir, engine)
    try:
        yield servers[-1].port
    finally:
        for server in reversed(servers):
            await server.stop(None)


@asynccontextmanager
async def _processes(models_dir: Path, keep_image_buffers: bool = True) -> AsyncIterator[int]:
    """Each service in its own process, configured from the environment as deployed; yields the orchestrator's
    port once all three answer their health checks."""
    diffusion, copywriter, orchestrator = (_free_port() for _ in range(3))
    services = [
        (
            "adgen_diffusion.server",
            {
                "ADGEN_DIFFUSION_HOST": "127.0.0.1",
                "ADGEN_DIFFUSION_PORT": str(diffusion),
                "ADGEN_DIFFUSION_TINY": "true",
                "ADGEN_DIFFUSION_MODELS_DIR": str(models_dir),
                "ADGEN_DIFFUSION_DEVICE": "cpu",
            },
            diffusion,
        ),
        (
            "adgen_copywriter.server",
            {"ADGEN_COPYWRITER_PORT": str(copywriter), "ADGEN_COPYWRITER_BACKEND": "template"},
            copywriter,
        ),
        (
            "adgen_orchestrator.server",
            {
                "ADGEN_ORCHESTRATOR_PORT": str(orchestrator),
                "ADGEN_ORCHESTRATOR_HTTP_ENABLED": "false",
                "ADGEN_ORCHESTRATOR_COPYWRITER_TARGET": f"127.0.0.1:{copywriter}",
                "ADGEN_ORCHESTRATOR_DIFFUSION_TARGET": f"127.0.0.1:{diffusion}",
                "ADGEN_ORCHESTRATOR_KEEP_IMAGE_BUFFERS": str(keep_image_buffers).lower(),
            },
            orchestrator,
        ),
    ]
    async with AsyncExitStack() as stack:
        for module, env, port in services:
            code = f"from {module} import main; main()"
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, env={**os.environ, **env}, stderr=asyncio.subprocess.DEVNULL
            )
            stack.push_async_callback(_stop, process)
            await _serving(module, port, process)
        yield orchestrator


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)


async def _serving(module: str, port: int, process: asyncio.subprocess.Process, timeout_s: float = 120.0) -> None:
    """Waits until the service on `port` reports SERVING (gRPC health), or fails if its process died."""
    deadline = time.monotonic() + timeout_s
    async with create_aio_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"{module} exited with {process.returncode}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0, wait_for_ready=True)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError as error:
                if error.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    raise
    raise TimeoutError(f"nothing served on port {port} within {timeout_s:.0f} s")


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


LAYOUTS = ("processes", "processes-default-malloc", "one-process")
Row = tuple[str, Size, str, list[float], list[AdRun]]


async def run(models_dir: Path, sizes: list[Size], steps: int, repeats: int, layouts: list[str]) -> None:
    build_all_tiny_models(models_dir)
    engine = DiffusionEngine(ModelRegistry.load(tiny=True), models_dir, device="cpu")
    await asyncio.to_thread(engine.load, MODEL_ID)  # For the direct calls (one-process: shared with the service).
    rows: list[Row] = []
    for layout in layouts:
        stack = (
            _one_process(models_dir, engine)
            if layout == "one-process"
            else _processes(models_dir, keep_image_buffers=layout == "processes")
        )
        async with stack as port, create_aio_channel(f"127.0.0.1:{port}") as channel:
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
                    rows.append((layout, size, name, direct, ads))
    _print(rows, steps, repeats)


def _ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def _print(rows: list[Row], steps: int, repeats: int) -> None:
    print(f"\n== CreateAd vs the pipeline call, CPU, tiny {MODEL_ID} twin, {steps} steps, {repeats} alternated runs ==")
    header = (
        f"{'services':24} {'size':10} {'format':15} {'direct ms':>10} {'denoise+decode ms':>18}"
        f" {'CreateAd ms':>12} {'added ms':>9}"
        f" {'copy':>6} {'queue':>6} {'load':>6} {'encode':>7} {'deliver':>8}"
    )
    print(header)
    print("-" * len(header))
    for layout, size, name, direct, ads in rows:
        print(
            f"{layout:24} {size.width}x{size.height:<5} {name:15} {_ms(direct):10.0f}"
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
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    options = parser.parse_args()
    print("$ " + shlex.join([Path(sys.executable).name, "-m", "bench.ad_latency", *sys.argv[1:]]))
    asyncio.run(run(options.models_dir.resolve(), options.sizes, options.steps, options.repeats, options.layouts))


if __name__ == "__main__":
    main()
