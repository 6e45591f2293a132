"""Which diffusion target serves a model: the route table, and one channel and client per target."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen_orchestrator.downstream import CallBudget, DiffusionClient, WatchedService, downstream_channel
from adgen_wire.channel import grpc_options

DIFFUSION_SERVICE = df_pb.DESCRIPTOR.services_by_name["DiffusionService"].full_name

# Route keys that name a task rather than a model id.
TASK_KEYS: Mapping[df_pb.ModelTask.ValueType, str] = {
    df_pb.MODEL_TASK_TEXT_TO_IMAGE: "text-to-image",
    df_pb.MODEL_TASK_IMAGE_EDIT: "edit",
}
# Spellings of a task that are not its key: refused, or the route would silently match no model id.
_TASK_LOOKALIKES = frozenset(
    {
        "texttoimage",
        "text2image",
        "txt2img",
        "t2i",
        "t2img",
        "generate",
        "imageedit",
        "editimage",
        "imagetoimage",
        "img2img",
        "i2i",
    }
)
_MODEL_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")

# Round robin over every address the target resolves to; client-side health checking leaves out a replica
# whose readiness (the DiffusionService health name) is NOT_SERVING, e.g. warming up or draining.
BALANCED_SERVICE_CONFIG: dict[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": DIFFUSION_SERVICE},
}
# A balanced channel never goes idle: its readiness is read from its connectivity state (see `watched`), and
# an idle channel would report IDLE, then CONNECTING, between two busy periods.
_NEVER_IDLE = ("grpc.client_idle_timeout_ms", 2**31 - 1)
# Immediate re-tries of a refused job on a `dns:` target, whose replica count the orchestrator does not know.
DNS_REROUTES = 2


class RouteError(ValueError):
    """A route table that cannot be used; the message says which entry and why."""


def check_routes(routes: Mapping[str, str]) -> dict[str, str]:
    """The routes with surrounding blanks removed; RouteError for a key that is neither a task key nor a
    model id, or for an empty target."""
    checked: dict[str, str] = {}
    for key, target in routes.items():
        if key not in TASK_KEYS.values():
            if re.sub(r"[-_ ]", "", key.lower()) in _TASK_LOOKALIKES:
                raise RouteError(f"{key[:60]!r} is not a task key; use one of {', '.join(TASK_KEYS.values())}")
            if not _MODEL_ID.fullmatch(key):
                raise RouteError(f"{key[:60]!r} is neither a task key ({', '.join(TASK_KEYS.values())}) nor a model id")
        target = target.strip()
        if not target or any(c.isspace() for c in target):
            raise RouteError(f"the target of {key[:60]!r} must be a gRPC target such as host:port, with no blanks")
        checked[key] = target
    return checked


def is_balanced(target: str) -> bool:
    """Whether `target` may name several replicas: an address list or a `dns:` name. A plain host:port is
    one server (or one virtual IP), for which balancing and health checking would add nothing."""
    return target.startswith("dns:") or (target.startswith(("ipv4:", "ipv6:")) and "," in target)


def reroutes_of(target: str) -> int:
    """How often a job refused before it was queued is tried again at once on the target: once per other
    address it lists, DNS_REROUTES on a `dns:` name, never on one server."""
    if target.startswith(("ipv4:", "ipv6:")):
        return target.count(",")
    return DNS_REROUTES if target.startswith("dns:") else 0


@dataclass(frozen=True)
class RouteTable:
    """Diffusion targets by model id, then by task, then the one default target."""

    routes: Mapping[str, str]
    default_target: str

    def target_for(self, model_id: str, task: df_pb.ModelTask.ValueType) -> str:
        return self.routes.get(model_id) or self.routes.get(TASK_KEYS[task]) or self.default_target

    @property
    def targets(self) -> tuple[str, ...]:
        """Every target a lookup can return, each once: the default only when some task has no route."""
        used = list(self.routes.values())
        if any(key not in self.routes for key in TASK_KEYS.values()):
            used.append(self.default_target)
        return tuple(dict.fromkeys(used))


@dataclass(frozen=True)
class _Route:
    channel: aio.Channel
    client: DiffusionClient


class DiffusionRouter:
    """One channel and DiffusionClient per distinct target of the route table, and the pick between them.

    gRPC picks the replica within a target (round robin on balanced targets); this class never does.
    """

    def __init__(
        self,
        table: RouteTable,
        max_message_bytes: int,
        timeout_s: float,
        interceptors: Sequence[aio.ClientInterceptor] = (),
        *,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.table = table
        self._routes = {
            target: _open(target, max_message_bytes, timeout_s, interceptors, credentials) for target in table.targets
        }

    def client_for(self, model_id: str, task: df_pb.ModelTask.ValueType) -> DiffusionClient:
        return self._routes[self.table.target_for(model_id, task)].client

    def watched(self, label: str, gating_target: str | None = None) -> list[WatchedService]:
        """The targets for readiness. A balanced target is ready while its channel is READY: with health
        checking that means at least one replica is connected and SERVING. A Health.Watch through that
        channel would report only the one replica the stream landed on.

        With `gating_target`, only that target holds the orchestrator's readiness; the others (pools that may
        scale to zero) are watched and logged but answer for themselves, failing fast while empty.
        """
        many = len(self._routes) > 1
        return [
            WatchedService(
                f"{label} {target}" if many else label,
                route.channel,
                DIFFUSION_SERVICE,
                by_connectivity=is_balanced(target),
                gates_readiness=gating_target is None or target == gating_target,
            )
            for target, route in self._routes.items()
        ]

    async def list_models(self, budget: CallBudget) -> df_pb.ListModelsResponse:
        """Every target's models, each id once (the first target's entry wins); any target's error fails it."""
        replies = await asyncio.gather(*(route.client.list_models(budget) for route in self._routes.values()))
        models: dict[str, df_pb.Model] = {}
        for reply in replies:
            for model in reply.models:
                models.setdefault(model.id, model)
        return df_pb.ListModelsResponse(models=list(models.values()))

    async def close(self) -> None:
        await asyncio.gather(*(route.channel.close() for route in self._routes.values()))


def _open(
    target: str,
    max_message_bytes: int,
    timeout_s: float,
    interceptors: Sequence[aio.ClientInterceptor],
    credentials: grpc.ChannelCredentials | None,
) -> _Route:
    # No retries on this hop: the SDK retries UNAVAILABLE at the edge.
    if is_balanced(target):
        options = grpc_options(max_message_bytes, retry_unavailable=False, service_config=BALANCED_SERVICE_CONFIG)
        options = [*options, _NEVER_IDLE]
    else:
        options = grpc_options(max_message_bytes, retry_unavailable=False)
    channel = downstream_channel(target, options, credentials, interceptors)
    return _Route(channel, DiffusionClient(channel, timeout_s, reroutes=reroutes_of(target)))
