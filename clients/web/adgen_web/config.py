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
