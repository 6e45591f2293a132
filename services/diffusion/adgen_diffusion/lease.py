"""An exclusive, per-device lease: one diffusion process per GPU; the lease dies with the process."""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from pathlib import Path

import torch

from adgen_diffusion.errors import GpuLeaseError

_LOGGER = logging.getLogger(__name__)


class GpuLease:
    """An flock on `<dir>/adgen-diffusion-<device>.lock`; the kernel drops it when the process exits.

    Not filelock: its locks are reentrant within a process (a per-path counter), so a second server in the
    same process would share the device without an error, and it records no holder for the refusal to name.
    Our own descriptor keeps both guarantees: one holder per device, and the holder's pid in the message.
    """

    def __init__(self, path: Path | None, descriptor: int | None) -> None:
        self.path = path
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(cls, device: torch.device, directory: Path | None = None) -> GpuLease:
        """Takes the lease or fails at once with GpuLeaseError naming the holder."""
        if device.type != "cuda":
            # The CPU is not a scarce device: test processes run several servers side by side.
            return cls(None, None)
        directory = directory or Path(tempfile.gettempdir())
        directory.mkdir(parents=True, exist_ok=True)
        name = str(device if device.index is not None else torch.device("cuda", 0)).replace(":", "-")
        path = directory / f"adgen-diffusion-{name}.lock"
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 64, 0).decode(errors="replace").strip() or "unknown pid"
            os.close(descriptor)
            raise GpuLeaseError(str(device), f"pid {holder}") from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, str(os.getpid()).encode(), 0)
        _LOGGER.info("holding the lease on %s (%s)", device, path)
        return cls(path, descriptor)

    def release(self) -> None:
        if self._descriptor is None:
            return
        fcntl.flock(self._descriptor, fcntl.LOCK_UN)
        os.close(self._descriptor)
        self._descriptor = None
