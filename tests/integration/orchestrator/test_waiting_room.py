"""A diffusion job turned away by a full GPU queue waits in the orchestrator instead of failing its caller."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from grpc import aio

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.type.v1 import error_reason_pb2
from adgen_client import AdGenError
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.downstream import WaitingRoom
from adgen_orchestrator.server import OrchestratorServer, create_server
from adgen_runtime import Context
from adgen_runtime.errors import ResourceExhausted
from adgen_runtime.server import RunningServer
from adgen_wire.channel import create_aio_channel
from tests.support.orchestrator_fakes import FakeCopywriter, FakeDiffusion, serve_fakes

KEYWORD = "여름 느낌 딸기 생과일 주스"


def queue_full(retry_after_s: float) -> ResourceExhausted:
    return ResourceExhausted(error_reason_pb2.ERROR_REASON_QUEUE_FULL, "GPU queue is full", retry_after_s=retry_after_s)


@dataclass
class BusyDiffusion(FakeDiffusion):
    """A diffusion service with room for one job: while one runs (until `release`), others get QUEUE_FULL.

    `refusals` more jobs are turned away first, whatever runs.
    """

    refusals: int = 0
    retry_after_s: float = 0.2
    holding: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    running: bool = False
    attempts: int = 0
    refused: asyncio.Event = field(default_factory=asyncio.Event)

    async def StreamGenerate(
        self, request: df_pb.StreamGenerateRequest, context: Context
    ) -> AsyncIterator[df_pb.StreamGenerateResponse]:
        self.attempts += 1
        if self.refusals > 0 or self.running:
            self.refusals = max(self.refusals - 1, 0)
            self.refused.set()
            raise queue_full(self.retry_after_s)
        self.running = True
        try:
            first = True
            async for event in super().StreamGenerate(request, context):
                yield event
                if first and self.holding:
                    first = False
                    await self.release.wait()
        finally:
            self.running = False


@dataclass
class Stack:
    orchestrator: OrchestratorServer
    copywriter: FakeCopywriter
    diffusion: BusyDiffusion
    downstream: RunningServer


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    copywriter, diffusion = FakeCopywriter(), BusyDiffusion()
    downstream = await serve_fakes(copywriter, diffusion)
    target = f"127.0.0.1:{downstream.port}"
    orchestrator = await create_server(
        OrchestratorSettings(port=0, http_enabled=False, copywriter_target=target, diffusion_target=target)
    )
    yield Stack(orchestrator, copywriter, diffusion, downstream)
    await orchestrator.stop(None)
    await downstream.stop(None)


def _ad(variants: int = 1) -> ad_pb.CreateAdRequest:
    return ad_pb.CreateAdRequest(keyword=KEYWORD, width=64, height=64, variant_count=variants)


async def test_a_variant_turned_away_waits_and_the_copy_is_not_written_again(stack: Stack) -> None:
    stack.diffusion.refusals = 2
    async with create_aio_channel(f"127.0.0.1:{stack.orchestrator.port}") as channel:
        ad = await ad_grpc.AdServiceStub(channel).CreateAd(_ad(variants=2), timeout=30)
    assert len(ad.images) == 2
    assert len(stack.copywriter.calls) == 1  # The language-model step ran once, not once per refusal.
    # Two refusals, and the variant that met its sibling running (room for one job) was turned away and waited too.
    assert stack.diffusion.attempts >= 4 and len(stack.diffusion.calls) == 2


async def test_a_waiting_job_tries_again_as_soon_as_one_of_ours_ends_not_after_the_retry_delay(stack: Stack) -> None:
    stack.diffusion.holding, stack.diffusion.retry_after_s = True, 20.0
    async with create_aio_channel(f"127.0.0.1:{stack.orchestrator.port}") as channel:
        stub = ad_grpc.AdServiceStub(channel)
        first = stub.StreamCreateAd(ad_pb.StreamCreateAdRequest(request=_ad()), timeout=30)
        while not stack.diffusion.running:
            assert isinstance(await first.read(), ad_pb.StreamCreateAdResponse)
        second = asyncio.ensure_future(stub.CreateAd(_ad(), timeout=30))
        await asyncio.wait_for(stack.diffusion.refused.wait(), 10)  # Turned away: now in the waiting room.
        released = time.monotonic()
        stack.diffusion.release.set()
        assert len((await second).images) == 1
        assert time.monotonic() - released < 5  # Far sooner than the 20 s RetryInfo.
        first.cancel()


async def test_a_wait_the_callers_deadline_cannot_cover_ends_with_the_queue_full_and_its_retry_info(
    stack: Stack,
) -> None:
    stack.diffusion.refusals, stack.diffusion.retry_after_s = 100, 3.0
    async with create_aio_channel(f"127.0.0.1:{stack.orchestrator.port}") as channel:
        started = time.monotonic()
        with pytest.raises(aio.AioRpcError) as raised:
            await ad_grpc.AdServiceStub(channel).CreateAd(_ad(), timeout=1.0)
    refusal = AdGenError.from_rpc_error(raised.value)
    assert refusal.code == grpc.StatusCode.RESOURCE_EXHAUSTED and refusal.reason == "QUEUE_FULL"
    assert refusal.retry_after_s == 3.0 and refusal.metadata["service"] == "diffusion"
    assert time.monotonic() - started < 1.5  # Told before its deadline, not cut by it.


def test_a_full_waiting_room_turns_the_next_job_away_with_the_refusal() -> None:
    room, refusal = WaitingRoom(max_waiting=1), queue_full(2.0)
    place = room.enter(refusal)
    with pytest.raises(ResourceExhausted):
        room.enter(refusal)
    room.leave(place)
    assert room.waiting == 0
