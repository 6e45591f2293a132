"""A local diffusion fleet on loopback behind one orchestrator with model-affinity routes: two replicas hold
the text-to-image model, one the edit model (tiny twins on the CPU)."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as df_grpc
from adgen.type.v1 import image_pb2
from adgen_copywriter.config import BackendChoice, CopywriterSettings
from adgen_copywriter.server import create_server as create_copywriter
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.engine import (
    BatchPart,
    DiffusionEngine,
    JobOutput,
    LoadReport,
    default_planner,
    resolve_device,
)
from adgen_diffusion.memory import detect_box
from adgen_diffusion.registry import ModelRegistry
from adgen_diffusion.server import create_server as create_diffusion
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.server import create_server as create_orchestrator
from adgen_runtime.server import RunningServer
from adgen_wire.channel import create_aio_channel
from tests.live_services import unused_loopback_port

TEXT_TO_IMAGE_MODEL = "flux2-klein-4b"
EDIT_MODEL = "qwen-image-edit-2511"
CALL_TIMEOUT_S = 240.0
# Long enough for any job running on a stopped replica to finish there.
STOP_GRACE_S = 60.0


class CountingEngine(DiffusionEngine):
    """The real engine, counting the model loads (switches) and the jobs it runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loads = 0
        self.jobs = 0
        self._count_lock = threading.Lock()

    def load(self, model_id: str, *args: Any, **kwargs: Any) -> LoadReport:
        report = super().load(model_id, *args, **kwargs)
        if not report.already_loaded:
            with self._count_lock:
                self.loads += 1
        return report

    def run_batch(self, parts: list[BatchPart]) -> list[JobOutput | BaseException]:
        # The worker hands every job to run_batch, alone or coalesced with compatible ones.
        with self._count_lock:
            self.jobs += len(parts)
        return super().run_batch(parts)


@dataclass
class Replica:
    engine: CountingEngine
    server: RunningServer

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@dataclass
class Fleet:
    text_to_image: tuple[Replica, Replica]
    edit: Replica
    orchestrator: str

    @property
    def replicas(self) -> tuple[Replica, ...]:
        return (*self.text_to_image, self.edit)

    def switches(self) -> int:
        """Model loads since each replica was preloaded with its own model."""
        return sum(replica.engine.loads - 1 for replica in self.replicas)


async def _replica(models_dir: Path, lease_dir: Path, model_id: str) -> Replica:
    """A diffusion server on the tiny twins with `model_id` loaded before the fleet takes traffic."""
    settings = DiffusionSettings(port=0, tiny=True, models_dir=models_dir, device="cpu", lease_dir=lease_dir)
    registry = ModelRegistry.load(None, tiny=True)
    planner = default_planner(registry, models_dir, detect_box(resolve_device("cpu"), None, None))
    engine = CountingEngine(registry, models_dir, "cpu", planner=planner)
    server = await create_diffusion(settings, engine=engine)
    async with create_aio_channel(f"127.0.0.1:{server.port}") as channel:
        await df_grpc.DiffusionServiceStub(channel).LoadModel(df_pb.LoadModelRequest(model_id=model_id), timeout=120)
    assert engine.loads == 1
    return Replica(engine, server)


@pytest.fixture
async def fleet(tiny_models_dir: Path, tmp_path: Path) -> AsyncIterator[Fleet]:
    started: list[RunningServer] = []
    try:
        replicas = []
        for name, model_id in (("t2i-a", TEXT_TO_IMAGE_MODEL), ("t2i-b", TEXT_TO_IMAGE_MODEL), ("edit", EDIT_MODEL)):
            lease_dir = tmp_path / name  # One GPU lease per replica: they share the CPU "device".
            lease_dir.mkdir()
            replica = await _replica(tiny_models_dir, lease_dir, model_id)
            started.append(replica.server)
            replicas.append(replica)
        first, second, edit = replicas
        copywriter = await create_copywriter(CopywriterSettings(port=0, backend=BackendChoice.TEMPLATE))
        started.append(copywriter)
        routes = {"text-to-image": f"ipv4:{first.address},{second.address}", "edit": f"ipv4:{edit.address}"}
        orchestrator = await create_orchestrator(
            OrchestratorSettings(
                port=0,
                http_enabled=False,
                copywriter_target=f"127.0.0.1:{copywriter.port}",
                # Nothing listens here: with both tasks routed, no call may fall through to it.
                diffusion_target=f"127.0.0.1:{unused_loopback_port()}",
                diffusion_routes=routes,
                default_model_id=TEXT_TO_IMAGE_MODEL,
                default_edit_model_id=EDIT_MODEL,
            )
        )
        started.append(orchestrator)
        yield Fleet((first, second), edit, f"127.0.0.1:{orchestrator.port}")
    finally:
        for server in reversed(started):
            await server.stop(None)


