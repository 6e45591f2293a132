"""WebSettings: where the web UI finds the AdService and how long it waits, from ADGEN_WEB_* variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from adgen_client.client import DEFAULT_TARGET


class WebSettings(BaseSettings):
    """Settings of the web UI; every field reads `ADGEN_WEB_<FIELD>` (e.g. `ADGEN_WEB_TARGET`)."""

    model_config = SettingsConfigDict(env_prefix="ADGEN_WEB_", extra="ignore")

    target: str = Field(DEFAULT_TARGET, min_length=1, description="host:port of the orchestrator's AdService.")
    timeout_s: float = Field(600.0, gt=0, description="Deadline of one create or edit call, in seconds.")
    image_width: int = Field(0, ge=0, description="Explicit image width for demos and tests; 0 uses the placement.")
    image_height: int = Field(0, ge=0, description="Explicit image height for demos and tests; 0 uses the placement.")
    num_inference_steps: int | None = Field(None, ge=1, description="Denoising steps; unset uses the model's.")
    max_photo_bytes: int = Field(
        20 * 1024 * 1024,
        ge=1,
        description="Largest photo the page takes, in bytes; keep it at the orchestrator's "
        "ADGEN_ORCHESTRATOR_MAX_INPUT_BYTES, so a photo it would refuse is refused on the page.",
    )

    @property
    def max_photo_megabytes(self) -> int:
        """The limit in Streamlit's upload unit (whole MiB, rounded up); the page checks the exact bytes."""
        return -(-self.max_photo_bytes // (1024 * 1024))
