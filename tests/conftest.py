"""Fixtures shared across the suite: the tiny diffusion models, built once and reused between runs."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# One set of live services per session, shared by tests/integration and tests/e2e.
pytest_plugins = ["tests.live_services"]


@pytest.fixture(scope="session")
def tiny_models_dir() -> Path:
    """`<repo>/models` with every tiny twin built (skipped when current ones are already there)."""
    from adgen_diffusion.twins import build_all_tiny_models

    models_dir = REPO_ROOT / "models"
    build_all_tiny_models(models_dir)
    return models_dir
