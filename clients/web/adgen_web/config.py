"""WebSettings: where the web UI finds the AdService, how it reaches it and how long it waits, from ADGEN_WEB_*."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, FilePath
from pydantic_settings import BaseSettings, SettingsConfigDict

from adgen_client.client import DEFAULT_TARGET, AdGenClient


class WebSettings(BaseSettings):
    """Settings of the web UI; every field reads `ADGEN_WEB_<FIELD>` (e.g. `ADGEN_WEB_TARGET`)."""

    model_config = SettingsConfigDict(env_prefix="ADGEN_WEB_", extra="ignore")

    target: str = Field(DEFAULT_TARGET, min_length=1, description="host:port of the orchestrator's AdService.")
    target_tls: bool = Field(False, description="Reach the orchestrator over TLS (implied by target_ca_file).")
    target_ca_file: FilePath | None = Field(
        None, description="CA certificate (PEM) the orchestrator's certificate must chain to; unset: system roots."
    )
    token_file: FilePath | None = Field(
        None,
        description="File holding the bearer token the page sends to the orchestrator (a user-role API key); "
        "a rewritten file is picked up on the next page run. The browser never sees it.",
    )
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

    def open_client(self) -> AdGenClient:
        """An SDK client for the target, over TLS and with the token file's token when they are set.

        Raises:
            ValueError: the token file is empty or unreadable, or the token would go in plaintext to a host
                that is not loopback (set target_tls or target_ca_file).
        """
        return AdGenClient(
            self.target,
            tls=self.target_tls,
            root_certificates=self.target_ca_file,
            token=self._token(),
            timeout=self.timeout_s,
        )

    def client_key(self) -> tuple[object, ...]:
        """What the page's shared client depends on, with the version of each file it read: a rewritten token
        or CA file gives a new key, so the next page run opens a client with it."""
        return (self.target, self.timeout_s, self.target_tls, _version(self.target_ca_file), _version(self.token_file))

    def _token(self) -> str:
        """The token file's token; "" (none, and ADGEN_TOKEN not read) without a token file."""
        if self.token_file is None:
            return ""
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read ADGEN_WEB_TOKEN_FILE {str(self.token_file)!r}: {error}") from None
        if not token:
            raise ValueError(f"ADGEN_WEB_TOKEN_FILE {str(self.token_file)!r} is empty")
        return token


def _version(path: Path | None) -> tuple[str, int, int] | None:
    """A file's path, modification time and size: what changes when it is rewritten."""
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return (str(path), 0, -1)
    return (str(path), stat.st_mtime_ns, stat.st_size)
