"""deploy/k8s with TLS and tokens on: every pod serves TLS from a Secret, checks tokens from a Secret, and is
probed on the plaintext health-only port its settings open (kubelet's gRPC probes speak no TLS)."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import yaml

from tests.unit.deploy.test_kubernetes import OVERLAYS, _container, _env, _render

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl is not installed (.ci/run installs it)"
)


def _deployments(overlay: str) -> dict[str, dict[str, Any]]:
    manifests = [doc for doc in yaml.safe_load_all(_render(overlay)) if doc]
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Deployment"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_serves_tls_and_checks_tokens_from_secrets_it_mounts(overlay: str) -> None:
    for name, deployment in _deployments(overlay).items():
        service = name.split("-")[0].upper()
        env = _env(deployment)
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in _container(deployment)["volumeMounts"]}
        assert volumes["tls"]["secret"]["secretName"] == f"adgen-tls-{name.split('-')[0]}", name
        assert volumes["api-keys"]["secret"]["secretName"] == "adgen-api-keys", name
        assert env[f"ADGEN_{service}_TLS_CERT_FILE"].startswith(mounts["tls"] + "/"), name
        assert env[f"ADGEN_{service}_API_KEYS_FILE"].startswith(mounts["api-keys"] + "/"), name
        if service != "ORCHESTRATOR":
            assert env[f"ADGEN_{service}_TLS_CLIENT_CA_FILE"].startswith(mounts["tls"] + "/"), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_the_health_port_and_the_orchestrator_has_a_service_identity(overlay: str) -> None:
    for name, deployment in _deployments(overlay).items():
        service = name.split("-")[0].upper()
        container = _container(deployment)
        health_port = int(_env(deployment)[f"ADGEN_{service}_HEALTH_PORT"])
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in container:
                assert container[probe]["grpc"]["port"] == health_port, (name, probe)
    orchestrator = _env(_deployments(overlay)["orchestrator"])
    assert orchestrator["ADGEN_ORCHESTRATOR_DOWNSTREAM_TOKEN_FILE"] == "/etc/adgen/identity/token"
    assert orchestrator["ADGEN_ORCHESTRATOR_DOWNSTREAM_TLS_CERT_FILE"] == "/etc/adgen/tls/tls.crt"
