"""The README's Python SDK example runs as written against the live services."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from PIL import Image

from tests.live_services import Services

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def python_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


async def test_readme_sdk_example_creates_an_ad(services: Services, tmp_path: Path) -> None:
    (example,) = [code for code in python_examples() if "create_ad_and_wait(" in code]
    assert '"127.0.0.1:50051"' in example and 'Path("ad.jpg")' in example
    code = example.replace('"127.0.0.1:50051"', repr(services.orchestrator))
    code = code.replace('Path("ad.jpg")', f"Path({str(tmp_path / 'ad.jpg')!r})")
    # In a worker thread: the services share this test's event loop.
    await asyncio.to_thread(exec, compile(code, "README.md", "exec"), {})
    with Image.open(tmp_path / "ad.jpg") as image:
        assert image.format == "JPEG" and image.size == (1080, 1080)  # JPEG: the default output format
