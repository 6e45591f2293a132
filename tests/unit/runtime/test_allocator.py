"""keep_image_buffers: freed image-sized buffers are reused instead of faulted in again (in a fresh process each,
since the tuning is process-wide)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

# What the orchestrator does with each render, 30 times over, on a pool of delivery threads: take a fresh 4.4 MB
# raw message, read it into Pillow (5.9 MB of RGBX), crop it, encode a JPEG; prints the minor page faults taken.
_FAULTS = """
import io, json, resource, sys
from concurrent.futures import ThreadPoolExecutor
tune = sys.argv[1] == "tuned"
if tune:
    from adgen_runtime.allocator import keep_image_buffers
    tuning = keep_image_buffers()
from PIL import Image
raw = b"\\x01" * (1088 * 1360 * 3)
def deliver():
    message = bytes(bytearray(raw))
    picture = Image.frombuffer("RGB", (1088, 1360), message, "raw", "RGB", 1088 * 3, 1)
    picture.crop((4, 5, 1084, 1355)).save(io.BytesIO(), "JPEG", quality=95)
pool = ThreadPoolExecutor(4)
for _ in range(4):  # Every thread's first delivery faults its pages in either way.
    pool.submit(deliver).result()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    pool.submit(deliver).result()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"faults": faults, "glibc": tuning.glibc if tune else None,
                  "blocks": tuning.pillow_blocks_max if tune else None}))
"""


def _run(mode: str) -> dict[str, int | bool | None]:
    done = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    result: dict[str, int | bool | None] = json.loads(done.stdout)
    return result


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc thresholds are glibc's")
def test_tuned_process_reuses_image_sized_buffers_instead_of_faulting_their_pages_in_again() -> None:
    default, tuned = _run("default"), _run("tuned")
    assert tuned["glibc"] is True and tuned["blocks"] == 8
    assert isinstance(default["faults"], int) and isinstance(tuned["faults"], int)
    # Untuned, Pillow frees its blocks and glibc hands big chunks back to the kernel, so every delivery faults its
    # megabytes in again (about 150,000 faults here); tuned, the freed memory serves the next delivery.
    pages_per_delivery = (1088 * 1360 * 7) // 4096
    assert default["faults"] > 10 * pages_per_delivery
    assert tuned["faults"] < pages_per_delivery
