"""scripts/dev_certs.py makes secrets a server starts with: its certificate serves TLS, its keys file
authenticates the tokens it wrote, and only hashes are in the keys file."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc import aio

from adgen.copywriter.v1 import copywriter_service_pb2 as cw_pb
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as cw_grpc
from adgen_copywriter.config import BackendChoice, CopywriterSettings
from adgen_copywriter.server import create_server as create_copywriter

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


async def test_dev_certs_make_a_tls_and_token_setup_that_works(tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    made = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "scripts" / "dev_certs.py"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    user_token = (out / "user.token").read_text().strip()
    assert user_token not in (out / "api-keys.txt").read_text()
    assert out.stat().st_mode & 0o077 == 0  # Nobody else may enter the folder.
    running = await create_copywriter(
        CopywriterSettings(
            port=0,
            backend=BackendChoice.TEMPLATE,
            tls_cert_file=out / "copywriter.pem",
            tls_key_file=out / "copywriter.key",
            api_keys_file=out / "api-keys.txt",
        )
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=(out / "ca.pem").read_bytes())
    try:
        async with aio.secure_channel(f"127.0.0.1:{running.port}", credentials) as channel:
            stub = cw_grpc.CopywriterServiceStub(channel)
            request = cw_pb.GenerateCopyRequest(keyword="딸기 주스")
            with pytest.raises(aio.AioRpcError) as refused:
                await stub.GenerateCopy(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            reply = await stub.GenerateCopy(request, metadata=(("authorization", f"Bearer {user_token}"),), timeout=30)
            assert reply.ListFields()
    finally:
        await running.stop(None)
