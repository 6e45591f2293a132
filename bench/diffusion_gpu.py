# mypy: disallow-untyped-calls=False
"""GPU benchmark: real-size random pipelines loaded through the service; load, memory and step time vs floors.

Run: python -m bench.diffusion_gpu [--scale full|small] [--out DIR] [--work-dir DIR] [--models ID ...] [--clean]
(on a lent GPU machine: see bench/README.md).

Each set is built once into a Hugging Face cache layout under --work-dir and then measured in a fresh child
process (clean host and device baselines) that finds it the way the service does: HF_HUB_CACHE, offline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import diffusers
import torch
import transformers

from adgen.diffusion.v1 import diffusion_service_pb2_grpc as pb_grpc
from adgen_client.channel import create_aio_channel
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.engine import DiffusionEngine, resolve_device
from adgen_diffusion.memory import device_memory
from adgen_diffusion.registry import ModelRegistry
from adgen_diffusion.server import create_server
from bench.diffusion_overhead import bench_model
from bench.gpu_models import (
    MODEL_SETS,
    SCALES,
    Scale,
    build_set,
    cache_snapshot,
    is_built,
    set_bytes,
    weight_files,
)

GB = 1e9
# Left free on the work disk after a set is written.
_DISK_MARGIN_BYTES = 2 * 1024**3
_READ_CHUNK_BYTES = 16 * 1024**2
_STATUS = Path("/proc/self/status")
# Per scale: image side, denoising steps and alternated repeats of the step-time comparison.
_RUN_SHAPE = {"full": (1024, 8, 5), "small": (256, 4, 3)}


# ----- measuring helpers (child process) -----


def _status_bytes(field: str) -> int:
    """A kB field of /proc/self/status (VmRSS, RssAnon, VmHWM), in bytes; 0 where there is none."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class HostPeak:
    """Peak resident and anonymous host memory above the start while a block runs (5 ms samples + VmHWM)."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="host-peak", daemon=True)
        self.start_rss = self.start_anon = self.peak_rss = self.peak_anon = 0

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._take()

    def _take(self) -> None:
        self.peak_rss = max(self.peak_rss, _status_bytes("VmRSS"))
        self.peak_anon = max(self.peak_anon, _status_bytes("RssAnon"))

    def __enter__(self) -> HostPeak:
        # Resets VmHWM (the kernel's own peak RSS) so no sample gap can hide a spike.
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
        self.start_rss = self.peak_rss = _status_bytes("VmRSS")
        self.start_anon = self.peak_anon = _status_bytes("RssAnon")
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._take()
        self.peak_rss = max(self.peak_rss, _status_bytes("VmHWM"))

    @property
    def rss_above_start(self) -> int:
        return max(0, self.peak_rss - self.start_rss)

    @property
    def anon_above_start(self) -> int:
        return max(0, self.peak_anon - self.start_anon)


def drop_page_cache(files: list[Path]) -> None:
    """Evicts the files' pages from the page cache (fsync, then POSIX_FADV_DONTNEED): the next read is cold."""
    for path in files:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def read_bandwidth(files: list[Path]) -> float:
    """Bytes/s of one single-threaded sequential buffered read of the files, 16 MiB at a time."""
    buffer = bytearray(_READ_CHUNK_BYTES)
    total = 0
    started = time.perf_counter()
    for path in files:
        with path.open("rb", buffering=0) as stream:
            while count := stream.readinto(buffer):
                total += count
    return total / (time.perf_counter() - started)


def host_to_device_bandwidth(device: torch.device, nbytes: int = 1024**3) -> dict[str, float]:
    """Bytes/s of a host→device copy from pageable and from pinned memory (median of 3, after a warm-up)."""
    source = torch.randint(0, 255, (nbytes,), dtype=torch.uint8)
    target = torch.empty(nbytes, dtype=torch.uint8, device=device)
    rates = {}
    for kind, host in (("pageable", source), ("pinned", source.pin_memory())):
        times = []
        for _ in range(4):
            torch.cuda.synchronize(device)
            started = time.perf_counter()
            target.copy_(host, non_blocking=kind == "pinned")
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
        rates[kind] = nbytes / statistics.median(times[1:])
        del host
    del source, target
    torch.cuda.empty_cache()
    return rates


def filesystem_of(path: Path) -> str:
    """The mount type holding `path` (ext4, xfs, tmpfs, overlay...): tmpfs would make every read a memory copy."""
    resolved = str(path.resolve())
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        mount_point, fs_type = fields[1], fields[2]
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > len(best):
            best, kind = mount_point, fs_type
    return kind


