"""Measuring memory around loads and unloads: device allocator, host RSS, peak anonymous host memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil
import torch

from adgen_diffusion.planner import Box, host_memory_bytes

_LOGGER = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class MemoryReport:
    """Memory figures taken after a load or unload. Device figures are zero on CPU."""

    device_allocated_bytes: int = 0
    device_reserved_bytes: int = 0
    device_free_bytes: int = 0
    device_total_bytes: int = 0
    baseline_device_allocated_bytes: int = 0
    host_rss_bytes: int = 0
    peak_host_anon_bytes: int = 0
    model_bytes: int = 0
    leaked_modules: int = 0
    verified: bool = True


@dataclass(frozen=True)
class DeviceMemory:
    """The device allocator and the driver, as seen now."""

    allocated: int = 0
    reserved: int = 0
    free: int = 0
    total: int = 0


def device_memory(device: torch.device) -> DeviceMemory:
    """Allocator and driver figures of a CUDA device; zeros for the CPU."""
    if device.type != "cuda":
        return DeviceMemory()
    free, total = torch.cuda.mem_get_info(device)
    return DeviceMemory(
        allocated=torch.cuda.memory_allocated(device),
        reserved=torch.cuda.memory_reserved(device),
        free=free,
        total=total,
    )


def detect_box(device: torch.device, device_budget: int | None = None, host_budget: int | None = None) -> Box:
    """This machine as the planner sees it: detected memory unless a budget emulates a smaller box."""
    host = host_budget if host_budget is not None else host_memory_bytes()
    if device.type != "cuda":
        return Box(device_bytes=host, host_bytes=host, accelerator=False, fp8_compute=False)
    total = torch.cuda.get_device_properties(device).total_memory
    major, minor = torch.cuda.get_device_capability(device)
    # torchao float8 kernels need FP8 tensor cores: Ada (8.9) and newer.
    return Box(
        device_bytes=device_budget if device_budget is not None else total,
        host_bytes=host,
        accelerator=True,
        fp8_compute=(major, minor) >= (8, 9),
    )


def host_rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def status_bytes(field: str) -> int:
    """A kB field of /proc/self/status (VmRSS, RssAnon, VmHWM), in bytes; 0 where there is none."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def host_anon_bytes() -> int:
    """Anonymous resident memory (heap, not file mappings such as mmapped safetensors)."""
    return status_bytes("RssAnon") or host_rss_bytes()


class AnonPeakSampler:
    """Samples anonymous host memory in a thread while a block runs; `peak_above_start` is the result."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="anon-sampler", daemon=True)
        self.start_bytes = 0
        self.peak_bytes = 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak_bytes = max(self.peak_bytes, host_anon_bytes())

    def __enter__(self) -> AnonPeakSampler:
        self.start_bytes = self.peak_bytes = host_anon_bytes()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, host_anon_bytes())

    @property
    def peak_above_start(self) -> int:
        return max(0, self.peak_bytes - self.start_bytes)


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def trim_host_heap() -> None:
    """Returns freed glibc heap pages to the OS; a no-op off Linux/glibc."""
    if not sys.platform.startswith("linux"):
        return
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        _LOGGER.debug("malloc_trim unavailable")


def release_device_memory(device: torch.device) -> None:
    """Collects garbage and hands cached device and host memory back."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        # Pinned host blocks (streams, group offload): torch.accelerator's call from 2.13, the private one before.
        empty_host_cache = getattr(getattr(torch, "accelerator", None), "empty_host_cache", None)
        empty_host_cache = empty_host_cache or getattr(torch._C, "_host_emptyCache", None)
        if callable(empty_host_cache):
            empty_host_cache()
    trim_host_heap()
