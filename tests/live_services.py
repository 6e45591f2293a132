"""The live services fixture: all three real services in-process on free loopback ports, diffusion on the
tiny models. Registered as a plugin in tests/conftest.py, so integration and e2e tests share one set."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adgen_copywriter.config import BackendChoice, CopywriterSettings
from adgen_copywriter.server import create_server as create_copywriter
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.server import create_server as create_diffusion
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.server import create_server as create_orchestrator
from adgen_runtime.server import RunningServer


@dataclass(frozen=True)
class Services:
    """host:port of each running service, and the base URL of the orchestrator's HTTP edge."""

    orchestrator: str
    copywriter: str
    diffusion: str
    orchestrator_http: str


def unused_loopback_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
async def services(tiny_models_dir: Path) -> AsyncIterator[Services]:
    """Starts diffusion (tiny), copywriter (offline template) and the orchestrator wired to them."""
    started: list[RunningServer] = []
    try:
        diffusion = await create_diffusion(DiffusionSettings(port=0, tiny=True, models_dir=tiny_models_dir))
        started.append(diffusion)
        copywriter = await create_copywriter(CopywriterSettings(port=0, backend=BackendChoice.TEMPLATE))
        started.append(copywriter)
        orchestrator = await create_orchestrator(
            OrchestratorSettings(
                port=0,
                http_port=0,
                copywriter_target=f"127.0.0.1:{copywriter.port}",
                diffusion_target=f"127.0.0.1:{diffusion.port}",
            )
        )
        started.append(orchestrator)
        yield Services(
            orchestrator=f"127.0.0.1:{orchestrator.port}",
            copywriter=f"127.0.0.1:{copywriter.port}",
            diffusion=f"127.0.0.1:{diffusion.port}",
            orchestrator_http=f"http://127.0.0.1:{orchestrator.http_port}",
        )
    finally:
        for server in reversed(started):
            await server.stop(None)
