"""docker-compose.yml and the Dockerfile: valid against the compose spec, and wired as deployed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SERVICE_NAMES = {
    "orchestrator": ("adgen.ad.v1.AdService", 50051, "orchestrator"),
    "copywriter": ("adgen.copywriter.v1.CopywriterService", 50052, "copywriter"),
    "diffusion": ("adgen.diffusion.v1.DiffusionService", 50053, "diffusion"),
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def dockerfile_stages() -> dict[str, str]:
    """Each `FROM ... AS name` stage's body, keyed by name."""
    stages: dict[str, str] = {}
    for block in re.split(r"^(?=FROM )", DOCKERFILE.read_text(), flags=re.MULTILINE)[1:]:
        name = re.match(r"FROM \S+ AS (\S+)", block)
        assert name, f"unnamed stage: {block.splitlines()[0]}"
        stages[name.group(1)] = block
    return stages


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
def test_health_check_probes_the_grpc_health_service_of_its_own_service(compose: dict[str, Any], service: str) -> None:
    grpc_service, port, _ = SERVICE_NAMES[service]
    test = compose["services"][service]["healthcheck"]["test"]
    assert test[:4] == ["CMD", "python", "-m", "adgen_runtime.healthcheck"]
    assert test[test.index("--target") + 1] == f"127.0.0.1:{port}"
    assert test[test.index("--service") + 1] == grpc_service


def test_diffusion_reserves_one_nvidia_gpu_and_mounts_the_model_cache(compose: dict[str, Any]) -> None:
    diffusion = compose["services"]["diffusion"]
    (device,) = diffusion["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    assert "model-cache:/models" in diffusion["volumes"]
    assert "model-cache" in compose["volumes"]


def test_every_published_port_binds_to_loopback_unless_overridden(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for mapping in service["ports"]:
            assert mapping.startswith("${ADGEN_BIND_ADDRESS:-127.0.0.1}:"), f"{name} publishes {mapping}"


def test_orchestrator_publishes_its_http_edge_on_the_port_it_listens_on(compose: dict[str, Any]) -> None:
    assert "${ADGEN_BIND_ADDRESS:-127.0.0.1}:8080:8080" in compose["services"]["orchestrator"]["ports"]
    orchestrator_stage = dockerfile_stages()["orchestrator"]
    assert "ADGEN_ORCHESTRATOR_HTTP_PORT=8080" in orchestrator_stage and "8080" in orchestrator_stage.split("EXPOSE")[1]


def test_web_page_talks_to_the_orchestrator_and_probes_streamlit_health(compose: dict[str, Any]) -> None:
    web = compose["services"]["web"]
    assert web["environment"]["ADGEN_WEB_TARGET"] == "orchestrator:50051"
    assert web["depends_on"] == {"orchestrator": {"condition": "service_healthy"}}
    assert "/_stcore/health" in " ".join(web["healthcheck"]["test"])


def test_orchestrator_waits_for_healthy_downstreams_and_points_at_them(compose: dict[str, Any]) -> None:
    orchestrator = compose["services"]["orchestrator"]
    assert orchestrator["depends_on"] == {
        "copywriter": {"condition": "service_healthy"},
        "diffusion": {"condition": "service_healthy"},
    }
    assert orchestrator["environment"]["ADGEN_ORCHESTRATOR_DIFFUSION_TARGET"] == "diffusion:50053"
    assert orchestrator["environment"]["ADGEN_ORCHESTRATOR_COPYWRITER_TARGET"] == "copywriter:50052"


@pytest.mark.parametrize("service", [*sorted(SERVICE_NAMES), "web"])
def test_each_image_installs_only_its_own_extra(compose: dict[str, Any], service: str) -> None:
    target = compose["services"][service]["build"]["target"]
    stage = dockerfile_stages()[target]
    assert re.findall(r"pip install '\.\[(\w+)\]'", stage) == [service]
    assert ("torch" in stage) == (service == "diffusion")


@pytest.mark.parametrize(
    ("service", "metrics_port"), [("orchestrator", 9451), ("copywriter", 9452), ("diffusion", 9453)]
)
def test_each_service_serves_metrics_on_its_published_port(
    compose: dict[str, Any], service: str, metrics_port: int
) -> None:
    stage = dockerfile_stages()[compose["services"][service]["build"]["target"]]
    assert f"ADGEN_{service.upper()}_METRICS_PORT={metrics_port}" in stage
    assert f"${{ADGEN_BIND_ADDRESS:-127.0.0.1}}:{metrics_port}:{metrics_port}" in compose["services"][service]["ports"]


def test_the_model_volume_is_owned_by_the_non_root_user(compose: dict[str, Any]) -> None:
    stage = dockerfile_stages()["diffusion"]
    mount = next(v for v in compose["services"]["diffusion"]["volumes"] if v.startswith("model-cache:"))
    directory = mount.split(":")[1]
    # The directory exists in the image, owned by the user the service runs as, before USER switches to it.
    chown = stage.index(f"chown -R adgen:adgen {directory}")
    assert chown < stage.rindex("USER adgen")