def _device_figures(device: torch.device) -> dict[str, int]:
    memory = device_memory(device)
    return {"allocated": memory.allocated, "reserved": memory.reserved, "free": memory.free, "total": memory.total}


@dataclass(frozen=True)
class LoadFigures:
    """One load through DiffusionEngine.load, with the host memory seen while it ran."""

    seconds: float
    peak_rss_above_start: int
    peak_anon_above_start: int
    engine_peak_anon: int
    model_bytes: int


def _measured_load(engine: DiffusionEngine, model_id: str) -> LoadFigures:
    with HostPeak() as peak:
        report = engine.load(model_id)
    return LoadFigures(
        report.duration_s,
        peak.rss_above_start,
        peak.anon_above_start,
        report.memory.peak_host_anon_bytes,
        report.memory.model_bytes,
    )


def _unload(engine: DiffusionEngine, device: torch.device) -> dict[str, Any]:
    report = engine.unload()
    return {
        "seconds": report.duration_s,
        "verified": report.memory.verified,
        "leaked_modules": report.memory.leaked_modules,
        "device": _device_figures(device),
    }


async def _service_vs_direct(
    engine: DiffusionEngine, model_id: str, run_shape: tuple[int, int, int], lease_dir: Path
) -> dict[str, Any]:
    """bench.diffusion_overhead's comparison on the loaded model, then an unload while the server is still up."""
    side, steps, repeats = run_shape
    settings = DiffusionSettings(
        host="127.0.0.1", port=0, models_dir=lease_dir, device=str(engine.device), lease_dir=lease_dir
    )
    server = await create_server(settings, engine=engine)
    try:
        async with create_aio_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.DiffusionServiceStub(channel)
            direct, service = await bench_model(engine, stub, model_id, side, steps, repeats)
        # Unloaded while the server is up but idle: the figures include whatever the gRPC path left behind.
        unloaded = await asyncio.to_thread(_unload, engine, engine.device)
    finally:
        await server.stop(None)
    return {
        "side": side,
        "steps": steps,
        "repeats": repeats,
        "direct_step_s": statistics.median(r.step_s for r in direct),
        "service_step_s": statistics.median(r.step_s for r in service),
        "direct_call_s": statistics.median(r.wall_s for r in direct),
        "service_call_s": statistics.median(r.wall_s for r in service),
        "unload_after_service": unloaded,
    }


def measure(model_id: str, scale: Scale, work_dir: Path, out: Path) -> None:
    """Child process: every figure for one set, written to <out>/<model_id>.json."""
    device = resolve_device("auto")
    files = weight_files(cache_snapshot(work_dir / "hub", MODEL_SETS[model_id].repo))
    file_bytes = sum(f.stat().st_size for f in files)
    h2d = host_to_device_bandwidth(device) if device.type == "cuda" else {}
    engine = DiffusionEngine(ModelRegistry.load(), work_dir, device="auto")
    before_load = _device_figures(device)
    drop_page_cache(files)
    cold_read = read_bandwidth(files)
    warm_read = read_bandwidth(files)
    drop_page_cache(files)
    cold_load = _measured_load(engine, model_id)
    after_load = _device_figures(device)
    service = asyncio.run(_service_vs_direct(engine, model_id, _RUN_SHAPE[scale.name], work_dir))
    # Every file was just read by the cold load: this one comes from the page cache.
    warm_load = _measured_load(engine, model_id)
    unload_after_warm = _unload(engine, device)
    result = {
        "model_id": model_id,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads",
        "weight_files": len(files),
        "file_bytes": file_bytes,
        "filesystem": filesystem_of(files[0]),
        "read_cold_bytes_per_s": cold_read,
        "read_warm_bytes_per_s": warm_read,
        "h2d_bytes_per_s": h2d,
        "load_cold": asdict(cold_load),
        "load_warm": asdict(warm_load),
        "device_before_load": before_load,
        "device_after_load": after_load,
        "unload_after_warm_load": unload_after_warm,
        **service,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{model_id}.json").write_text(json.dumps(result, indent=2))


# ----- orchestration (parent process) -----


def _build(model_id: str, scale: Scale, work_dir: Path) -> dict[str, Any] | None:
    """Builds the set unless it is there; None (and a message) when the disk cannot hold it."""
    model_set = MODEL_SETS[model_id]
    hub = work_dir / "hub"
    snapshot = cache_snapshot(hub, model_set.repo)
    needed = set_bytes(model_set.build(scale))
    if is_built(hub, model_set, scale):
        return {"build_s": 0.0, "set_bytes": needed, "reused": True}
    work_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work_dir).free
    if free < needed + _DISK_MARGIN_BYTES:
        print(f"skipping {model_id}: needs {needed / GB:.1f} GB + margin, {free / GB:.1f} GB free on {work_dir}")
        return None
    print(f"building {model_id} ({scale.name}, {_size(needed)} bf16) in {snapshot}", flush=True)
    started = time.perf_counter()
    build_set(hub, model_set, scale)
    return {"build_s": time.perf_counter() - started, "set_bytes": needed, "reused": False}


