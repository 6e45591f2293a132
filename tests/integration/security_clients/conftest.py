"""A secured stack for the clients: all three real services with TLS and API keys, the orchestrator calling
the others with its service token, and each client's token. Certificates and keys come from trustme."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adgen_copywriter.config import BackendChoice, CopywriterSettings
from adgen_copywriter.server import create_server as create_copywriter
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.server import create_server as create_diffusion
from adgen_orchestrator.config import OrchestratorSettings
from adgen_orchestrator.server import create_server as create_orchestrator
from adgen_runtime.server import RunningServer
from tests.support.tls_stub import LoopbackPki, make_pki


@dataclass(frozen=True)
class SecuredStack:
    """Where the secured orchestrator listens, the CA its certificate chains to, and the callers' tokens."""

    target: str
    ca_file: Path
    user_token: str
    admin_token: str
    pki: LoopbackPki
    api_keys_file: Path
    copywriter: str
    diffusion: str
    service_token_file: Path


def api_keys_file(path: Path, roles: dict[str, str]) -> Path:
    """An API keys file holding only each token's SHA-256, as an operator writes one."""
    lines = [f"sha256:{hashlib.sha256(token.encode()).hexdigest()} {role} {role}-key" for token, role in roles.items()]
    path.write_text("# test keys\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def secured_orchestrator_settings(stack: SecuredStack, **overrides: object) -> OrchestratorSettings:
    """The orchestrator's settings for the stack: TLS and API keys at the edge, TLS and its token downstream."""
    values: dict[str, object] = {
        "port": 0,
        "http_enabled": False,
        "copywriter_target": stack.copywriter,
        "diffusion_target": stack.diffusion,
        "tls_cert_file": stack.pki.server_cert_file,
        "tls_key_file": stack.pki.server_key_file,
        "api_keys_file": stack.api_keys_file,
        "downstream_tls_ca_file": stack.pki.ca_file,
        "downstream_token_file": stack.service_token_file,
        **overrides,
    }
    return OrchestratorSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
async def secured_stack(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SecuredStack]:
    folder = tmp_path_factory.mktemp("secured")
    pki = make_pki(folder / "pki")
    user, admin, service = (secrets.token_urlsafe(24) for _ in range(3))
    keys = api_keys_file(folder / "api-keys", {user: "user", admin: "admin", service: "service"})
    service_token_file = folder / "service-token"
    service_token_file.write_text(service + "\n", encoding="utf-8")
    started: list[RunningServer] = []
    try:
        diffusion = await create_diffusion(
            DiffusionSettings(
                port=0,
                tiny=True,
                models_dir=tiny_models_dir,
                tls_cert_file=pki.server_cert_file,
                tls_key_file=pki.server_key_file,
                api_keys_file=keys,
            )
        )
        started.append(diffusion)
        copywriter = await create_copywriter(
            CopywriterSettings(
                port=0,
                backend=BackendChoice.TEMPLATE,
                tls_cert_file=pki.server_cert_file,
                tls_key_file=pki.server_key_file,
                api_keys_file=keys,
            )
        )
        started.append(copywriter)
        partial = SecuredStack(
            target="",
            ca_file=pki.ca_file,
            user_token=user,
            admin_token=admin,
            pki=pki,
            api_keys_file=keys,
            copywriter=f"127.0.0.1:{copywriter.port}",
            diffusion=f"127.0.0.1:{diffusion.port}",
            service_token_file=service_token_file,
        )
        orchestrator = await create_orchestrator(secured_orchestrator_settings(partial))
        started.append(orchestrator)
        yield dataclasses.replace(partial, target=f"127.0.0.1:{orchestrator.port}")
    finally:
        for server in reversed(started):
            await server.stop(None)