def _photo() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), "tan").save(buffer, "PNG")
    return buffer.getvalue()


async def _create(stub: ad_grpc.AdServiceAsyncStub, seed: int) -> ad_pb.CreateAdResponse:
    request = ad_pb.CreateAdRequest(keyword="딸기 주스", variant_count=1, width=128, height=128, seed=seed)
    request.num_inference_steps = 2
    reply: ad_pb.CreateAdResponse = await stub.CreateAd(request, timeout=CALL_TIMEOUT_S)
    return reply


async def _edit(stub: ad_grpc.AdServiceAsyncStub, seed: int) -> ad_pb.EditAdResponse:
    request = ad_pb.EditAdRequest(image=image_pb2.Image(data=_photo()), instruction="밝게 해 줘", seed=seed)
    request.num_inference_steps = 2
    reply: ad_pb.EditAdResponse = await stub.EditAd(request, timeout=CALL_TIMEOUT_S)
    return reply


async def _all(calls: list[Callable[[], Awaitable[Any]]], concurrency: int = 3) -> list[Any]:
    """Runs the calls with at most `concurrency` in flight (the CPU has two cores, shared)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


def _creates(stub: ad_grpc.AdServiceAsyncStub, seeds: range) -> list[Callable[[], Awaitable[Any]]]:
    return [lambda seed=seed: _create(stub, seed) for seed in seeds]  # type: ignore[misc]


async def test_a_mixed_stream_of_creates_and_edits_causes_no_model_switch(fleet: Fleet) -> None:
    async with create_aio_channel(fleet.orchestrator) as channel:
        stub = ad_grpc.AdServiceStub(channel)
        calls: list[Callable[[], Awaitable[Any]]] = []
        for seed in range(4):
            calls.append(lambda seed=seed: _create(stub, seed))  # type: ignore[misc]
            if seed % 2:
                calls.append(lambda seed=seed: _edit(stub, seed))  # type: ignore[misc]
        replies = await _all(calls)
    assert sum(isinstance(reply, ad_pb.CreateAdResponse) and len(reply.images) == 1 for reply in replies) == 4
    assert sum(isinstance(reply, ad_pb.EditAdResponse) and bool(reply.image.data) for reply in replies) == 2
    assert fleet.switches() == 0
    first, second = fleet.text_to_image
    assert first.engine.jobs + second.engine.jobs == 4 and first.engine.jobs > 0 and second.engine.jobs > 0
    assert fleet.edit.engine.jobs == 2


async def test_stopping_one_text_to_image_replica_mid_run_fails_no_request(fleet: Fleet) -> None:
    stopped, survivor = fleet.text_to_image
    async with create_aio_channel(fleet.orchestrator) as channel:
        stub = ad_grpc.AdServiceStub(channel)
        before = await _all(_creates(stub, range(0, 4)), concurrency=2)
        assert stopped.engine.jobs > 0, "round robin never used the replica about to stop"
        # Jobs already running there finish within the grace; new ones are refused and go to the survivor.
        stopping = asyncio.create_task(stopped.server.stop(STOP_GRACE_S))
        during = await _all(_creates(stub, range(4, 7)), concurrency=2)
        await stopping
        jobs_on_stopped = stopped.engine.jobs
        survivor_before = survivor.engine.jobs
        after = await _all(_creates(stub, range(7, 10)), concurrency=2)
    assert all(len(reply.images) == 1 for reply in (*before, *during, *after))
    assert stopped.engine.jobs == jobs_on_stopped
    assert survivor.engine.jobs == survivor_before + 3
    assert stopped.engine.jobs + survivor.engine.jobs == 10
    assert fleet.switches() == 0
