"""Wires the diffusion service: engine, GPU worker, servicer, health, warm-up and shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from prometheus_client import CollectorRegistry

from adgen.diffusion.v1 import diffusion_service_pb2_grpc as pb_grpc
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.diffusion_core import DiffusionCore
from adgen_diffusion.engine import DiffusionEngine, ImageJob, default_planner, random_seed, resolve_device
from adgen_diffusion.errors import GpuLeaseError
from adgen_diffusion.lease import GpuLease
from adgen_diffusion.memory import detect_box
from adgen_diffusion.metrics import DiffusionMetrics
from adgen_diffusion.registry import ModelRegistry, Task
from adgen_diffusion.servicer import SERVICE_NAME, DiffusionServicer
from adgen_diffusion.worker import GpuWorker
from adgen_runtime.server import RunningServer, ServiceBinding, run_service, start_server
from adgen_runtime.telemetry import Telemetry

_LOGGER = logging.getLogger(__name__)


async def create_server(
    settings: DiffusionSettings, *, engine: DiffusionEngine | None = None, telemetry: Telemetry | None = None
) -> RunningServer:
    """Starts the service; readiness turns SERVING once the GPU lease is held (and warm-up, if on, passed).

    `engine` lets tests and benchmarks keep a handle on the engine they serve; by default one is built
    from the settings. The server's metrics share the engine's registry, so one /metrics shows both.
    """
    telemetry = telemetry or Telemetry.from_settings(settings, SERVICE_NAME)
    if engine is None:
        engine = build_engine(settings, telemetry.metrics)
    telemetry = dataclasses.replace(telemetry, metrics=engine.metrics.registry)
    lease = GpuLease.acquire(engine.device, settings.lease_dir)
    worker = GpuWorker(engine, queue_max=settings.queue_max, max_overtakes=settings.max_overtakes)
    running: RunningServer | None = None

    async def on_clean_changed(clean: bool) -> None:
        if running is not None:
            await running.set_ready(SERVICE_NAME, clean)

    core = DiffusionCore(worker, settings, on_clean_changed)
    servicer = DiffusionServicer(core)
    try:
        running = await start_server(
            settings,
            [
                ServiceBinding(
                    SERVICE_NAME,
                    lambda s: pb_grpc.add_DiffusionServiceServicer_to_server(servicer, s),
                    False,
                    # Model control swaps what the GPU holds for everyone: operators only, when tokens are on.
                    admin_methods=("LoadModel", "UnloadModel"),
                )
            ],
            extra_options=settings.connection_age_options(),
            telemetry=telemetry,
        )
    except BaseException:
        lease.release()
        raise

    async def shut_down() -> None:
        await asyncio.to_thread(worker.close)
        await asyncio.to_thread(core.close)
        await asyncio.to_thread(lambda: _unload_quietly(engine))
        lease.release()

    running.on_shutdown.append(shut_down)
    if settings.warmup:
        try:
            await _warm_up(worker, settings)
        except BaseException:
            await running.stop(None)
            raise
    await running.set_ready(SERVICE_NAME, True)
    return running


def build_engine(settings: DiffusionSettings, metrics: CollectorRegistry | None = None) -> DiffusionEngine:
    """The engine the settings describe, planning for the detected box or the budgets that emulate one.

    Its metrics go to `metrics` (a registry of its own by default)."""
    registry = ModelRegistry.load(settings.registry_path, tiny=settings.tiny)
    device = resolve_device(settings.device)
    planner = default_planner(
        registry,
        settings.models_dir,
        detect_box(device, settings.device_memory_budget, settings.host_memory_budget),
    )
    return DiffusionEngine(
        registry,
        settings.models_dir,
        settings.device,
        planner=planner,
        scratch_dir=settings.offload_dir,
        metrics=DiffusionMetrics(metrics or CollectorRegistry(), (entry.id for entry in registry)),
        max_batch_images=settings.max_batch_images,
    )


async def _warm_up(worker: GpuWorker, settings: DiffusionSettings) -> None:
    """Loads the default model and runs one small generation, so a broken setup fails at boot."""
    entry = worker.engine.registry.get(settings.default_model)
    side = entry.min_side
    job = ImageJob(
        entry.id,
        Task.TEXT_TO_IMAGE,
        "warm-up",
        side,
        side,
        min(2, entry.default_steps),
        entry.default_guidance,
        random_seed(),
    )
    done = await worker.submit(entry.id, lambda progress, stop: worker.engine.run(job, progress, stop))
    _LOGGER.info("warm-up on %s passed in %.2fs", entry.id, done.value.load_s + done.value.denoise_s)


def _unload_quietly(engine: DiffusionEngine) -> None:
    if engine.loaded_model_id is not None:
        engine.unload()


def main() -> None:
    """Console entry point: serve until SIGTERM/SIGINT."""
    from adgen_runtime.settings import load_settings

    settings = load_settings(DiffusionSettings)
    try:
        run_service(settings, create_server)
    except GpuLeaseError as error:
        # Another diffusion process owns this GPU: say so and exit instead of printing a traceback.
        _LOGGER.error("%s", error)
        raise SystemExit(1) from None


__all__ = ["create_server", "main"]
