"""Settings of the diffusion service, read from ADGEN_DIFFUSION_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ByteSize, Field
from pydantic_settings import SettingsConfigDict

from adgen_runtime.settings import PhotoLimitSettings, ServerSettings


class DiffusionSettings(PhotoLimitSettings, ServerSettings):
    """Everything the diffusion service reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="ADGEN_DIFFUSION_")

    port: int = Field(50053, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    models_dir: Path = Field(
        Path("./models"), description="Directory of local weights; tiny twins live in <models_dir>/tiny/."
    )
    tiny: bool = Field(
        False,
        description="Serve every registry id with its tiny random twin from <models_dir>/tiny (tests, offline demo).",
    )
    default_model: str = Field("flux2-klein-4b", description="Model used by Generate when the request names none.")
    default_edit_model: str = Field(
        "qwen-image-edit-2511", description="Model used by Edit when the request names none."
    )
    device: str = Field(
        "auto", description='Torch device: "auto" (cuda when available, else cpu), "cuda", "cuda:1", "cpu".'
    )
    queue_max: int = Field(16, ge=1, description="Jobs that may wait for the GPU; more get RESOURCE_EXHAUSTED.")
    warmup: bool = Field(
        False, description="Load the default model and run one small generation before readiness goes SERVING."
    )
    registry_path: Path | None = Field(
        None, description="A models.toml to use instead of the one shipped in the package."
    )
    max_batch_images: int = Field(
        4,
        ge=1,
        description="Images one pipeline call may carry: image_count > 1 and waiting text-to-image jobs of the same "
        "model, size, steps and guidance run batched, within what the memory planner allows. 1 turns batching off.",
    )
    encode_threads: int = Field(
        2, ge=1, description="Threads that encode output files (PNG, JPEG, WebP) off the GPU worker."
    )
    max_overtakes: int = Field(
        4, ge=0, description="How many later jobs may run before a waiting job (switch-avoidance aging bound)."
    )
    device_memory_budget: ByteSize | None = Field(
        None,
        description="Device memory the planner may use, e.g. 24GiB (emulates a smaller GPU); unset: the GPU's total.",
    )
    host_memory_budget: ByteSize | None = Field(
        None,
        description="Host RAM the planner may use, e.g. 16GiB; unset: the cgroup limit, else MemAvailable at start.",
    )
    offload_dir: Path | None = Field(
        None,
        description="Where a transformer streamed from disk keeps its group-offload files; default the temp directory.",
    )
    lease_dir: Path | None = Field(
        None, description="Where the per-device GPU lease lock file lives; default is the system temp directory."
    )
    max_connection_age_s: float = Field(
        300.0,
        ge=0,
        description="Age after which a client connection is asked to go (GOAWAY), so balancing clients re-resolve "
        "and spread over new replicas; 0 keeps connections forever.",
    )
    max_connection_age_grace_s: float = Field(
        900.0,
        ge=0,
        description="How long calls on an aged connection may still run before it is closed; longer than the "
        "longest job. 0 waits forever.",
    )

    def connection_age_options(self) -> list[tuple[str, Any]]:
        """gRPC server options that age client connections out (gRPC proposal A9); none when turned off."""
        if not self.max_connection_age_s:
            return []
        options: list[tuple[str, Any]] = [("grpc.max_connection_age_ms", int(self.max_connection_age_s * 1000))]
        if self.max_connection_age_grace_s:
            options.append(("grpc.max_connection_age_grace_ms", int(self.max_connection_age_grace_s * 1000)))
        return options
