# mypy: disallow-untyped-calls=False
"""Batched vs sequential images per second through DiffusionEngine, and the diffusion service's output encoders.

CPU (tiny twins): .venv/bin/python -m bench.diffusion_batching [--models flux2-klein-4b z-image-turbo]
    [--side 256] [--batches 2 4] [--steps 2] [--repeats 3]
GPU, by hand on a GPU box (klein 4B at 1024², random weights at the real sizes, built by bench.gpu_models):
    .venv/bin/python -m bench.diffusion_batching --gpu [--work-dir /data/adgen-bench] [--side 1024] [--batches 2 4]

Per model and batch size n, side by side: n images as n lone calls (max_batch_images=1), as one call
(image_count=n), and as n Generate-like jobs with different prompts coalesced by the GPU worker; images/s,
the speed-up over sequential, and the largest channel difference of a batched image from its lone twin
(float32 CPU: rounding only). Then the output encoders at the run's side (ms, bytes) at the settings in
adgen_diffusion/images.py against Pillow's defaults.

Figures (2-core shared CPU, Pillow 11, a 1024² photo; the grainy copy adds σ=4 noise): PNG level 1 28 ms
/ 106 kB (grain 200 ms / 2.05 MB) vs level 6 69 ms / 73 kB (grain 291 ms / 1.81 MB): level 1 is 2.4x
faster for +45% bytes on smooth output and +13% on grainy; JPEG q95 4:2:0 3-5 ms; WebP q90 method 0
28-43 ms vs method 4 68-163 ms; raw RGB (tobytes) 1-1.5 ms for 3.1 MB. Batching on CPU mostly shows
that it is correct (CPU matmuls are already wide); the GPU mode is where the throughput gain is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from adgen_diffusion.engine import DiffusionEngine, ImageJob
from adgen_diffusion.images import RAW_RGB, encode_image
from adgen_diffusion.registry import ModelRegistry, Task
from adgen_diffusion.worker import GpuWorker

PROMPTS = (
    "iced americano on a wooden cafe table, summer light",
    "strawberry latte in a glass, pink background",
    "a croissant on a marble counter, morning sun",
    "matcha soft-serve in a paper cup, street at dusk",
)
SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "iced-americano.jpg"


@dataclasses.dataclass(frozen=True)
class Row:
    model_id: str
    images: int
    sequential_ips: float
    batched_ips: float
    coalesced_ips: float
    max_difference: int


def _job(model_id: str, side: int, steps: int, guidance: float, prompt: str = PROMPTS[0], **fields: object) -> ImageJob:
    return dataclasses.replace(ImageJob(model_id, Task.TEXT_TO_IMAGE, prompt, side, side, steps, guidance, 7), **fields)  # type: ignore[arg-type]


def _best_s(run: Callable[[], object], repeats: int) -> float:
    """The median wall time of `repeats` runs (the first, warm-up run is not counted)."""
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _difference(first: Image.Image, second: Image.Image) -> int:
    return int(np.abs(np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16)).max())


def _coalesced(engine: DiffusionEngine, jobs: list[ImageJob]) -> list[Image.Image]:
    """`jobs` queued together behind a busy GPU thread, as concurrent Generate calls meet; their images."""

    async def run() -> list[Image.Image]:
        worker = GpuWorker(engine, queue_max=len(jobs) + 1, max_overtakes=4)
        gate, entered = threading.Event(), threading.Event()

        def hold(_progress: object, _cancel: threading.Event) -> None:
            entered.set()
            gate.wait(60)

        try:
            blocker = asyncio.ensure_future(worker.submit(None, hold))
            await asyncio.to_thread(entered.wait, 60)
            calls = [asyncio.ensure_future(worker.submit_images(job)) for job in jobs]
            await asyncio.sleep(0)
            gate.set()
            await blocker
            return [done.value.images[0] for done in await asyncio.gather(*calls)]
        finally:
            worker.close()

    return asyncio.run(run())


def bench_model(engine: DiffusionEngine, model_id: str, options: argparse.Namespace) -> list[Row]:
    entry = engine.registry.get(model_id)
    steps, guidance = options.steps or entry.default_steps, entry.default_guidance
    engine.load(model_id, width=options.side, height=options.side, task=Task.TEXT_TO_IMAGE)
    rows = []
    for count in options.batches:
        batched_job = _job(model_id, options.side, steps, guidance, image_count=count)
        variants = [
            _job(model_id, options.side, steps, guidance, PROMPTS[i % len(PROMPTS)], seed=i) for i in range(count)
        ]
        run_batched_job = partial(engine.run, batched_job, _quiet, threading.Event())
        engine.max_batch_images = 1
        sequential_s = _best_s(run_batched_job, options.repeats)
        lone = run_batched_job().images
        engine.max_batch_images = count
        batched_s = _best_s(run_batched_job, options.repeats)
        together = run_batched_job().images
        coalesced_s = _best_s(partial(_coalesced, engine, variants), options.repeats)
        rows.append(
            Row(
                model_id,
                count,
                count / sequential_s,
                count / batched_s,
                count / coalesced_s,
                max(_difference(a, b) for a, b in zip(lone, together, strict=True)),
            )
        )
    engine.unload()
    return rows


def _quiet(_: object) -> None:
    return None


def print_rows(rows: list[Row], where: str) -> None:
    print(f"\n== images/s: sequential vs one batched call vs coalesced jobs ({where}) ==")
    print(f"{'model':18} {'n':>2} {'sequential':>11} {'batched':>9} {'coalesced':>10} {'speed-up':>9} {'max diff':>9}")
    for row in rows:
        print(
            f"{row.model_id:18} {row.images:>2} {row.sequential_ips:>11.2f} {row.batched_ips:>9.2f}"
            f" {row.coalesced_ips:>10.2f} {row.batched_ips / row.sequential_ips:>8.2f}x {row.max_difference:>9}"
        )


def bench_encoders(side: int, repeats: int) -> None:
    photo = Image.open(SAMPLE).convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
    noise = np.random.default_rng(0).normal(0, 4, (side, side, 3))
    grainy = Image.fromarray(np.clip(np.asarray(photo, dtype=np.float64) + noise, 0, 255).astype(np.uint8))
    cases: list[tuple[str, Callable[[Image.Image], bytes]]] = [
        ("service PNG (level 1)", lambda image: encode_image(image, "png").data),
        ("Pillow PNG default (level 6)", lambda image: _pillow(image, "PNG")),
        ("service JPEG (q95 4:2:0)", lambda image: encode_image(image, "jpeg").data),
        ("service WebP (q90 method 0)", lambda image: encode_image(image, "webp").data),
        ("Pillow WebP q90 method 4", lambda image: _pillow(image, "WEBP", quality=90)),
        ("service RAW_RGB", lambda image: encode_image(image, RAW_RGB).data),
    ]
    print(f"\n== output encoders at {side}² (median of {repeats}) ==")
    print(f"{'encoder':30} {'photo ms':>9} {'photo kB':>9} {'grain ms':>9} {'grain kB':>9}")
    for name, encode in cases:
        figures = []
        for image in (photo, grainy):
            figures.append(_best_s(partial(encode, image), repeats) * 1000)
            figures.append(len(encode(image)) / 1000)
        print(f"{name:30} {figures[0]:>9.1f} {figures[1]:>9.0f} {figures[2]:>9.1f} {figures[3]:>9.0f}")


def _pillow(image: Image.Image, pil_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=pil_format, **options)
    return buffer.getvalue()


def run_cpu(options: argparse.Namespace) -> None:
    from adgen_diffusion.twins import build_all_tiny_models

    build_all_tiny_models(options.models_dir)
    engine = DiffusionEngine(ModelRegistry.load(tiny=True), options.models_dir, device="cpu")
    rows = [row for model_id in options.models for row in bench_model(engine, model_id, options)]
    print_rows(rows, f"tiny twins, CPU, {options.side}², {options.steps or 'default'} steps")
    bench_encoders(options.encode_side, options.repeats)


def run_gpu(options: argparse.Namespace) -> None:
    """Builds klein 4B's random-weight set at the real sizes, then measures in a child that finds it offline."""
    from bench.gpu_models import MODEL_SETS, SCALES, build_set, is_built

    hub = options.work_dir / "hub"
    model_set, scale = MODEL_SETS["flux2-klein-4b"], SCALES["full"]
    if not is_built(hub, model_set, scale):
        print(f"building flux2-klein-4b (full scale, random bf16 weights) in {hub}", flush=True)
        build_set(hub, model_set, scale)
    env = dict(os.environ, HF_HOME=str(options.work_dir), HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1")
    env.pop("ADGEN_DIFFUSION_TINY", None)
    command = [sys.executable, "-m", "bench.diffusion_batching", "--gpu-child", "--side", str(options.side)]
    command += ["--work-dir", str(options.work_dir), "--repeats", str(options.repeats), "--batches"]
    command += [str(count) for count in options.batches]
    raise SystemExit(subprocess.run(command, env=env, check=False).returncode)


def run_gpu_child(options: argparse.Namespace) -> None:
    import torch

    registry = ModelRegistry.load(tiny=False)
    engine = DiffusionEngine(registry, options.work_dir, device="cuda", scratch_dir=options.work_dir)
    rows = bench_model(engine, "flux2-klein-4b", options)
    name = torch.cuda.get_device_name(0)
    print_rows(rows, f"klein 4B, {name}, {options.side}², {options.steps or 'default'} steps, random weights")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["flux2-klein-4b", "z-image-turbo"])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--side", type=int, default=None, help="image side (CPU default 256, GPU default 1024)")
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--steps", type=int, default=0, help="denoising steps (0: the model's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--encode-side", type=int, default=1024)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default); 1 steadies a shared CPU"
    )
    parser.add_argument("--gpu", action="store_true", help="klein 4B at the real sizes on CUDA (run by hand)")
    parser.add_argument("--gpu-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/adgen-bench"))
    options = parser.parse_args()
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    if options.gpu or options.gpu_child:
        options.side = options.side or 1024
        (run_gpu_child if options.gpu_child else run_gpu)(options)
        return
    options.side = options.side or 256
    run_cpu(options)


if __name__ == "__main__":
    main()
