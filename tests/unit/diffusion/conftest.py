"""Fixtures of the diffusion unit tests: one registry and one engine shared by the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adgen_diffusion.engine import DiffusionEngine
from adgen_diffusion.registry import ModelRegistry


@pytest.fixture(scope="session")
def tiny_registry() -> ModelRegistry:
    return ModelRegistry.load(tiny=True)


@pytest.fixture(scope="session")
def engine(tiny_registry: ModelRegistry, tiny_models_dir: Path) -> Iterator[DiffusionEngine]:
    """A CPU engine over the tiny twins; tests leave it in any state, so each one loads what it needs."""
    shared = DiffusionEngine(tiny_registry, tiny_models_dir, device="cpu")
    yield shared
    shared.unload()
