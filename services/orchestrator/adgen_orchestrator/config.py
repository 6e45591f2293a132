"""Settings of the orchestrator, read from ADGEN_ORCHESTRATOR_* environment variables."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Self

from pydantic import Field, FilePath, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from adgen_orchestrator.overlay import FontUnavailableError, find_korean_font
from adgen_orchestrator.provenance import C2paSigner, ContentSigner, SigningAlgorithm, SigningSetupError
from adgen_orchestrator.routing import RouteError, check_routes
from adgen_runtime.auth import read_token_file
from adgen_runtime.settings import PhotoLimitSettings, ServerSettings

# What a browser sends as Origin: scheme, host and optional port, nothing after them.
_ORIGIN = re.compile(r"https?://[^\s/?#]+")


class OrchestratorSettings(PhotoLimitSettings, ServerSettings):
    """Everything the orchestrator reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="ADGEN_ORCHESTRATOR_")

    port: int = Field(50051, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    copywriter_target: str = Field("127.0.0.1:50052", description="host:port of the copywriter service.")
    diffusion_target: str = Field(
        "127.0.0.1:50053", description="gRPC target of the diffusion service for every model no route names."
    )
    diffusion_routes: dict[str, str] = Field(
        default_factory=dict,
        description='JSON map from a model id or task ("text-to-image", "edit") to the diffusion target serving it '
        '(host:port, dns:///name:port, ipv4:host:port,host:port), e.g. {"edit": "dns:///diffusion-edit:50053"}. '
        "A model id is looked up first, then its task, then the diffusion target.",
    )
    default_model_id: str = Field("flux2-klein-4b", description="Text-to-image model used when CreateAd names none.")
    fast_model_id: str = Field("flux2-klein-4b", description="Text-to-image model of quality_preference FAST.")
    quality_model_id: str = Field("z-image-turbo", description="Text-to-image model of quality_preference QUALITY.")
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
    http_enabled: bool = Field(True, description="Serve the HTTP/JSON (Connect) and gRPC-Web edge next to gRPC.")
    http_port: int = Field(8080, ge=0, le=65535, description="Port of the HTTP edge; 0 picks a free one.")
    http_cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the HTTP edge, comma-separated "
        '(https://a.example,https://b.example) or as JSON (["https://a.example"]); "*" is any.',
    )
    idempotency_window_s: float = Field(
        600.0, ge=0, description="How long a request_id's result is kept for replays; 0 turns idempotency off."
    )
    idempotency_max_entries: int = Field(256, ge=1, description="Most request_ids remembered (least recent go first).")
    idempotency_max_mib: int = Field(
        512, ge=1, description="Most memory, in MiB, that remembered results of each RPC kind may hold for replays."
    )
    keep_image_buffers: bool = Field(
        True,
        description="Keep freed image-sized buffers in the process for the next image (glibc malloc thresholds, "
        "Pillow's block cache) instead of returning them to the kernel, which would fault every page of every "
        "image in again: on 2 cores 3-10 ms less per 1080x1350 JPEG and 20-25 ms per PNG, for up to ~384 MiB "
        "kept. Set by `adgen-orchestrator` at start; false leaves the allocators' defaults.",
    )
    overlay_font_path: FilePath | None = Field(
        None,
        description="Font file (OTF, TTF or TTC with Hangul) for headline and badge overlays. Unset: Pretendard Bold "
        "from the project's npm install (node_modules/pretendard) or the Docker image, else Debian's Noto Sans CJK KR.",
    )
    c2pa_cert_file: FilePath | None = Field(
        None,
        description="PEM certificate chain (the signing certificate first, then its issuers) for C2PA content "
        "credentials: set with C2PA_KEY_FILE, every delivered image carries a signed manifest. Unset: images are "
        "labelled (XMP, PNG text) but unsigned.",
    )
    c2pa_key_file: FilePath | None = Field(None, description="PEM (PKCS#8) private key of C2PA_CERT_FILE.")
    c2pa_signing_algorithm: SigningAlgorithm = Field(
        "es256",
        description="Signature algorithm of the C2PA key: es256/es384/es512 (ECDSA), ps256/ps384/ps512, ed25519.",
    )
    c2pa_tsa_url: str | None = Field(
        None,
        description="RFC 3161 time-stamp authority the C2PA signer asks for a trusted time (the manifest then stays "
        "valid after the certificate expires). Unset: no time stamp.",
    )

    downstream_token_file: FilePath | None = Field(
        None,
        description="File holding the orchestrator's own bearer token (its service identity), sent on every "
        "copywriter and diffusion call.",
    )
    downstream_tls_ca_file: FilePath | None = Field(
        None, description="PEM CA the copywriter's and diffusion's certificates chain to: set, those calls use TLS."
    )
    downstream_tls_cert_file: FilePath | None = Field(
        None, description="PEM client certificate for mTLS to the copywriter and diffusion (with its key and the CA)."
    )
    downstream_tls_key_file: FilePath | None = Field(None, description="PEM private key of DOWNSTREAM_TLS_CERT_FILE.")

    @model_validator(mode="after")
    def _downstream_tls_files_go_together(self) -> Self:
        if (self.downstream_tls_cert_file is None) != (self.downstream_tls_key_file is None):
            raise ValueError("DOWNSTREAM_TLS_CERT_FILE and DOWNSTREAM_TLS_KEY_FILE must be set together")
        if self.downstream_tls_cert_file is not None and self.downstream_tls_ca_file is None:
            raise ValueError("DOWNSTREAM_TLS_CERT_FILE (mTLS) needs DOWNSTREAM_TLS_CA_FILE")
        return self

    @model_validator(mode="after")
    def _c2pa_files_sign(self) -> Self:
        # Checked by a test signature at start: a wrong pair stops the server naming the variables.
        if (self.c2pa_cert_file is None) != (self.c2pa_key_file is None):
            raise ValueError("C2PA_CERT_FILE and C2PA_KEY_FILE must be set together")
        self.content_signer()
        return self

    def content_signer(self) -> ContentSigner | None:
        """The C2PA signer of the configured certificate and key, or None (images stay unsigned)."""
        if self.c2pa_cert_file is None or self.c2pa_key_file is None:
            return None
        try:
            return C2paSigner.from_files(
                self.c2pa_cert_file, self.c2pa_key_file, self.c2pa_signing_algorithm, self.c2pa_tsa_url
            )
        except SigningSetupError as error:
            raise ValueError(f"C2PA_CERT_FILE and C2PA_KEY_FILE {error}") from None

    @field_validator("downstream_token_file")
    @classmethod
    def _token_file_holds_a_token(cls, path: Path | None) -> Path | None:
        if path is not None:
            read_token_file(path)
        return path

    @field_validator("http_cors_origins")
    @classmethod
    def _origins_are_origins(cls, origins: list[str]) -> list[str]:
        # A path or trailing slash never equals a browser's Origin header: such an entry would silently allow nothing.
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f'{origin[:100]!r} is not "*" or an origin such as https://app.example (no path)')
        return origins

    @field_validator("diffusion_routes")
    @classmethod
    def _routes_are_routes(cls, routes: dict[str, str]) -> dict[str, str]:
        try:
            return check_routes(routes)
        except RouteError as error:
            raise ValueError(str(error)) from None

    @field_validator("overlay_font_path")
    @classmethod
    def _font_draws_hangul(cls, path: Path | None) -> Path | None:
        # Checked at start: a wrong font then stops the server naming the variable, not each overlay later.
        if path is not None:
            try:
                find_korean_font(path)
            except FontUnavailableError:
                raise ValueError("is not a loadable OTF, TTF or TTC font with Hangul glyphs") from None
        return path
