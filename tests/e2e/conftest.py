"""End-to-end fixtures: the live services of tests/integration, re-exported so tests/e2e can use them."""

from __future__ import annotations

from tests.integration.conftest import Services, services, unused_loopback_port

__all__ = ["Services", "services", "unused_loopback_port"]
