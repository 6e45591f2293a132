"""The SDK, CLI and orchestrator stay light: no torch, and the SDK carries no server libraries."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "diffusers", "transformers", "accelerate")
# grpc's own __init__ touches the top-level grpc_health/grpc_reflection packages when they are
# installed, so the server-side parts are named by their submodules.
SERVER_ONLY = ("grpc_health.v1", "grpc_reflection.v1alpha", "grpc_interceptor", "pydantic_settings", "PIL", "openai")


def _loaded_modules(*modules: str) -> set[str]:
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(' '.join(sys.modules))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return set(completed.stdout.split())


def _offending(loaded: set[str], banned: tuple[str, ...]) -> set[str]:
    return {name for name in loaded if any(name == b or name.startswith(b + ".") for b in banned)}


def test_sdk_and_cli_import_neither_torch_nor_server_libraries() -> None:
    assert _offending(_loaded_modules("adgen_client", "adgen_client.cli"), HEAVY + SERVER_ONLY) == set()


def test_orchestrator_does_not_import_torch() -> None:
    assert _offending(_loaded_modules("adgen_orchestrator.server"), HEAVY) == set()


def test_server_runtime_and_services_do_not_import_the_sdk() -> None:
    services = (
        "adgen_runtime.server",
        "adgen_copywriter.server",
        "adgen_orchestrator.server",
        "adgen_diffusion.server",
    )
    assert _offending(_loaded_modules(*services), ("adgen_client",)) == set()
