"""Client-side test doubles for a secured orchestrator: a trustme PKI as PEM files, and a stub AdService server
over TLS (or mTLS) behind a bearer-token gate that refuses the way the real one does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import trustme

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen.type.v1 import error_reason_pb2
from adgen_runtime.errors import ServiceError

_R = error_reason_pb2
SERVER_NAMES = ("127.0.0.1", "localhost", "::1")
CLIENT_NAME = "adgen-test-client"


@dataclass(frozen=True)
class LoopbackPki:
    """A CA, a server certificate for the loopback names and a client certificate, written as PEM files."""

    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    client_cert_file: Path
    client_key_file: Path

    @property
    def ca_pem(self) -> bytes:
        return self.ca_file.read_bytes()


def make_pki(folder: Path) -> LoopbackPki:
    """A fresh trustme CA and its certificates in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert(*SERVER_NAMES)
    client = ca.issue_cert(CLIENT_NAME)
    pki = LoopbackPki(
        ca_file=folder / "ca.pem",
        server_cert_file=folder / "server.pem",
        server_key_file=folder / "server.key",
        client_cert_file=folder / "client.pem",
        client_key_file=folder / "client.key",
    )
    ca.cert_pem.write_to_path(str(pki.ca_file))
    server.cert_chain_pems[0].write_to_path(str(pki.server_cert_file))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(pki.server_cert_file), append=True)
    server.private_key_pem.write_to_path(str(pki.server_key_file))
    client.cert_chain_pems[0].write_to_path(str(pki.client_cert_file))
    client.private_key_pem.write_to_path(str(pki.client_key_file))
    return pki


class _TokenRefused(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class _RoleRefused(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


@dataclass
class BearerGate(grpc.ServerInterceptor):
    """Admits a call whose `authorization: Bearer <token>` names a known token, as the orchestrator does:
    TOKEN_MISSING / TOKEN_INVALID otherwise, and ROLE_REQUIRED (admin) for `admin_methods`. Records the
    authorization value each call carried (None: none)."""

    roles: dict[str, str]
    admin_methods: set[str] = field(default_factory=set)
    seen: list[str | None] = field(default_factory=list)

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        headers = dict(details.invocation_metadata or ())
        authorization = headers.get("authorization")
        self.seen.append(authorization if isinstance(authorization, str) else None)
        refusal = self._refusal(details.method, authorization)
        return handler if refusal is None or handler is None else _refusing(handler, refusal)

    def _refusal(self, method: str, authorization: object) -> ServiceError | None:
        if not isinstance(authorization, str) or not authorization.startswith("Bearer "):
            return _TokenRefused(_R.ERROR_REASON_TOKEN_MISSING, "This call needs a bearer token.")
        role = self.roles.get(authorization.removeprefix("Bearer "))
        if role is None:
            return _TokenRefused(_R.ERROR_REASON_TOKEN_INVALID, "The bearer token is not valid.")
        if method in self.admin_methods and role != "admin":
            return _RoleRefused(
                _R.ERROR_REASON_ROLE_REQUIRED, "This call needs the admin role.", metadata={"required_role": "admin"}
            )
        return None


def _refusing(handler: grpc.RpcMethodHandler[Any, Any], refusal: ServiceError) -> grpc.RpcMethodHandler[Any, Any]:
    def refuse(request: object, context: grpc.ServicerContext) -> Any:
        context.abort_with_status(refusal.to_status())

    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **serializers)
    return grpc.unary_unary_rpc_method_handler(refuse, **serializers)


class EchoAdService(ad_grpc.AdServiceServicer):
    """Answers every AdService call with a small, fixed answer: enough for a client to finish its work."""

    def ListModels(self, request: ad_pb.ListModelsRequest, context: grpc.ServicerContext) -> ad_pb.ListModelsResponse:
        return ad_pb.ListModelsResponse(models=[ad_pb.Model(id="tiny")])

    def CreateAd(self, request: ad_pb.CreateAdRequest, context: grpc.ServicerContext) -> ad_pb.CreateAdResponse:
        return _ad(request)

    def StreamCreateAd(
        self, request: ad_pb.StreamCreateAdRequest, context: grpc.ServicerContext
    ) -> Iterator[ad_pb.StreamCreateAdResponse]:
        ad = _ad(request.request)
        yield ad_pb.StreamCreateAdResponse(copy=ad.copy)
        yield ad_pb.StreamCreateAdResponse(result=ad)

    def EditAd(self, request: ad_pb.EditAdRequest, context: grpc.ServicerContext) -> ad_pb.EditAdResponse:
        return ad_pb.EditAdResponse(model_id="tiny", request_id="rid-tls")

    def StreamEditAd(
        self, request: ad_pb.StreamEditAdRequest, context: grpc.ServicerContext
    ) -> Iterator[ad_pb.StreamEditAdResponse]:
        yield ad_pb.StreamEditAdResponse(result=self.EditAd(request.request, context))


def _ad(request: ad_pb.CreateAdRequest) -> ad_pb.CreateAdResponse:
    copy = ad_pb.AdCopy(caption=f"{request.keyword} 출시!", hook="여름엔 딸기", headline="딸기 주스")
    return ad_pb.CreateAdResponse(copy=copy, model_id="tiny", request_id="rid-tls")


@dataclass(frozen=True)
class StubServer:
    """A running stub: its loopback target and the gate, whose `seen` list the tests read."""

    target: str
    gate: BearerGate


@contextmanager
def tls_stub_server(
    pki: LoopbackPki,
    roles: dict[str, str],
    *,
    require_client_cert: bool = False,
    register: Callable[[grpc.Server], None] | None = None,
) -> Iterator[StubServer]:
    """A sync gRPC server on a free loopback port serving TLS only (mTLS with `require_client_cert`), with
    `register`'s servicers (default: EchoAdService) behind a BearerGate over `roles` (token -> role)."""
    gate = BearerGate(roles)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[gate])
    if register is None:
        ad_grpc.add_AdServiceServicer_to_server(EchoAdService(), server)
    else:
        register(server)
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key_file.read_bytes(), pki.server_cert_file.read_bytes())],
        root_certificates=pki.ca_pem if require_client_cert else None,
        require_client_auth=require_client_cert,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield StubServer(f"127.0.0.1:{port}", gate)
    finally:
        server.stop(None)
