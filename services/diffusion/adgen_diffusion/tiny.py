"""Where the tiny random twins live and whether a current build is there (twins.py builds them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Bump when a twin's configs or files change, so stale twins are rebuilt instead of reused.
TINY_VERSION = "3"
MARKER_NAME = ".adgen-tiny.json"


def tiny_dir(models_dir: Path, name: str) -> Path:
    """Where the tiny twin `name` lives."""
    return models_dir / "tiny" / name


def is_built(directory: Path) -> bool:
    """True when `directory` holds a complete twin of the current TINY_VERSION."""
    marker = directory / MARKER_NAME
    if not marker.is_file():
        return False
    try:
        recorded: dict[str, Any] = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return recorded.get("version") == TINY_VERSION
