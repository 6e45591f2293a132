"""Process-wide allocator tuning for a service that handles one large image after another.

Each rendered image crosses the orchestrator as several fresh buffers of a few MiB: the gRPC message, Pillow's
pixels, the crop, the encoder's output. By default glibc serves every allocation over its dynamic mmap threshold
(128 KiB at start) with a fresh mmap and returns it to the kernel on free, and Pillow keeps no freed blocks, so each
image faults all of its pages in again, zeroed by the kernel. On two shared cores that cost a 1080x1350 image 3-10 ms
as JPEG and 20-25 ms as PNG (bench/ad_latency.py, `processes-default-malloc` against `processes`). Keeping freed
buffers in the process for the next image removes it.

Not for the diffusion service: weights pass through host memory while a model loads, and on the 16 GB seed box
that memory must go back to the kernel when the model is unloaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from dataclasses import dataclass

# Pillow's C core (what PIL.Image calls `core`), whose block cache PILLOW_BLOCKS_MAX sets at import.
from PIL import _imaging as pillow_core

_LOGGER = logging.getLogger(__name__)

# mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Allocations below this come from the heap and are reused: larger than any image buffer we make (a 2048x2048
# RGBA render is 16 MiB), and glibc's own ceiling for the dynamic threshold (32 MiB on 64-bit) doubled.
MMAP_THRESHOLD_BYTES = 64 << 20
# Free memory at the top of the heap above this goes back to the kernel: room for a burst of concurrent images.
TRIM_THRESHOLD_BYTES = 256 << 20
# Pillow blocks (up to 16 MiB each) kept for reuse: one image in flight per delivery thread, with its crop.
PILLOW_BLOCKS_KEPT = 8


@dataclass(frozen=True)
class AllocatorTuning:
    """What `keep_image_buffers` changed: glibc's thresholds (False where the C library is not glibc) and Pillow's
    block cache."""

    glibc: bool
    pillow_blocks_max: int


def keep_image_buffers() -> AllocatorTuning:
    """Keeps freed image-sized buffers in the process instead of unmapping them (see the module docstring)."""
    glibc = _set_glibc_thresholds(MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES)
    pillow_core.set_blocks_max(PILLOW_BLOCKS_KEPT)
    return AllocatorTuning(glibc, pillow_core.get_blocks_max())


def _set_glibc_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        # gnu_get_libc_version exists in glibc only; musl and others keep their own allocators untouched.
        libc.gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError, TypeError):
        _LOGGER.info("not glibc: the C allocator keeps its defaults")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; a fixed mmap threshold also stops glibc's dynamic adjustment.
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
