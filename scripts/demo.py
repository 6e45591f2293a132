"""`make demo`: starts the three services on loopback, creates and edits an ad, stops them.

The services run as real processes from their console scripts, the diffusion service on the
tiny random pipelines, and the ad is made through the `adgen` CLI a caller would use.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from adgen_wire.channel import create_channel

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
KEYWORD = "여름 느낌 딸기 생과일 주스"
EDIT_PHOTO = ROOT / "samples" / "iced-americano.jpg"
EDIT_INSTRUCTION = "커피를 딸기 라떼로 바꿔줘"
STARTUP_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_serving(name: str, target: str, service: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Blocks until the service reports SERVING; fails fast if its process dies first."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with create_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"{name} exited with code {process.returncode} during start-up:\n{tail}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2, wait_for_ready=True)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    print(f"  {name} is serving on {target}")
                    return
            except grpc.RpcError:
                pass  # Not listening yet: the next Check waits for the channel to connect.
    raise SystemExit(f"{name} did not report SERVING within {STARTUP_TIMEOUT_S:.0f}s; see {log}")


def start(name: str, command: list[str], env: dict[str, str], logs: Path, stack: ExitStack) -> subprocess.Popen[bytes]:
    log = logs / f"{name}.log"
    handle = stack.enter_context(log.open("wb"))
    process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
    stack.callback(stop, name, process)
    return process


def stop(name: str, process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful drain), then SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    print(f"  stopped {name} (exit code {process.returncode})")


def run_cli(args: list[str]) -> None:
    print(f"$ adgen {' '.join(args)}", flush=True)
    subprocess.run([str(BIN / "adgen"), *args], check=True)


def show_labels(folder: Path) -> None:
    """Prints the size and AI-content label each delivered image carries."""
    for path in sorted(folder.glob("ad-*.*")):
        with Image.open(path) as image:
            source_type = str(image.info.get("adgen:digital_source_type", "?")).rsplit("/", 1)[-1]
            print(f"  {path.name}: {image.width}x{image.height}, IPTC digital source type {source_type}")


def run_readme_curl(http_port: int, folder: Path) -> None:
    """Runs the README's curl example against the orchestrator's HTTP/JSON edge (the same request through
    urllib where curl is not installed, so a machine with only Python, Node and make runs it too)."""
    readme_line = next(line for line in README.read_text().splitlines() if line.startswith("curl "))
    command = readme_line.replace("127.0.0.1:8080", f"127.0.0.1:{http_port}")
    print(f"$ {command}")
    if shutil.which("curl") is not None:
        reply = subprocess.run(shlex.split(command), check=True, capture_output=True).stdout
    else:
        print("  (curl is not installed: the same request is sent with Python's urllib)")
        reply = post_like_curl(shlex.split(command))
    folder.mkdir(parents=True)
    (folder / "create-ad.json").write_bytes(reply)
    ad = json.loads(reply)
    print(f"  HTTP/JSON answer: {len(ad['images'])} image(s), headline {ad['copy']['headline']!r}")


def post_like_curl(argv: list[str]) -> bytes:
    """Sends what `curl [-sS] -H HEADER... -d BODY URL` sends: a POST of BODY with those headers."""
    headers: dict[str, str] = {}
    body: bytes | None = None
    url = ""
    words = iter(argv[1:])
    for word in words:
        if word == "-H":
            name, _, value = next(words).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            body = next(words).encode()
        elif not word.startswith("-"):
            url = word
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=STARTUP_TIMEOUT_S) as response:
            reply: bytes = response.read()
    except urllib.error.HTTPError as error:
        raise SystemExit(f"the HTTP/JSON example got HTTP {error.code}: {error.read()[:500]!r}") from None
    return reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    options = parser.parse_args()
    out: Path = options.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    logs = out / "logs"
    logs.mkdir(parents=True)

    ports = {name: free_port() for name in ("orchestrator", "copywriter", "diffusion", "http")}
    targets = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    env = {
        **os.environ,
        "ADGEN_DIFFUSION_PORT": str(ports["diffusion"]),
        "ADGEN_DIFFUSION_TINY": "true",
        "ADGEN_DIFFUSION_MODELS_DIR": str(options.models_dir.resolve()),
        "ADGEN_COPYWRITER_PORT": str(ports["copywriter"]),
        "ADGEN_ORCHESTRATOR_PORT": str(ports["orchestrator"]),
        "ADGEN_ORCHESTRATOR_HTTP_PORT": str(ports["http"]),
        "ADGEN_ORCHESTRATOR_COPYWRITER_TARGET": targets["copywriter"],
        "ADGEN_ORCHESTRATOR_DIFFUSION_TARGET": targets["diffusion"],
        "HF_HUB_OFFLINE": "1",
    }
    services = {
        "diffusion": ([str(BIN / "adgen-diffusion"), "serve"], "adgen.diffusion.v1.DiffusionService"),
        "copywriter": ([str(BIN / "adgen-copywriter")], "adgen.copywriter.v1.CopywriterService"),
        "orchestrator": ([str(BIN / "adgen-orchestrator")], "adgen.ad.v1.AdService"),
    }
    print("Starting the services (tiny random models, loopback only):")
    with ExitStack() as stack:
        processes = {name: start(name, command, env, logs, stack) for name, (command, _) in services.items()}
        for name, (_, service) in services.items():
            wait_until_serving(name, targets[name], service, processes[name], logs / f"{name}.log")
        target = ["--target", targets["orchestrator"]]
        create = ["create", KEYWORD, "--out", str(out / "create"), "--placement", "feed-portrait"]
        run_cli([*create, "--overlay-headline", "--ai-disclosure", *target])
        run_cli(["edit", str(EDIT_PHOTO), EDIT_INSTRUCTION, "--out", str(out / "edit"), *target])
        show_labels(out / "create")
        run_readme_curl(ports["http"], out / "http")
        print("Stopping the services:")
    print(f"\nDone. The ad is in {out / 'create'}, the edited photo in {out / 'edit'}, the HTTP/JSON answer in")
    print(f"{out / 'http'}, service logs in {logs}.")
    print("The images come from tiny random models, so they are noise by design: the pipeline, not the art.")


if __name__ == "__main__":
    main()
