"""deploy/k8s: both overlays render with `kubectl kustomize`, validate (core kinds with kubernetes-validate
--strict, KEDA's ScaledObject against the schema kept in the repository), and keep their structural promises."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("single-gpu", "fleet")
SCALED_OBJECT_SCHEMA = K8S / "schemas" / "keda-scaledobject.json"

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl is not installed (.ci/run installs it)"
)

Manifest = dict[str, Any]


def _render(overlay: str) -> str:
    done = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    overlay: str = request.param
    path = tmp_path_factory.mktemp(overlay) / "rendered.yaml"
    path.write_text(_render(overlay))
    return overlay, path


def _manifests(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _of_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def _container(deployment: Manifest) -> Manifest:
    containers: list[Manifest] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(deployment: Manifest) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in _container(deployment)["env"]}


def test_core_kinds_validate_strictly(rendered: tuple[str, Path]) -> None:
    _, path = rendered
    core = [m for m in _manifests(path) if m["kind"] != "ScaledObject"]
    core_file = path.with_name("core.yaml")
    core_file.write_text(yaml.safe_dump_all(core))
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(core_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_scaled_objects_match_the_kept_keda_schema(rendered: tuple[str, Path]) -> None:
    overlay, path = rendered
    schema = json.loads(SCALED_OBJECT_SCHEMA.read_text())
    scaled = _of_kind(_manifests(path), "ScaledObject")
    assert bool(scaled) == (overlay == "fleet")
    for manifest in scaled.values():
        jsonschema.validate(manifest, schema)


def test_the_kept_schema_refuses_a_misspelt_field() -> None:
    schema = json.loads(SCALED_OBJECT_SCHEMA.read_text())
    wrong = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "minReplicas": 0, "triggers": [{"type": "cpu", "metadata": {}}]},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, schema)


def test_every_deployment_runs_non_root_with_requests_and_probes(rendered: tuple[str, Path]) -> None:
    _, path = rendered
    for name, deployment in _of_kind(_manifests(path), "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        container = _container(deployment)
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["resources"]["requests"], name
        assert container["readinessProbe"]["grpc"]["service"].startswith("adgen."), name
        assert container["livenessProbe"]["grpc"].get("service", "") == "", name


def test_the_orchestrator_and_the_copywriter_have_services_and_autoscalers(rendered: tuple[str, Path]) -> None:
    _, path = rendered
    manifests = _manifests(path)
    for name in ("orchestrator", "copywriter"):
        assert name in _of_kind(manifests, "Service")
        assert _of_kind(manifests, "HorizontalPodAutoscaler")[name]["spec"]["scaleTargetRef"]["name"] == name


def _diffusion_deployments(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {n: d for n, d in _of_kind(manifests, "Deployment").items() if n.startswith("diffusion")}


def test_diffusion_pods_hold_one_gpu_wait_for_their_model_and_mount_the_cache(rendered: tuple[str, Path]) -> None:
    _, path = rendered
    manifests = _manifests(path)
    services = _of_kind(manifests, "Service")
    claims = _of_kind(manifests, "PersistentVolumeClaim")
    for name, deployment in _diffusion_deployments(manifests).items():
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1, name
        assert pod["nodeSelector"] and pod["tolerations"], name
        # A cold load fits in the startup budget; readiness is the service that turns SERVING after warm-up.
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, name
        assert startup["grpc"]["service"] == "adgen.diffusion.v1.DiffusionService", name
        assert _env(deployment)["ADGEN_DIFFUSION_WARMUP"] == "true", name
        assert services[name]["spec"]["clusterIP"] == "None", name  # Headless: round robin over pods.
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["model-cache"]["persistentVolumeClaim"]["claimName"] in claims, name


def test_fleet_pools_route_by_model_scale_on_queue_depth_and_the_edit_pool_may_reach_zero() -> None:
    manifests = list(yaml.safe_load_all(_render("fleet")))
    pools = _diffusion_deployments(manifests)
    assert set(pools) == {"diffusion-klein", "diffusion-zimage", "diffusion-edit"}
    budgets = _of_kind(manifests, "PodDisruptionBudget")
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in _of_kind(manifests, "ScaledObject").values()}
    for name in pools:
        assert name in budgets and name in scaled, name
        assert "adgen_queue_depth" in scaled[name]["spec"]["triggers"][0]["metadata"]["query"], name
    assert scaled["diffusion-edit"]["spec"]["minReplicaCount"] == 0
    assert scaled["diffusion-klein"]["spec"]["minReplicaCount"] >= 1
    assert _env(pools["diffusion-zimage"])["ADGEN_DIFFUSION_DEFAULT_MODEL"] == "z-image-turbo"
    routes = json.loads(_env(_of_kind(manifests, "Deployment")["orchestrator"])["ADGEN_ORCHESTRATOR_DIFFUSION_ROUTES"])
    assert routes == {
        "text-to-image": "dns:///diffusion-klein.adgen.svc.cluster.local:50053",
        "z-image-turbo": "dns:///diffusion-zimage.adgen.svc.cluster.local:50053",
        "edit": "dns:///diffusion-edit.adgen.svc.cluster.local:50053",
    }


def test_single_gpu_is_one_switching_diffusion_pod() -> None:
    manifests = list(yaml.safe_load_all(_render("single-gpu")))
    pools = _diffusion_deployments(manifests)
    assert list(pools) == ["diffusion"]
    assert pools["diffusion"]["spec"]["replicas"] == 1
    assert pools["diffusion"]["spec"]["strategy"]["type"] == "Recreate"  # The old pod frees the GPU first.
    orchestrator = _env(_of_kind(manifests, "Deployment")["orchestrator"])
    assert orchestrator["ADGEN_ORCHESTRATOR_DIFFUSION_TARGET"] == "diffusion:50053"


def test_only_the_orchestrator_reaches_diffusion_and_the_copywriter(rendered: tuple[str, Path]) -> None:
    _, path = rendered
    policies = _of_kind(_manifests(path), "NetworkPolicy")
    for name, component, port in (
        ("diffusion-from-orchestrator", "diffusion", 50053),
        ("copywriter-from-orchestrator", "copywriter", 50052),
    ):
        spec = policies[name]["spec"]
        assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/component": component}
        assert spec["policyTypes"] == ["Ingress"]
        grpc_rules = [rule for rule in spec["ingress"] if {"protocol": "TCP", "port": port} in rule["ports"]]
        assert [rule["from"] for rule in grpc_rules] == [
            [{"podSelector": {"matchLabels": {"app.kubernetes.io/component": "orchestrator"}}}]
        ]
