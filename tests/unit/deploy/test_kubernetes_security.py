"""deploy/k8s with TLS and tokens on: every pod serves TLS from a Secret, checks tokens from a Secret, and is
probed on the plaintext health-only port its settings open (kubelet's gRPC probes speak no TLS)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy.test_kubernetes import K8S, OVERLAYS, _container, _env, _render

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


def test_the_c2pa_component_mounts_the_signing_secret_and_points_the_orchestrator_at_it(tmp_path: Path) -> None:
    overlay = tmp_path / "signed"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # Kustomize takes only relative paths.
                "resources": [os.path.relpath(K8S / "overlays" / "single-gpu", overlay)],
                "components": [os.path.relpath(K8S / "components" / "c2pa-signing", overlay)],
            }
        )
    )
    done = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    deployments = {m["metadata"]["name"]: m for m in yaml.safe_load_all(done.stdout) if m and m["kind"] == "Deployment"}
    orchestrator = deployments["orchestrator"]
    volumes = {v["name"]: v for v in orchestrator["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in _container(orchestrator)["volumeMounts"]}
    env = _env(orchestrator)
    assert volumes["c2pa"]["secret"]["secretName"] == "adgen-c2pa-signing"
    assert env["ADGEN_ORCHESTRATOR_C2PA_CERT_FILE"] == mounts["c2pa"] + "/chain.pem"
    assert env["ADGEN_ORCHESTRATOR_C2PA_KEY_FILE"] == mounts["c2pa"] + "/key.pem"
    # Only the orchestrator signs; the other pods are as the overlay made them.
    others = [deployment for name, deployment in deployments.items() if name != "orchestrator"]
    assert others and all("ADGEN_ORCHESTRATOR_C2PA_CERT_FILE" not in _env(deployment) for deployment in others)
