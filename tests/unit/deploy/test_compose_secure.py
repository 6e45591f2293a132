"""docker-compose.secure.yml: a valid compose override whose every variable is a real setting, whose every
file setting points at a secret its service mounts, and whose secrets are the files scripts/dev_certs.py makes."""

from __future__ import annotations

import importlib.util
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

ROOT = Path(__file__).resolve().parents[3]
SECURE = ROOT / "docker-compose.secure.yml"
SETTINGS: dict[str, type[BaseSettings]] = {
    "orchestrator": OrchestratorSettings,
    "copywriter": CopywriterSettings,
    "diffusion": DiffusionSettings,
    "web": WebSettings,
}


@pytest.fixture(scope="module")
def secure() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SECURE.read_text())
    return loaded


def _variables(settings: type[BaseSettings]) -> set[str]:
    prefix = str(settings.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


def test_the_override_is_valid_against_the_compose_spec() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(SECURE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_every_variable_is_a_setting_and_every_file_a_mounted_secret(secure: dict[str, Any], service: str) -> None:
    spec = secure["services"][service]
    mounted = set(spec["secrets"])
    for variable, value in spec["environment"].items():
        assert variable in _variables(SETTINGS[service]), f"{service}: {variable} is no setting"
        if str(value).startswith("/run/secrets/"):
            assert str(value).removeprefix("/run/secrets/") in mounted, f"{service}: {variable} is not mounted"
    assert mounted <= set(secure["secrets"])


@pytest.mark.parametrize("service", ["orchestrator", "copywriter", "diffusion"])
def test_every_grpc_service_serves_tls_with_tokens_and_a_healthcheck_that_speaks_tls(
    secure: dict[str, Any], service: str
) -> None:
    environment = secure["services"][service]["environment"]
    prefix = f"ADGEN_{service.upper()}_"
    assert {f"{prefix}TLS_CERT_FILE", f"{prefix}TLS_KEY_FILE", f"{prefix}API_KEYS_FILE"} <= set(environment)
    test = secure["services"][service]["healthcheck"]["test"]
    assert test[test.index("--ca") + 1] == "/run/secrets/ca.pem"


def test_the_secret_files_are_what_dev_certs_makes(secure: dict[str, Any], tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("dev_certs", ROOT / "scripts" / "dev_certs.py")
    assert spec is not None and spec.loader is not None
    dev_certs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev_certs)
    dev_certs.make_dev_secrets(tmp_path)
    for name, secret in secure["secrets"].items():
        assert secret["file"] == f"./.secrets/{name}"
        assert (tmp_path / name).is_file(), name
