"""Settings every AdGen server shares, list values from the environment, and one-line errors for bad ones."""

from __future__ import annotations

import os
import re
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self, TypeVar, Union, get_args, get_origin

from pydantic import AliasChoices, BaseModel, Field, FilePath, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource
from pydantic_settings.exceptions import SettingsError

from adgen_runtime.auth import DEFAULT_OPEN_SERVICES, read_api_keys
from adgen_runtime.tls import TlsFiles
from adgen_wire.channel import DEFAULT_MAX_MESSAGE_BYTES

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Exit status of a process stopped by a bad setting: a usage error, as argparse and typer use.
BAD_SETTINGS_EXIT_CODE = 2

_Settings = TypeVar("_Settings", bound=BaseSettings)
_SEQUENCE_ORIGINS = (list, tuple, set, frozenset, Sequence)
_PARSE_ERROR_FIELD = re.compile(r'field "([^"]+)"')


class UnreadableSettingError(ValueError):
    """An environment value that could not even be decoded (e.g. malformed JSON); names its field."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(problem)
        self.field_name = field_name
        self.problem = problem


class ListFriendlyEnvSource(EnvSettingsSource):
    """The environment, with list settings given either as JSON (``["a", "b"]``) or comma-separated (``a,b``).

    A list value that does not start with ``[`` is split on commas, so ``https://a.example,https://b.example``
    and ``*`` both work; a non-list structured value must be JSON, and a malformed one names its field.
    """

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        if isinstance(value, str) and _is_flat_sequence(field.annotation) and not value.lstrip().startswith("["):
            return [item.strip() for item in value.split(",") if item.strip()]
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            raise UnreadableSettingError(field_name, "is not valid JSON") from None


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
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Port of the Prometheus `/metrics` endpoint; unset turns metrics off."
    )
    otlp_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/gRPC collector for traces (the OpenTelemetry variable); unset turns tracing off.",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="`text` lines for people, or `json`: one object a line with request and trace ids."
    )
    tls_cert_file: FilePath | None = Field(
        None, description="PEM certificate chain to serve TLS with (with TLS_KEY_FILE); re-read when it changes."
    )
    tls_key_file: FilePath | None = Field(None, description="PEM private key of TLS_CERT_FILE.")
    tls_client_ca_file: FilePath | None = Field(
        None, description="PEM CA that clients' certificates must chain to: set, every client needs one (mTLS)."
    )
    api_keys_file: FilePath | None = Field(
        None,
        description="File of API keys, a line each: `sha256:<hex digest of the key> <role> [label]`, role user, "
        "service or admin; re-read when it changes. Set (or JWT_JWKS_URL), every call needs a bearer token.",
    )
    jwt_jwks_url: str | None = Field(
        None, description="JWKS URL whose keys sign accepted bearer JWTs (exp required); turns authentication on."
    )
    jwt_issuer: str | None = Field(None, description="The `iss` an accepted JWT must carry; unset: not checked.")
    jwt_audience: str | None = Field(None, description="The `aud` an accepted JWT must carry; unset: not checked.")
    jwt_role_claim: str = Field("role", description="JWT claim holding the caller's role (a string or a list).")
    auth_open_services: list[str] = Field(
        default_factory=lambda: list(DEFAULT_OPEN_SERVICES),
        description="gRPC services callable without a token, comma-separated; default health and reflection.",
    )
    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Plaintext port serving only grpc.health.v1, for probes that cannot speak TLS (kubelet's "
        "gRPC probes); unset: health is on the main port only.",
    )
    rate_limit_per_s: float = Field(
        0.0, ge=0, description="Calls per second each caller (API key, JWT subject, else address) may make; 0 is off."
    )
    rate_limit_burst: int = Field(
        10, ge=1, description="Calls a caller may make at once before RATE_LIMIT_PER_S holds."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, ListFriendlyEnvSource(settings_cls), dotenv_settings, file_secret_settings

    @property
    def auth_enabled(self) -> bool:
        """Whether calls need a bearer token."""
        return self.api_keys_file is not None or self.jwt_jwks_url is not None

    @property
    def tls_files(self) -> TlsFiles | None:
        """The files to serve TLS with, or None for plaintext."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return TlsFiles(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)

    @model_validator(mode="after")
    def _tls_files_go_together(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("TLS_CLIENT_CA_FILE (mTLS) needs TLS_CERT_FILE and TLS_KEY_FILE")
        return self

    @field_validator("tls_cert_file")
    @classmethod
    def _is_pem_certificate(cls, path: Path | None) -> Path | None:
        if path is not None and b"-----BEGIN CERTIFICATE-----" not in path.read_bytes():
            raise ValueError("is not a PEM certificate file")
        return path

    @field_validator("api_keys_file")
    @classmethod
    def _api_keys_parse(cls, path: Path | None) -> Path | None:
        # Read at start, so a bad line stops the server naming the variable and the line (never its text).
        if path is not None:
            read_api_keys(path)
        return path

    @field_validator("jwt_jwks_url")
    @classmethod
    def _is_http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return url

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        # Checked here so a typo fails as a settings error naming the variable, not in logging at start.
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level


class PhotoLimitSettings(BaseSettings):
    """The byte and pixel limits of a photo to edit, for each server that checks one (adgen_runtime.photos).

    Put it before ServerSettings among the bases (``class S(PhotoLimitSettings, ServerSettings)``) so its
    fields follow the server ones; the subclass's `env_prefix` names the variables.
    """

    max_input_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Largest accepted photo file to edit, in bytes.")
    max_input_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Largest accepted photo to edit, in pixels (width x height); guards against decompression bombs.",
    )


def load_settings(settings_cls: type[_Settings]) -> _Settings:
    """The settings from the environment; a bad value prints one line per problem, naming its variable, to
    stderr and exits with status 2 (no traceback: the operator needs the variable, not our stack)."""
    try:
        return settings_cls()
    except (ValidationError, SettingsError) as error:
        for line in settings_problems(settings_cls, error, os.environ):
            print(line, file=sys.stderr)
        raise SystemExit(BAD_SETTINGS_EXIT_CODE) from None


def settings_problems(
    settings_cls: type[BaseSettings], error: ValidationError | SettingsError, environ: Mapping[str, str]
) -> list[str]:
    """One line per bad setting, e.g. ``ADGEN_ORCHESTRATOR_PORT: Input should be less than or equal to 65535``.

    Values are never echoed: one of them may be a key.
    """
    if isinstance(error, SettingsError):
        cause = error.__cause__
        if isinstance(cause, UnreadableSettingError):
            return [f"{env_variable(settings_cls, cause.field_name, environ)}: {cause.problem}"]
        match = _PARSE_ERROR_FIELD.search(str(error))
        name = env_variable(settings_cls, match.group(1), environ) if match else _prefix_pattern(settings_cls)
        return [f"{name}: could not be read"]
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        location = problem["loc"]
        message = _plain_message(problem["msg"])
        if not location:  # A check across several settings: its message names them.
            lines.append(f"{_prefix_pattern(settings_cls)}: {message}")
            continue
        name = env_variable(settings_cls, str(location[0]), environ)
        items = "".join(f" item {part + 1}" if isinstance(part, int) else f".{part}" for part in location[1:])
        lines.append(f"{name}{items}: {message}")
    return lines


def env_variable(settings_cls: type[BaseSettings], field_name: str, environ: Mapping[str, str]) -> str:
    """The environment variable that set `field_name`, or every one that may set it when none did."""
    field = settings_cls.model_fields.get(field_name)
    alias = field.validation_alias if field is not None else None
    if isinstance(alias, AliasChoices):
        names = [str(choice).upper() for choice in alias.choices]
    elif isinstance(alias, str):
        names = [alias.upper()]
    else:
        names = [f"{settings_cls.model_config.get('env_prefix', '')}{field_name}".upper()]
    present = {key.upper() for key in environ}
    return next((name for name in names if name in present), " or ".join(names))


def _prefix_pattern(settings_cls: type[BaseSettings]) -> str:
    return f"{settings_cls.model_config.get('env_prefix', '')}*".upper()


def _plain_message(message: str) -> str:
    # Pydantic prefixes a validator's own text with "Value error, "; the operator needs only the text.
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _is_flat_sequence(annotation: Any) -> bool:
    """Whether `annotation` is a list (or tuple or set) of scalars, optional or not."""
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        return len(members) == 1 and _is_flat_sequence(members[0])
    if origin not in _SEQUENCE_ORIGINS:
        return False
    return all(_is_scalar(arg) for arg in get_args(annotation) if arg is not Ellipsis)


def _is_scalar(annotation: Any) -> bool:
    if get_origin(annotation) is not None:
        return False
    return not (isinstance(annotation, type) and issubclass(annotation, BaseModel | dict | list | tuple | set))
