"""Settings of the orchestrator, read from ADGEN_ORCHESTRATOR_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from adgen_runtime.settings import ServerSettings


class OrchestratorSettings(ServerSettings):
    """Everything the orchestrator reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="ADGEN_ORCHESTRATOR_")

    port: int = Field(50051, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    copywriter_target: str = Field("127.0.0.1:50052", description="host:port of the copywriter service.")
    diffusion_target: str = Field("127.0.0.1:50053", description="host:port of the diffusion service.")
    default_model_id: str = Field("flux2-klein-4b", description="Text-to-image model used when CreateAd names none.")
    default_edit_model_id: str = Field("qwen-image-edit-2511", description="Edit model used when EditAd names none.")
    copywriter_timeout_s: float = Field(
        60.0, gt=0, description="Timeout of a copywriter call when the caller sets no deadline."
    )
    diffusion_timeout_s: float = Field(
        600.0, gt=0, description="Timeout of a diffusion call when the caller sets no deadline."
    )
    deadline_margin_s: float = Field(
        0.2, ge=0, description="Time kept back from the caller's deadline so downstream errors still reach it."
    )
    max_input_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Largest accepted photo file for EditAd.")
    max_input_pixels: int = Field(
        40_000_000, ge=1, description="Largest accepted photo for EditAd, in pixels (guards against bombs)."
    )
