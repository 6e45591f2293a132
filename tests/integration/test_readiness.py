"""The orchestrator's readiness follows its downstreams, and it reconnects promptly when one restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adgen_client import AdGenError, AsyncAdGenClient
from adgen_copywriter.config import BackendChoice, CopywriterSettings
from adgen_copywriter.server import create_server as create_copywriter
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.server import create_server as create_diffusion
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.downstream import CONNECT_WAIT_S
from adgen_orchestrator.server import create_server as create_orchestrator
from adgen_runtime.server import RunningServer
from adgen_wire.channel import create_aio_channel
from tests.live_services import unused_loopback_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AD_SERVICE = "adgen.ad.v1.AdService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
KEYWORD = "여름 느낌 딸기 생과일 주스"
# Long enough for gRPC's default reconnect backoff (1 s, then 1.6 s, then 2.56 s) to have grown past 2.5 s.
OUTAGE_S = 3.0
# Our channels retry the connection at most 1 s apart (plus gRPC's 20% jitter).
RECONNECT_BOUND_S = 1.5


@dataclass
class Stack:
    """A real copywriter (template), a real diffusion service (tiny models) and an orchestrator on them."""

    diffusion: RunningServer
    diffusion_settings: DiffusionSettings
    orchestrator: RunningServer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.orchestrator.port}"

    @property
    def diffusion_target(self) -> str:
        return f"127.0.0.1:{self.diffusion_settings.port}"

    async def restart_diffusion(self) -> None:
        self.diffusion = await create_diffusion(self.diffusion_settings)


@pytest.fixture
async def stack(tiny_models_dir: Path, tmp_path: Path) -> AsyncIterator[Stack]:
    # Its own lease directory: the session's live diffusion service holds the CPU's lease in the default one.
    diffusion_settings = DiffusionSettings(
        port=unused_loopback_port(), tiny=True, models_dir=tiny_models_dir, lease_dir=tmp_path
    )
    diffusion = await create_diffusion(diffusion_settings)
    copywriter = await create_copywriter(CopywriterSettings(port=0, backend=BackendChoice.TEMPLATE))
    orchestrator = await create_orchestrator(
        OrchestratorSettings(
            port=0,
            http_enabled=False,
            copywriter_target=f"127.0.0.1:{copywriter.port}",
            diffusion_target=f"127.0.0.1:{diffusion_settings.port}",
        )
    )
    stack = Stack(diffusion, diffusion_settings, orchestrator)
    yield stack
    await orchestrator.stop(None)
    await copywriter.stop(None)
    await stack.diffusion.stop(None)


class Readiness:
    """A health watch on one service name, read change by change."""

    def __init__(self, channel: aio.Channel, service: str) -> None:
        request = health_pb2.HealthCheckRequest(service=service)
        self._watch = health_pb2_grpc.HealthStub(channel).Watch(request, wait_for_ready=True)

    async def becomes(self, status: int, within_s: float = 10.0) -> None:
        async def changes() -> None:
            while True:
                reply = await self._watch.read()
                assert isinstance(reply, health_pb2.HealthCheckResponse)
                if reply.status == status:
                    return

        await asyncio.wait_for(changes(), within_s)

    def close(self) -> None:
        self._watch.cancel()


async def _liveness(channel: aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    return int(reply.status)


async def test_readiness_goes_not_serving_while_diffusion_is_down_and_back_when_it_returns(stack: Stack) -> None:
    async with create_aio_channel(stack.target) as channel:
        readiness = Readiness(channel, AD_SERVICE)
        try:
            await readiness.becomes(SERVING)
            await stack.diffusion.stop(None)
            await readiness.becomes(NOT_SERVING)
            assert await _liveness(channel) == SERVING  # Alive: only unable to do its work.
            await stack.restart_diffusion()
            await readiness.becomes(SERVING)
        finally:
            readiness.close()


async def test_readiness_waits_for_a_copywriter_that_comes_up_late(stack: Stack) -> None:
    copywriter_port = unused_loopback_port()
    orchestrator = await create_orchestrator(
        OrchestratorSettings(
            port=0,
            http_enabled=False,
            copywriter_target=f"127.0.0.1:{copywriter_port}",
            diffusion_target=stack.diffusion_target,
        )
    )
    copywriter: RunningServer | None = None
    try:
        async with create_aio_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            request = health_pb2.HealthCheckRequest(service=AD_SERVICE)
            reply = await health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
            assert reply.status == NOT_SERVING and await _liveness(channel) == SERVING
            readiness = Readiness(channel, AD_SERVICE)
            try:
                copywriter = await create_copywriter(
                    CopywriterSettings(port=copywriter_port, backend=BackendChoice.TEMPLATE)
                )
                await readiness.becomes(SERVING)
            finally:
                readiness.close()
    finally:
        await orchestrator.stop(None)
        if copywriter is not None:
            await copywriter.stop(None)


async def test_a_downstream_that_is_down_is_reported_soon_not_at_the_callers_deadline(stack: Stack) -> None:
    await stack.diffusion.stop(None)
    started = time.monotonic()
    async with AsyncAdGenClient(stack.target, timeout=60) as client:
        with pytest.raises(AdGenError) as raised:
            await client.create_ad(KEYWORD, width=64, height=64, num_inference_steps=1)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE and raised.value.reason == "UPSTREAM_UNAVAILABLE"
    assert raised.value.metadata["service"] == "diffusion"
    # Each attempt waits CONNECT_WAIT_S for a reconnect; the SDK's channel makes three.
    assert time.monotonic() - started < 3 * CONNECT_WAIT_S + 3


async def test_after_a_downstream_restart_the_next_call_succeeds_without_waiting_out_a_backoff(stack: Stack) -> None:
    async with AsyncAdGenClient(stack.target, timeout=60) as client, create_aio_channel(stack.target) as channel:
        await client.create_ad(KEYWORD, width=64, height=64, num_inference_steps=1)
        readiness = Readiness(channel, AD_SERVICE)
        try:
            await readiness.becomes(SERVING)
            await stack.diffusion.stop(None)
            await readiness.becomes(NOT_SERVING)
            # The outage itself, not a wait for something: meanwhile the orchestrator's diffusion channel keeps
            # trying to reconnect (its health watch waits for it), and gRPC's default backoff would grow.
            await asyncio.sleep(OUTAGE_S)
            await stack.restart_diffusion()
            back = time.monotonic()
            # The very next call waits for the reconnect (within its deadline) instead of failing at once ...
            call = asyncio.ensure_future(client.create_ad(KEYWORD, width=64, height=64, num_inference_steps=1))
            # ... which comes within a second: readiness, watched over the same channel, is back by then.
            await readiness.becomes(SERVING)
            assert time.monotonic() - back < RECONNECT_BOUND_S
            ad = await call
        finally:
            readiness.close()
    assert len(ad.images) == 1
