"""A real orchestrator on a loopback port, wired to in-process fake downstream services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.server import OrchestratorServer, create_server
from adgen_runtime.server import RunningServer
from adgen_wire.channel import create_aio_channel
from tests.support.orchestrator_fakes import FakeCopywriter, FakeDiffusion, serve_fakes


@dataclass
class FakeStack:
    """The orchestrator under test and the fakes behind it."""

    orchestrator: OrchestratorServer
    copywriter: FakeCopywriter
    diffusion: FakeDiffusion
    downstream: RunningServer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.orchestrator.port}"

    @property
    def http_url(self) -> str:
        """Base URL of the orchestrator's HTTP (Connect) edge."""
        return f"http://127.0.0.1:{self.orchestrator.http_port}"


@pytest.fixture(scope="session")
async def fake_stack_session() -> AsyncIterator[FakeStack]:
    copywriter, diffusion = FakeCopywriter(), FakeDiffusion()
    downstream = await serve_fakes(copywriter, diffusion)
    target = f"127.0.0.1:{downstream.port}"
    settings = OrchestratorSettings(
        port=0,
        http_port=0,
        http_cors_origins=["https://shop.example"],
        copywriter_target=target,
        diffusion_target=target,
    )
    orchestrator = await create_server(settings)
    yield FakeStack(orchestrator, copywriter, diffusion, downstream)
    await orchestrator.stop(None)
    await downstream.stop(None)


@pytest.fixture
async def fake_stack(fake_stack_session: FakeStack) -> FakeStack:
    fake_stack_session.copywriter.reset()
    fake_stack_session.diffusion.reset()
    return fake_stack_session


@pytest.fixture
async def ad_stub(fake_stack: FakeStack) -> AsyncIterator[ad_grpc.AdServiceAsyncStub]:
    async with create_aio_channel(fake_stack.target) as channel:
        yield ad_grpc.AdServiceStub(channel)
