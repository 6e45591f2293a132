"""`*_LOG_FORMAT=json`: a real service process writes one JSON object a line, each with the request id, and a
call's last line with its method, outcome, code and duration."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from adgen.copywriter.v1 import copywriter_service_pb2 as pb
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as pb_grpc
from adgen_wire.channel import REQUEST_ID_METADATA_KEY, create_channel

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 60


def _lines_until(process: subprocess.Popen[str], pattern: str) -> Iterator[dict[str, Any]]:
    """Parsed log lines as the process writes them, up to the first whose message matches `pattern`."""
    assert process.stderr is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    for line in process.stderr:
        record = json.loads(line)  # Every line must be JSON, warnings from libraries included.
        yield record
        if re.search(pattern, record["message"]) or time.monotonic() > deadline:
            return
    raise AssertionError(f"the service exited with {process.wait()} before logging {pattern!r}")


@pytest.fixture
def copywriter() -> Iterator[tuple[subprocess.Popen[str], int]]:
    env = {
        **os.environ,
        "ADGEN_COPYWRITER_PORT": "0",
        "ADGEN_COPYWRITER_BACKEND": "template",
        "ADGEN_COPYWRITER_LOG_FORMAT": "json",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "adgen_copywriter.server"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        started = list(_lines_until(process, r"^serving "))
        listening = re.search(r":(\d+)\b", started[-1]["message"])  # "serving NAMES on HOST:PORT (plaintext)"
        assert listening is not None
        port = int(listening.group(1))
        yield process, port
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_every_line_is_json_with_request_id_and_a_call_ends_with_its_outcome(
    copywriter: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = copywriter
    with create_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.CopywriterServiceStub(channel)
        stub.GenerateCopy(
            pb.GenerateCopyRequest(keyword="여름 딸기 주스"), metadata=((REQUEST_ID_METADATA_KEY, "json-log-ok"),)
        )
        with pytest.raises(grpc.RpcError):
            stub.GenerateCopy(pb.GenerateCopyRequest(keyword=""), metadata=((REQUEST_ID_METADATA_KEY, "json-log-bad"),))

    done = [r for r in _lines_until(process, r"^done .*INVALID_ARGUMENT") if r["message"].startswith("done ")]
    ok, bad = done[-2], done[-1]
    assert ok["request_id"] == "json-log-ok"
    assert ok["method"] == "/adgen.copywriter.v1.CopywriterService/GenerateCopy"
    assert (ok["outcome"], ok["code"]) == ("OK", "OK")
    assert ok["duration_s"] > 0
    assert bad["request_id"] == "json-log-bad"
    assert bad["code"] == "INVALID_ARGUMENT" and bad["reason"] == "EMPTY_KEYWORD"
    assert {"time", "level", "logger", "trace_id"} <= ok.keys()
