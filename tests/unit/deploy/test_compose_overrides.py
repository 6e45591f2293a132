"""docker-compose.secure.yml (TLS, tokens) and docker-compose.c2pa.yml (content credentials): valid compose
overrides whose every variable is a real setting, whose every file setting points at a secret its service mounts,
and whose secrets are the files scripts/dev_certs.py makes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from adgen_copywriter.config import CopywriterSettings
from adgen_diffusion.config import DiffusionSettings
from adgen_orchestrator.config import OrchestratorSettings
from adgen_web.config import WebSettings
from scripts.dev_certs import make_dev_secrets

ROOT = Path(__file__).resolve().parents[3]
OVERRIDES = {"secure": ROOT / "docker-compose.secure.yml", "c2pa": ROOT / "docker-compose.c2pa.yml"}
SETTINGS: dict[str, type[BaseSettings]] = {
    "orchestrator": OrchestratorSettings,
    "copywriter": CopywriterSettings,
    "diffusion": DiffusionSettings,
    "web": WebSettings,
}


def _loaded(override: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(OVERRIDES[override].read_text())
    return loaded


@pytest.fixture(scope="module")
def secure() -> dict[str, Any]:
    return _loaded("secure")


def _variables(settings: type[BaseSettings]) -> set[str]:
    prefix = str(settings.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


@pytest.mark.parametrize("override", sorted(OVERRIDES))
def test_the_override_is_valid_against_the_compose_spec(override: str) -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(OVERRIDES[override])],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("override", "service"),
    [(override, service) for override in sorted(OVERRIDES) for service in sorted(_loaded(override)["services"])],
)
def test_every_variable_is_a_setting_and_every_file_a_mounted_secret(override: str, service: str) -> None:
    loaded = _loaded(override)
    spec = loaded["services"][service]
    mounted = set(spec["secrets"])
    for variable, value in spec["environment"].items():
        assert variable in _variables(SETTINGS[service]), f"{service}: {variable} is no setting"
        if str(value).startswith("/run/secrets/"):
            assert str(value).removeprefix("/run/secrets/") in mounted, f"{service}: {variable} is not mounted"
    assert mounted <= set(loaded["secrets"])


@pytest.mark.parametrize("service", ["orchestrator", "copywriter", "diffusion"])
def test_every_grpc_service_serves_tls_with_tokens_and_a_healthcheck_that_speaks_tls(
    secure: dict[str, Any], service: str
) -> None:
    environment = secure["services"][service]["environment"]
    prefix = f"ADGEN_{service.upper()}_"
    assert {f"{prefix}TLS_CERT_FILE", f"{prefix}TLS_KEY_FILE", f"{prefix}API_KEYS_FILE"} <= set(environment)
    test = secure["services"][service]["healthcheck"]["test"]
    assert test[test.index("--ca") + 1] == "/run/secrets/ca.pem"


@pytest.mark.parametrize("override", sorted(OVERRIDES))
def test_the_secret_files_are_what_dev_certs_makes(override: str, tmp_path: Path) -> None:
    make_dev_secrets(tmp_path)
    for name, secret in _loaded(override)["secrets"].items():
        assert secret["file"] == f"./.secrets/{name}"
        assert (tmp_path / name).is_file(), name


def test_the_c2pa_override_gives_an_orchestrator_that_signs_with_the_dev_signer(tmp_path: Path) -> None:
    make_dev_secrets(tmp_path)
    environment = _loaded("c2pa")["services"]["orchestrator"]["environment"]
    files = {
        variable.removeprefix("ADGEN_ORCHESTRATOR_").lower(): tmp_path / value.removeprefix("/run/secrets/")
        for variable, value in environment.items()
    }
    # The settings sign a test image while they are read: a pair c2pa refuses would raise here.
    settings = OrchestratorSettings(**files)
    assert settings.content_signer() is not None
