"""The SDK, the CLI and the Node client against the real services with TLS and API keys on everywhere; the
orchestrator reaches the copywriter and diffusion with its own service token."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from adgen_client import AsyncAdGenClient, RateLimited, RetryPolicy, Unauthenticated, Unavailable
from adgen_client.cli import app
from adgen_orchestrator.server import create_server as create_orchestrator
from tests.integration.security_clients.conftest import SecuredStack, secured_orchestrator_settings

REPO_ROOT = Path(__file__).resolve().parents[3]
NODE_PACKAGE = REPO_ROOT / "clients" / "node"
README = REPO_ROOT / "README.md"
KEYWORD = "여름 느낌 딸기 생과일 주스"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_the_sdk_creates_an_ad_over_tls_with_its_token(secured_stack: SecuredStack) -> None:
    async with AsyncAdGenClient(
        secured_stack.target, root_certificates=secured_stack.ca_file, token=secured_stack.user_token, timeout=120
    ) as client:
        ad = await client.create_ad(KEYWORD, width=128, height=128, num_inference_steps=2)
    assert ad.copy.caption and len(ad.images) == 1
    assert (ad.images[0].image.width, ad.images[0].image.height) == (128, 128)


async def test_the_sdk_without_a_token_or_with_a_wrong_one_is_unauthenticated(secured_stack: SecuredStack) -> None:
    for token, reason in (("", "TOKEN_MISSING"), ("not-a-key", "TOKEN_INVALID")):
        async with AsyncAdGenClient(
            secured_stack.target, root_certificates=secured_stack.ca_file, token=token, timeout=30
        ) as client:
            with pytest.raises(Unauthenticated) as raised:
                await client.list_models()
        assert raised.value.reason == reason


async def test_a_plaintext_sdk_client_cannot_reach_the_tls_port(secured_stack: SecuredStack) -> None:
    async with AsyncAdGenClient(secured_stack.target, token=secured_stack.user_token, timeout=10) as client:
        with pytest.raises(Unavailable):
            await client.list_models()


async def test_the_cli_creates_an_ad_with_ca_and_adgen_token(secured_stack: SecuredStack, tmp_path: Path) -> None:
    args = [
        "create", KEYWORD, "--out", str(tmp_path / "ad"), "--width", "128", "--height", "128", "--steps", "2",
        "--target", secured_stack.target, "--ca", str(secured_stack.ca_file),
    ]  # fmt: skip
    # The services share this event loop, so the blocking CLI runs in a thread.
    result = await asyncio.to_thread(CliRunner().invoke, app, args, env={"ADGEN_TOKEN": secured_stack.user_token})
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "ad" / "ad.json").read_text(encoding="utf-8"))
    assert manifest["copy"]["caption"] and manifest["images"][0]["width"] == 128
    assert secured_stack.user_token not in result.output

    token = {"ADGEN_TOKEN": secured_stack.user_token}
    refused = await asyncio.to_thread(CliRunner().invoke, app, [*args[:-2], "--tls"], env=token)
    assert refused.exit_code == 2 and "TLS handshake failed" in refused.stderr  # the system's roots lack the test CA


@pytest.fixture(scope="module")
async def rate_limited(secured_stack: SecuredStack) -> AsyncIterator[str]:
    """A second secured orchestrator on the same services, allowing each caller 1 call at once, then 1 every 2 s."""
    orchestrator = await create_orchestrator(
        secured_orchestrator_settings(secured_stack, rate_limit_per_s=0.5, rate_limit_burst=1)
    )
    yield f"127.0.0.1:{orchestrator.port}"
    await orchestrator.stop(None)


async def test_the_rate_limit_holds_per_caller_and_the_sdk_honours_its_retry_info(
    secured_stack: SecuredStack, rate_limited: str
) -> None:
    def client(token: str, retry: RetryPolicy) -> AsyncAdGenClient:
        return AsyncAdGenClient(rate_limited, root_certificates=secured_stack.ca_file, token=token, retry=retry)

    async with client(secured_stack.user_token, RetryPolicy(enabled=False)) as once:
        await once.list_models()
        with pytest.raises(RateLimited) as raised:
            await once.list_models()
    assert raised.value.reason == "RATE_LIMITED"
    delay = raised.value.retry_after_s
    assert delay is not None and 0 < delay <= 2.0  # until the bucket refills its token
    async with client(secured_stack.admin_token, RetryPolicy(enabled=False)) as other:
        await other.list_models()  # another caller has a bucket of its own

    async with client(secured_stack.user_token, RetryPolicy()) as patient:
        await patient.list_models()  # waits for the refill if it must
        started = time.monotonic()
        await patient.list_models()  # refused, then retried after the RetryInfo delay
        waited = time.monotonic() - started
    assert 1.0 <= waited < 4.0


def _compiled_node_client() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node is not installed")
    if not (NODE_PACKAGE / "node_modules" / "typescript").is_dir():
        pytest.fail("clients/node has no node_modules: run `npm ci --prefix clients/node`")
    build = subprocess.run(
        ["npm", "run", "--silent", "build", "--prefix", str(NODE_PACKAGE)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    return NODE_PACKAGE / "dist" / "create-ad.js"


async def _run_node(client: Path, *args: str, token: str) -> tuple[int, str, str]:
    # The services share this event loop, so the client runs without blocking it.
    env = {**os.environ, "ADGEN_TOKEN": token}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = await asyncio.create_subprocess_exec("node", str(client), *args, stdout=out, stderr=err, env=env)
        try:
            await asyncio.wait_for(process.wait(), timeout=180)
        except TimeoutError:
            process.kill()
            await process.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    assert process.returncode is not None and process.returncode >= 0, f"node hung:\n{stdout}\n{stderr}"
    return process.returncode, stdout, stderr


async def test_the_node_client_creates_an_ad_over_tls_with_adgen_token(
    secured_stack: SecuredStack, tmp_path: Path
) -> None:
    client = await asyncio.to_thread(_compiled_node_client)
    base = ("--target", secured_stack.target, "--ca", str(secured_stack.ca_file), "--out", str(tmp_path))
    code, stdout, stderr = await _run_node(
        client, *base, "--width", "128", "--height", "128", "--steps", "2", KEYWORD, token=secured_stack.user_token
    )
    assert code == 0, stderr
    assert "copy ready" in stdout and "image ready" in stdout
    summary = json.loads((tmp_path / "ad.json").read_text(encoding="utf-8"))
    assert summary["keyword"] == KEYWORD and summary["images"][0]["width"] == 128
    with Image.open(tmp_path / summary["images"][0]["file"]) as decoded:
        assert decoded.size == (128, 128)

    code, _, stderr = await _run_node(client, *base, KEYWORD, token="")
    assert code != 0 and stderr.startswith("UNAUTHENTICATED: ") and "reason: TOKEN_MISSING" in stderr


async def test_the_readme_clients_example_runs_against_the_secured_stack(
    secured_stack: SecuredStack, tmp_path: Path
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    (example,) = [block for block in blocks if "root_certificates=" in block]
    token_file = tmp_path / "user.token"
    token_file.write_text(secured_stack.user_token + "\n", encoding="utf-8")
    code = (
        example.replace('"127.0.0.1:50051"', repr(secured_stack.target))
        .replace('".secrets/user.token"', repr(str(token_file)))
        .replace('".secrets/ca.pem"', repr(str(secured_stack.ca_file)))
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        # In a worker thread: the services share this test's event loop.
        await asyncio.to_thread(exec, compile(code, "README.md", "exec"), {})
    assert "flux2-klein-4b" in printed.getvalue()
