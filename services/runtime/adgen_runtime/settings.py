"""Settings every AdGen server shares; each service extends them with its own prefix."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from adgen_client.channel import DEFAULT_MAX_MESSAGE_BYTES

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ServerSettings(BaseSettings):
    """Where and how a gRPC server listens. Subclasses set `env_prefix` (e.g. ADGEN_DIFFUSION_)."""

    host: str = Field("127.0.0.1", description="Interface to bind; 0.0.0.0 in containers.")
    port: int = Field(50051, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    max_message_bytes: int = Field(
        DEFAULT_MAX_MESSAGE_BYTES, ge=4 * 1024 * 1024, description="Largest gRPC message sent or received."
    )
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long running calls may finish before they are cancelled."
    )
    log_level: str = Field("INFO", description="Python logging level.")

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        # Checked here so a typo fails as a settings error naming the variable, not in logging at start.
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level
