"""Domain errors of the diffusion engine; the servicer maps them to gRPC statuses."""

from __future__ import annotations


class DiffusionError(Exception):
    """Base of every expected engine failure. `str(error)` is written for callers."""


class ModelNotFoundError(DiffusionError):
    """The id is not in the registry."""

    def __init__(self, model_id: str) -> None:
        super().__init__(f"Model {model_id!r} is not in the registry; ListModels shows the allowed ids.")
        self.model_id = model_id


class ModelNotCachedError(DiffusionError):
    """The weights are not on this machine and downloads are off."""

    def __init__(self, model_id: str, hint: str) -> None:
        super().__init__(f"Model {model_id!r} is not available on this machine; {hint}")
        self.model_id = model_id


class ModelLoadError(DiffusionError):
    """The weights are there but could not be loaded (corrupt, wrong layout, out of memory)."""

    def __init__(self, model_id: str, why: str) -> None:
        super().__init__(f"Model {model_id!r} failed to load: {why}")
        self.model_id = model_id


class PlacementUnsupportedError(DiffusionError):
    """A plan's placement needs hardware this machine does not have."""

    def __init__(self, model_id: str, placement: str, device: str) -> None:
        super().__init__(
            f"Model {model_id!r} was planned with {placement}, which needs a CUDA GPU; this service runs on {device!r}."
        )
        self.model_id = model_id


class TaskUnsupportedError(DiffusionError):
    """The model cannot do what the request asks."""

    def __init__(self, model_id: str, task: str) -> None:
        super().__init__(f"Model {model_id!r} does not support {task}.")
        self.model_id = model_id


class JobCancelledError(DiffusionError):
    """The caller went away or its deadline passed; the job stopped."""

    def __init__(self) -> None:
        super().__init__("The job was cancelled.")


class QueueFullError(DiffusionError):
    """Too many jobs are waiting for the GPU."""

    def __init__(self, waiting: int, retry_after_s: float) -> None:
        # One decimal: the hint comes from the queue's ETA and is often under a second.
        super().__init__(f"The GPU queue is full ({waiting} jobs waiting); retry in about {retry_after_s:.1f} s.")
        self.retry_after_s = retry_after_s


class GpuLeaseError(DiffusionError):
    """Another process holds this device."""

    def __init__(self, device: str, holder: str) -> None:
        super().__init__(f"Device {device} is leased by another diffusion process ({holder}).")
        self.device = device


class ModelDoesNotFitError(DiffusionError):
    """No plan the registry allows fits this machine's memory budgets."""

    def __init__(
        self,
        model_id: str,
        *,
        device_budget: int,
        host_budget: int,
        smallest_device: int,
        smallest_host: int,
        smallest_plan: str,
        width: int,
        height: int,
    ) -> None:
        super().__init__(
            f"Model {model_id!r} does not fit this machine at {width}x{height}: its smallest plan ({smallest_plan}) "
            f"needs {_gib(smallest_device)} of device memory and {_gib(smallest_host)} of host RAM; the budgets are "
            f"{_gib(device_budget)} and {_gib(host_budget)}. ListModels shows what fits."
        )
        self.model_id = model_id
        self.device_budget = device_budget
        self.host_budget = host_budget
        self.smallest_device = smallest_device
        self.smallest_host = smallest_host
        self.width = width
        self.height = height


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB"
