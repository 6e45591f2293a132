"""Settings of the copywriter service, from ADGEN_COPYWRITER_* (and the standard OPENAI_* variables)."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from adgen_runtime.settings import ServerSettings


class BackendChoice(enum.StrEnum):
    """Which backend writes copy."""

    AUTO = "auto"  # The LLM when an endpoint or key is configured, else the template.
    TEMPLATE = "template"
    LLM = "llm"


class CopywriterSettings(ServerSettings):
    """Where the copywriter listens and which language model, if any, writes the copy."""

    model_config = SettingsConfigDict(
        env_prefix="ADGEN_COPYWRITER_", populate_by_name=True, extra="ignore", env_parse_none_str="null"
    )

    port: int = Field(50052, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    backend: BackendChoice = Field(
        BackendChoice.AUTO,
        description="'auto': the LLM when llm_base_url or llm_api_key is set, else the offline template; "
        "'template': always the template; 'llm': always the LLM (fails at start without an endpoint or key).",
    )
    llm_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("ADGEN_COPYWRITER_LLM_BASE_URL", "OPENAI_BASE_URL"),
        description="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 for vLLM or "
        "http://localhost:11434/v1 for Ollama. Unset with a key means api.openai.com.",
    )
    llm_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("ADGEN_COPYWRITER_LLM_API_KEY", "OPENAI_API_KEY"),
        description="API key for the endpoint; local servers usually need none. Never logged.",
    )
    llm_model: str = Field(
        "gpt-4o-mini",
        description="Model name the endpoint knows; it must support json_schema response formats. "
        "Pin a snapshot (e.g. gpt-4o-mini-2024-07-18) for reproducible copy.",
    )
    llm_timeout_s: float = Field(30.0, gt=0, description="Timeout of one LLM HTTP request, in seconds.")
    llm_max_retries: int = Field(
        2, ge=0, le=10, description="Retries (with exponential backoff) on connection errors, timeouts, 429 and 5xx."
    )
    llm_temperature: float | None = Field(
        0.7,
        ge=0,
        le=2,
        description="Sampling temperature of the copy; 'null' omits it, for models that accept only their "
        "default (reasoning models).",
    )
    llm_unavailable_retry_after_s: float = Field(
        5.0, ge=0, description="RetryInfo sent with LLM_UNAVAILABLE when the endpoint gave no Retry-After."
    )

    @field_validator("llm_base_url", "llm_api_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # Compose's `${OPENAI_BASE_URL:-}` passes "" when unset; "" would become the SDK's base URL.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _llm_backend_needs_an_endpoint(self) -> CopywriterSettings:
        if self.backend is BackendChoice.LLM and not (self.llm_base_url or self.llm_api_key):
            raise ValueError("backend 'llm' needs ADGEN_COPYWRITER_LLM_BASE_URL / OPENAI_BASE_URL or an API key")
        return self

    def uses_llm(self) -> bool:
        """Whether the LLM backend is selected, resolving 'auto'."""
        if self.backend is BackendChoice.AUTO:
            return bool(self.llm_base_url or self.llm_api_key)
        return self.backend is BackendChoice.LLM
