"""Regenerates the committed Python stubs in gen/python from protos/ (run `make protos`).

Besides messages, gRPC stubs and their typings, the public AdService also gets Connect code
(`*_connect.py`, by protoc-gen-connectrpc for google.protobuf messages, asyncio only): the
orchestrator serves it as its HTTP/JSON and gRPC-Web edge.

The stubs are committed so that a plain `pip install` of the repository needs no protoc;
`make check-protos` regenerates them into a scratch directory and fails on any drift.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
DEFAULT_OUT = ROOT / "gen" / "python"
# Only the public API is served over HTTP; the internal services stay gRPC-only.
CONNECT_PROTOS = ("adgen/ad/v1/ad_service.proto",)
CONNECT_OPTIONS = "protobuf=google,io=async"


def _protoc(plugin_args: list[str], protos: list[str]) -> None:
    """One protoc run over ``protos`` with the repository's and the well-known imports."""
    well_known = str(resources.files("grpc_tools") / "_proto")
    if protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", *plugin_args, *protos]) != 0:
        raise SystemExit(f"protoc failed: {' '.join(plugin_args)}")


def generate(out_dir: Path) -> None:
    """Runs protoc with the message, gRPC, typing and Connect plugins into ``out_dir``."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    bin_dir = Path(sys.executable).parent
    messages_and_grpc = [
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
    ]
    _protoc(messages_and_grpc, protos)
    connect = [
        f"--plugin=protoc-gen-connectrpc={bin_dir / 'protoc-gen-connectrpc'}",
        f"--connectrpc_out={out_dir}",
        f"--connectrpc_opt={CONNECT_OPTIONS}",
    ]
    _protoc(connect, list(CONNECT_PROTOS))
    for package in {out_dir / Path(p).parent for p in protos} | {out_dir / "adgen"}:
        for directory in [package, *package.parents]:
            if directory == out_dir or not directory.is_relative_to(out_dir):
                break
            (directory / "__init__.py").touch()
    (out_dir / "adgen" / "py.typed").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if gen/python is stale")
    options = parser.parse_args()
    if not options.check:
        shutil.rmtree(DEFAULT_OUT / "adgen", ignore_errors=True)
        DEFAULT_OUT.mkdir(parents=True, exist_ok=True)
        generate(DEFAULT_OUT)
        return
    with tempfile.TemporaryDirectory() as scratch:
        generate(Path(scratch))
        fresh = {p.relative_to(scratch): p.read_bytes() for p in Path(scratch).rglob("*") if p.is_file()}
        committed = {
            p.relative_to(DEFAULT_OUT): p.read_bytes()
            for p in (DEFAULT_OUT / "adgen").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        stale = sorted(str(p) for p in fresh.keys() | committed.keys() if fresh.get(p) != committed.get(p))
        if stale:
            raise SystemExit("gen/python is stale; run `make protos`:\n  " + "\n  ".join(stale))
        print(f"gen/python matches protos/ ({len(fresh)} files)")


if __name__ == "__main__":
    main()