def _run_child(model_id: str, scale: Scale, work_dir: Path, out: Path) -> dict[str, Any] | None:
    env = dict(os.environ, HF_HUB_CACHE=str(work_dir / "hub"), HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "bench.diffusion_gpu", "--measure", model_id, "--scale", scale.name]
    # The child appends the scale's name to --work-dir itself.
    command += ["--work-dir", str(work_dir.parent), "--out", str(out)]
    print(f"measuring {model_id} in a fresh process", flush=True)
    finished = subprocess.run(command, env=env, check=False)
    if finished.returncode != 0:
        print(f"measuring {model_id} failed with exit status {finished.returncode}")
        return None
    result: dict[str, Any] = json.loads((out / f"{model_id}.json").read_text())
    return result


def _size(nbytes: float) -> str:
    """GB at model scale, MB for the small sets, so neither prints as 0.00."""
    return f"{nbytes / GB:.2f} GB" if abs(nbytes) >= GB else f"{nbytes / 1e6:.2f} MB"


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator else "-"


def _device_rows(before: dict[str, int], loaded: dict[str, int], unloaded: dict[str, int]) -> list[tuple[str, str]]:
    """Allocator and driver figures before the load, with it resident, and after the unload that followed."""
    return [
        (
            "device allocated before / loaded / unloaded GB",
            " / ".join(f"{figures['allocated'] / GB:.3f}" for figures in (before, loaded, unloaded)),
        ),
        ("device reserved before / unloaded GB", f"{before['reserved'] / GB:.3f} / {unloaded['reserved'] / GB:.3f}"),
        ("driver free before / unloaded GB", f"{before['free'] / GB:.2f} / {unloaded['free'] / GB:.2f}"),
        ("unloaded minus before, allocated MB", f"{(unloaded['allocated'] - before['allocated']) / 1e6:+.1f}"),
    ]


def _rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, value) lines of one set's results, in table order."""
    size = result["file_bytes"]
    cold_floor = size / result["read_cold_bytes_per_s"]
    warm_floor = size / result["read_warm_bytes_per_s"]
    h2d = result["h2d_bytes_per_s"]
    rows = [
        ("weights on disk (files)", f"{_size(size)} ({result['weight_files']})"),
        ("filesystem", result["filesystem"]),
        (
            "disk read cold / warm GB/s",
            f"{result['read_cold_bytes_per_s'] / GB:.2f} / {result['read_warm_bytes_per_s'] / GB:.2f}",
        ),
    ]
    if h2d:
        rows.append(("host->device pageable / pinned GB/s", f"{h2d['pageable'] / GB:.1f} / {h2d['pinned'] / GB:.1f}"))
        # A perfectly pipelined load is bound by the slower of reading and copying.
        cold_floor = max(cold_floor, size / h2d["pageable"])
        warm_floor = max(warm_floor, size / h2d["pageable"])
    cold, warm = result["load_cold"], result["load_warm"]
    model = cold["model_bytes"]
    before, loaded = result["device_before_load"], result["device_after_load"]
    after_service = result["unload_after_service"]
    after_warm = result["unload_after_warm_load"]
    direct_step, service_step = result["direct_step_s"], result["service_step_s"]
    direct_call, service_call = result["direct_call_s"], result["service_call_s"]
    rows += [
        (
            "load cold s / floor s / ratio",
            f"{cold['seconds']:.2f} / {cold_floor:.2f} / {_ratio(cold['seconds'], cold_floor)}",
        ),
        (
            "load warm s / floor s / ratio",
            f"{warm['seconds']:.2f} / {warm_floor:.2f} / {_ratio(warm['seconds'], warm_floor)}",
        ),
        ("model bytes in memory", _size(model)),
        (
            "peak host RSS during cold load (/model)",
            f"+{_size(cold['peak_rss_above_start'])} ({_ratio(cold['peak_rss_above_start'], model)})",
        ),
        (
            "peak host anon during cold load (/model)",
            f"+{_size(cold['peak_anon_above_start'])} ({_ratio(cold['peak_anon_above_start'], model)})",
        ),
        ("peak host anon, engine's own report", f"+{_size(cold['engine_peak_anon'])}"),
    ]
    if result["device"].startswith("cuda"):
        rows += _device_rows(before, loaded, after_service["device"])
    rows += [
        (
            "unload verified (after service / after warm load)",
            f"{after_service['verified']} / {after_warm['verified']}",
        ),
        ("unload s (after service / after warm load)", f"{after_service['seconds']:.2f} / {after_warm['seconds']:.2f}"),
        (
            f"step ms direct / service ({result['side']}px, {result['steps']} steps)",
            f"{direct_step * 1e3:.1f} / {service_step * 1e3:.1f} ({_ratio(service_step, direct_step)})",
        ),
        (
            "call s direct / service (PNG + transfer incl.)",
            f"{direct_call:.2f} / {service_call:.2f} ({_ratio(service_call, direct_call)})",
        ),
    ]
    return rows


