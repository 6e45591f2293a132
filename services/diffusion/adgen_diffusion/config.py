"""Settings of the diffusion service, read from ADGEN_DIFFUSION_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import ByteSize, Field
from pydantic_settings import SettingsConfigDict

from adgen_runtime.settings import ServerSettings


class DiffusionSettings(ServerSettings):
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
    max_input_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Largest accepted input photo file, in bytes.")
    max_input_pixels: int = Field(
        40_000_000, ge=1, description="Largest accepted input photo, in pixels (width x height); guards against bombs."
    )
    warmup: bool = Field(
        False, description="Load the default model and run one small generation before readiness goes SERVING."
    )
    registry_path: Path | None = Field(
        None, description="A models.toml to use instead of the one shipped in the package."
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
