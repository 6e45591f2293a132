# mypy: disallow-untyped-calls=False
"""CPU benchmark of the diffusion service's engine: loads, peak host memory, switches, scheduling vs FIFO.

Run: .venv/bin/python -m bench.diffusion_cpu [--models-dir models] [--medium-mb 400] [--jobs 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import torch
from PIL import Image

from adgen_diffusion.engine import DiffusionEngine, ImageJob
from adgen_diffusion.registry import ModelRegistry, Task
from adgen_diffusion.tiny import MARKER_NAME, TINY_VERSION
from adgen_diffusion.twins import KLEIN_4B, build_all_tiny_models, build_pipeline
from adgen_diffusion.worker import GpuWorker

MB = 1e6


def _job(model_id: str, task: Task) -> ImageJob:
    image = Image.new("RGB", (64, 64), "white") if task is Task.IMAGE_EDIT else None
    return ImageJob(model_id, task, "iced latte", 64, 64, 2, 1.0, 1, 1, image)


def bench_loads(engine: DiffusionEngine, repeats: int) -> None:
    print("\n== load: time and peak anonymous host memory vs model bytes (tiny twins, CPU) ==")
    print(f"{'model':36} {'load s (median)':>16} {'model MB':>9} {'peak anon MB':>13} {'anon/model':>11}")
    models = ("flux2-klein-4b", "z-image-turbo", "qwen-image-edit-2511", "qwen-image-edit-2511-lightning-4step")
    for model_id in (*models, "flux2-klein-9b-fp8"):
        times, peaks = [], []
        model_bytes = 0
        for _ in range(repeats):
            engine.unload()
            report = engine.load(model_id)
            times.append(report.duration_s)
            peaks.append(report.memory.peak_host_anon_bytes)
            model_bytes = report.memory.model_bytes
        peak = max(peaks)
        print(
            f"{model_id:36} {statistics.median(times):16.3f} {model_bytes / MB:9.2f} {peak / MB:13.2f}"
            f" {peak / model_bytes:11.2f}"
        )
    engine.unload()


def bench_medium_load(megabytes: int) -> None:
    """A FLUX.2-shaped pipeline with a transformer of about `megabytes`, to see mmap loading at some scale."""
    print(f"\n== load of a ~{megabytes} MB random FLUX.2 pipeline through the engine (CPU, runs in fp32) ==")
    from diffusers import Flux2Transformer2DModel

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        torch.manual_seed(0)
        pipeline = build_pipeline(KLEIN_4B)
        # About 43M parameters (fp32: 4 bytes each) per double+single block pair at this width.
        layers = max(1, round(megabytes * MB / 4 / 43e6))
        pipeline.transformer = Flux2Transformer2DModel(
            patch_size=1,
            in_channels=128,
            num_layers=layers,
            num_single_layers=layers,
            attention_head_dim=32,
            num_attention_heads=32,
            joint_attention_dim=pipeline.transformer.config.joint_attention_dim,
            timestep_guidance_channels=256,
            axes_dims_rope=(8, 8, 8, 8),
            guidance_embeds=False,
            mlp_ratio=3.0,
        )
        # Same weights twice: fp32 on disk (loads by mmap) and bf16 on disk (the CPU converts to fp32).
        for variant, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            directory = root / variant / "tiny" / "flux2-klein-4b"
            pipeline.to(dtype).save_pretrained(directory)
            # Marked as a current twin, so the engine serves it as flux2-klein-4b's tiny weights.
            (directory / MARKER_NAME).write_text(json.dumps({"version": TINY_VERSION}))
        del pipeline
        for variant in ("fp32", "bf16"):
            engine = DiffusionEngine(ModelRegistry.load(tiny=True), root / variant, device="cpu")
            report = engine.load("flux2-klein-4b")
            memory = report.memory
            print(
                f"{variant} on disk: load {report.duration_s:.2f}s  model {memory.model_bytes / MB:.0f} MB  "
                f"peak anon +{memory.peak_host_anon_bytes / MB:.0f} MB  "
                f"anon/model {memory.peak_host_anon_bytes / memory.model_bytes:.2f}  "
                f"{memory.model_bytes / MB / report.duration_s:.0f} MB/s"
            )
            unloaded = engine.unload()
            print(f"  unload {unloaded.duration_s:.2f}s verified={unloaded.memory.verified}")


def bench_switches(engine: DiffusionEngine, cycles: int) -> None:
    print("\n== switch cost: flux2-klein-4b (t2i) <-> qwen-image-edit-2511 (edit), one job each ==")
    stop = threading.Event()
    switch_s, run_s = [], []
    for _ in range(cycles):
        for model_id, task in (("flux2-klein-4b", Task.TEXT_TO_IMAGE), ("qwen-image-edit-2511", Task.IMAGE_EDIT)):
            started = time.perf_counter()
            output = engine.run(_job(model_id, task), lambda _: None, stop)
            switch_s.append(output.load_s)
            run_s.append(time.perf_counter() - started - output.load_s)
    print(
        f"switch (unload + load) median {statistics.median(switch_s):.3f}s; job median {statistics.median(run_s):.3f}s"
    )
    engine.unload()


async def _makespan(engine: DiffusionEngine, jobs: list[ImageJob], max_overtakes: int) -> tuple[float, int]:
    worker = GpuWorker(engine, queue_max=len(jobs) + 1, max_overtakes=max_overtakes)
    gate = threading.Event()
    try:
        engine.load(jobs[0].model_id)
        blocker = asyncio.ensure_future(worker.submit(jobs[0].model_id, lambda _p, _c: gate.wait(60)))
        before = worker.switches
        calls = [asyncio.ensure_future(worker.submit(j.model_id, partial(engine.run, j), steps=j.steps)) for j in jobs]
        await asyncio.sleep(0)
        started = time.perf_counter()
        gate.set()
        await blocker
        await asyncio.gather(*calls)
        return time.perf_counter() - started, worker.switches - before
    finally:
        gate.set()
        worker.close()


def bench_scheduler(engine: DiffusionEngine, count: int) -> None:
    print(f"\n== scheduler: {count} interleaved generate/edit jobs queued at once ==")
    jobs = [
        _job("flux2-klein-4b", Task.TEXT_TO_IMAGE) if i % 2 == 0 else _job("qwen-image-edit-2511", Task.IMAGE_EDIT)
        for i in range(count)
    ]
    fifo_s, fifo_switches = asyncio.run(_makespan(engine, jobs, max_overtakes=0))
    swap_s, swap_switches = asyncio.run(_makespan(engine, jobs, max_overtakes=count))
    print(f"{'policy':12} {'makespan s':>11} {'switches':>9}")
    print(f"{'FIFO':12} {fifo_s:11.2f} {fifo_switches:9d}")
    print(f"{'swap-aware':12} {swap_s:11.2f} {swap_switches:9d}")
    print(f"makespan ratio FIFO/swap-aware: {fifo_s / swap_s:.2f}x")
    engine.unload()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--medium-mb", type=int, default=400, help="0 skips the medium-size load")
    options = parser.parse_args()
    build_all_tiny_models(options.models_dir)
    engine = DiffusionEngine(ModelRegistry.load(tiny=True), options.models_dir, device="cpu")
    bench_loads(engine, options.repeats)
    bench_switches(engine, options.repeats)
    bench_scheduler(engine, options.jobs)
    if options.medium_mb:
        bench_medium_load(options.medium_mb)


if __name__ == "__main__":
    main()
