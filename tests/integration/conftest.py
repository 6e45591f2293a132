"""Integration-only fixtures; the live `services` fixture comes from tests/live_services.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.server import create_server as create_orchestrator
from tests.live_services import Services, unused_loopback_port


@pytest.fixture(scope="session")
async def orchestrator_without_diffusion(services: Services) -> AsyncIterator[str]:
    """An orchestrator whose diffusion target has nothing listening, next to a real copywriter."""
    orchestrator = await create_orchestrator(
        OrchestratorSettings(
            port=0,
            http_enabled=False,
            copywriter_target=services.copywriter,
            diffusion_target=f"127.0.0.1:{unused_loopback_port()}",
        )
    )
    yield f"127.0.0.1:{orchestrator.port}"
    await orchestrator.stop(None)
