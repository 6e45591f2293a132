"""The diffusion route table: lookup order, the targets in use, validation at start, and balanced channels."""

from __future__ import annotations

import json
import os

import pytest
from grpc import aio
from pydantic import ValidationError
from pydantic_settings import SettingsError

from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen_diffusion.config import DiffusionSettings
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.downstream import DownstreamHealth, WatchedService
from adgen_orchestrator.routing import (
    BALANCED_SERVICE_CONFIG,
    DNS_REROUTES,
    DiffusionRouter,
    RouteError,
    RouteTable,
    check_routes,
    is_balanced,
    reroutes_of,
)
from adgen_runtime.settings import settings_problems
from adgen_wire.channel import grpc_options

T2I, EDIT = df_pb.MODEL_TASK_TEXT_TO_IMAGE, df_pb.MODEL_TASK_IMAGE_EDIT
ROUTES_VARIABLE = "ADGEN_ORCHESTRATOR_DIFFUSION_ROUTES"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ADGEN_"):
            monkeypatch.delenv(name)


def _problems() -> list[str]:
    try:
        OrchestratorSettings()
    except (ValidationError, SettingsError) as error:
        return settings_problems(OrchestratorSettings, error, os.environ)
    raise AssertionError("the settings were accepted")


def test_a_model_id_route_wins_over_its_task_and_the_task_over_the_default() -> None:
    table = RouteTable({"z-image-turbo": "quality:1", "text-to-image": "t2i:1", "edit": "edit:1"}, "default:1")
    assert table.target_for("z-image-turbo", T2I) == "quality:1"
    assert table.target_for("flux2-klein-4b", T2I) == "t2i:1"
    assert table.target_for("flux2-klein-4b", EDIT) == "edit:1"


def test_no_routes_send_everything_to_the_one_diffusion_target() -> None:
    table = RouteTable({}, "box:50053")
    assert table.target_for("anything", EDIT) == table.target_for("other", T2I) == "box:50053"
    assert table.targets == ("box:50053",)


def test_the_default_target_is_in_use_only_while_some_task_has_no_route() -> None:
    both = RouteTable({"text-to-image": "a:1", "edit": "b:1", "z-image-turbo": "a:1"}, "default:1")
    assert both.targets == ("a:1", "b:1")
    only_edit = RouteTable({"edit": "b:1"}, "default:1")
    assert only_edit.targets == ("b:1", "default:1")


def test_routes_are_read_as_json_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = {"text-to-image": "ipv4:127.0.0.1:1,127.0.0.1:2", "edit": " dns:///diffusion-edit:50053 "}
    monkeypatch.setenv(ROUTES_VARIABLE, json.dumps(routes))
    assert OrchestratorSettings().diffusion_routes == {
        "text-to-image": "ipv4:127.0.0.1:1,127.0.0.1:2",
        "edit": "dns:///diffusion-edit:50053",
    }


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('{"edit": "a:1"', "is not valid JSON"),
        ('{"text_to_image": "a:1"}', "'text_to_image' is not a task key; use one of text-to-image, edit"),
        ('{"Image Edit": "a:1"}', "'Image Edit' is not a task key; use one of text-to-image, edit"),
        ('{"edit": " "}', "the target of 'edit' must be a gRPC target such as host:port, with no blanks"),
        ('{"My Model": "a:1"}', "'My Model' is neither a task key (text-to-image, edit) nor a model id"),
    ],
)
def test_a_bad_route_table_stops_the_server_with_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv(ROUTES_VARIABLE, value)
    [line] = _problems()
    assert line.startswith(f"{ROUTES_VARIABLE}")
    assert problem in line


def test_check_routes_refuses_an_empty_target() -> None:
    with pytest.raises(RouteError, match="'z-image-turbo'"):
        check_routes({"z-image-turbo": ""})


@pytest.mark.parametrize(
    ("target", "balanced", "reroutes"),
    [
        ("127.0.0.1:50053", False, 0),
        ("ipv4:127.0.0.1:1", False, 0),
        ("ipv4:127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", True, 2),
        ("ipv6:[::1]:1,[::1]:2", True, 1),
        ("dns:///diffusion:50053", True, DNS_REROUTES),
    ],
)
def test_only_targets_that_may_name_many_replicas_are_balanced_and_rerouted(
    target: str, balanced: bool, reroutes: int
) -> None:
    assert is_balanced(target) is balanced
    assert reroutes_of(target) == reroutes


def _service_config(options: list[tuple[str, object]]) -> dict[str, object] | None:
    values = [value for name, value in options if name == "grpc.service_config"]
    return json.loads(str(values[0])) if values else None


def test_internal_balanced_channels_get_round_robin_and_health_checks_without_retries() -> None:
    config = _service_config(grpc_options(retry_unavailable=False, service_config=BALANCED_SERVICE_CONFIG))
    assert config == {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": "adgen.diffusion.v1.DiffusionService"},
    }


def test_the_sdk_channel_keeps_its_retry_policy_and_internal_hops_keep_none() -> None:
    sdk = _service_config(grpc_options())
    assert sdk is not None and "methodConfig" in sdk and "loadBalancingConfig" not in sdk
    assert _service_config(grpc_options(retry_unavailable=False)) is None


def test_diffusion_servers_age_connections_out_so_balancing_clients_re_resolve() -> None:
    options = dict(DiffusionSettings(max_connection_age_s=300, max_connection_age_grace_s=900).connection_age_options())
    assert options == {"grpc.max_connection_age_ms": 300_000, "grpc.max_connection_age_grace_ms": 900_000}
    assert DiffusionSettings(max_connection_age_s=0).connection_age_options() == []


async def test_only_the_default_text_to_image_target_gates_readiness() -> None:
    klein, edit = "dns:///diffusion-klein:50053", "dns:///diffusion-edit:50053"
    table = RouteTable({"text-to-image": klein, "edit": edit}, "127.0.0.1:1")
    router = DiffusionRouter(table, 4 * 1024 * 1024, 5.0)
    try:
        gating = {w.label: w.gates_readiness for w in router.watched("diffusion", gating_target=klein)}
        everything = {w.gates_readiness for w in router.watched("diffusion")}
    finally:
        await router.close()
    assert gating == {f"diffusion {klein}": True, f"diffusion {edit}": False}
    assert everything == {True}


async def test_readiness_follows_gating_downstreams_only() -> None:
    changes: list[bool] = []

    async def on_change(ready: bool) -> None:
        changes.append(ready)

    channel = aio.insecure_channel("127.0.0.1:1")
    health = DownstreamHealth(
        [
            WatchedService("t2i", channel, "x", gates_readiness=True),
            WatchedService("edit", channel, "x", gates_readiness=False),
        ],
        on_change,
    )
    try:
        await health._update("t2i", True)
        assert health.ready and changes == [True]  # The empty edit pool does not hold readiness.
        await health._update("edit", True)
        await health._update("t2i", False)
        assert not health.ready and changes == [True, False]
    finally:
        await channel.close()