def print_table(results: list[dict[str, Any]]) -> None:
    columns = [dict(_rows(r)) for r in results]
    metrics = [metric for metric, _ in _rows(results[0])]
    width = max(len(m) for m in metrics)
    header = f"{'':{width}}  " + "  ".join(f"{r['model_id']:>34}" for r in results)
    print(header)
    print("-" * len(header))
    for metric in metrics:
        print(f"{metric:{width}}  " + "  ".join(f"{column.get(metric, '-'):>34}" for column in columns))


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def run(scale: Scale, model_ids: list[str], work_dir: Path, out: Path, command_line: str) -> int:
    results, builds = [], {}
    started = time.perf_counter()
    for model_id in model_ids:
        build = _build(model_id, scale, work_dir)
        if build is None:
            continue
        builds[model_id] = build
        result = _run_child(model_id, scale, work_dir, out)
        if result is not None:
            results.append({**result, "build": build})
    summary = {
        "command": command_line,
        "scale": scale.name,
        "work_dir": str(work_dir),
        "cpus": os.cpu_count(),
        "versions": _versions(),
        "wall_s": time.perf_counter() - started,
        "results": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "diffusion_gpu.json").write_text(json.dumps(summary, indent=2))
    print(f"\n== diffusion GPU bench, {scale.name} scale, random weights, loaded through DiffusionEngine ==")
    print(f"$ {command_line}")
    device = results[0]["device_name"] if results else "-"
    print(f"device {device}; {summary['versions']}; wall {summary['wall_s']:.0f}s; JSON {out / 'diffusion_gpu.json'}")
    if results:
        print_table(results)
        print(
            "floors: bytes over the measured single-stream sequential read (cold: after fsync + FADV_DONTNEED"
            " of the files; warm: page cache) and, on CUDA, over the pageable host->device copy, whichever is"
            " slower.\nstep: median gap between step ends (direct: diffusers callback in-process; service:"
            " DENOISING events as the gRPC client receives them)."
        )
    return 0 if len(results) == len(model_ids) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--out", type=Path, default=Path("out/diffusion_gpu"))
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "adgen-bench-gpu")
    parser.add_argument("--models", nargs="+", choices=sorted(MODEL_SETS), default=list(MODEL_SETS))
    parser.add_argument("--clean", action="store_true", help="delete the built sets afterwards")
    parser.add_argument("--measure", choices=sorted(MODEL_SETS), help=argparse.SUPPRESS)
    options = parser.parse_args()
    scale = SCALES[options.scale]
    work_dir = options.work_dir / scale.name
    if options.measure:
        measure(options.measure, scale, work_dir, options.out)
        return
    if scale.name == "full" and not torch.cuda.is_available():
        print("warning: --scale full without CUDA runs the real-size models on the CPU (slow, ~37 GB of disk)")
    command_line = shlex.join(["python", "-m", "bench.diffusion_gpu", *sys.argv[1:]])
    print("$ " + command_line, flush=True)
    status = run(scale, options.models, work_dir, options.out, command_line)
    if options.clean:
        shutil.rmtree(work_dir, ignore_errors=True)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
