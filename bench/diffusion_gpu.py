# mypy: disallow-untyped-calls=False
"""GPU benchmark: the memory planner's predictions against one real run of each set, on a capped box.

Run: python -m bench.diffusion_gpu [--scale full|small] [--models ID ...] [--device-memory 24GiB]
     [--host-memory 16GiB] [--side 1024] [--out DIR] [--work-dir DIR] [--clean] [--deadline-s S]
(on a lent GPU machine: see bench/README.md).

Each set (random weights at the real sizes, from the kept real configs: bench/gpu_models.py) is built once
into a Hugging Face cache layout under --work-dir, then measured in a fresh child process (clean host and
device baselines) that finds it the way the service does (HF_HOME, offline). The child caps the device at
--device-memory (torch's per-process memory fraction), plans with that box and --host-memory, loads under
the chosen plan through DiffusionEngine, generates at --side² with the entry's default steps, unloads, and
writes every figure (predicted and measured side by side) to <out>/<model_id>.json; the parent prints one
table and writes <out>/diffusion_gpu.json. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import mmap
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
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import diffusers
import psutil
import torch
import transformers

from adgen_diffusion.engine import DiffusionEngine, ImageJob, Progress, Stage
from adgen_diffusion.kept_configs import local_repo
from adgen_diffusion.memory import status_bytes
from adgen_diffusion.plan_report import decision_json
from adgen_diffusion.planner import GIB, Box, MemoryPlanner, parse_size
from adgen_diffusion.registry import ModelRegistry, Task
from bench.gpu_models import (
    DEFAULT_MODELS,
    MODEL_SETS,
    SCALES,
    Scale,
    build_set,
    cache_snapshot,
    is_built,
    remove_set,
    set_bytes,
    set_spec,
    weight_files,
)

GB = 1e9
MIB = 1024**2
PROMPT = "iced strawberry latte on a wooden cafe table, summer light"
SEED = 7
# Left free on the work disk after a set is written.
_DISK_MARGIN_BYTES = 2 * GIB
_READ_CHUNK_BYTES = 16 * MIB
# Default image side per scale: the real 1024² on a GPU; the narrow CPU sets run the same code at 256².
_DEFAULT_SIDE = {"full": 1024, "small": 256}
# Seconds kept back from --deadline-s for the table and the JSON.
_DEADLINE_RESERVE_S = 10.0
# Fewer seconds left than this (per scale) before the first set: it is skipped rather than started.
_MIN_SET_S = {"full": 60.0, "small": 5.0}

_LOGGER = logging.getLogger("bench.diffusion_gpu")


# ----- measuring helpers (child process) -----


def host_now() -> dict[str, int]:
    return {"rss": status_bytes("VmRSS"), "anon": status_bytes("RssAnon")}


class HostPeak:
    """Peak resident and anonymous host memory while a block runs (5 ms samples, plus the kernel's VmHWM)."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="host-peak", daemon=True)
        self.start_rss = self.start_anon = self.peak_rss = self.peak_anon = 0

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._take()

    def _take(self) -> None:
        self.peak_rss = max(self.peak_rss, status_bytes("VmRSS"))
        self.peak_anon = max(self.peak_anon, status_bytes("RssAnon"))

    def __enter__(self) -> HostPeak:
        # Resets VmHWM (the kernel's own peak RSS) so no sample gap can hide a spike.
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
        self.start_rss = self.peak_rss = status_bytes("VmRSS")
        self.start_anon = self.peak_anon = status_bytes("RssAnon")
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._take()
        self.peak_rss = max(self.peak_rss, status_bytes("VmHWM"))

    def figures(self) -> dict[str, int]:
        return {
            "start_rss": self.start_rss,
            "start_anon": self.start_anon,
            "peak_rss": self.peak_rss,
            "peak_anon": self.peak_anon,
        }


def drop_page_cache(files: list[Path]) -> str:
    """Evicts the files from the page cache; returns how: `drop_caches` (root), else `fadvise` per file."""
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return "drop_caches"
    for path in files:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)
    return "fadvise"


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


def page_cache_fraction(files: list[Path]) -> float | None:
    """Fraction of the files' pages in the page cache now (mincore); None where that cannot be read."""
    try:
        libc = _libc()
    except (OSError, AttributeError):
        return None
    page = mmap.PAGESIZE
    resident = total = 0
    for path in files:
        size = path.stat().st_size
        if size == 0:
            continue
        descriptor = os.open(path, os.O_RDONLY)
        try:
            address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, descriptor, 0)
            if address is None or address == ctypes.c_void_p(-1).value:
                return None
            try:
                pages = (size + page - 1) // page
                vector = (ctypes.c_ubyte * pages)()
                if libc.mincore(address, size, vector) != 0:
                    return None
                resident += pages - bytes(vector).count(0)
                total += pages
            finally:
                libc.munmap(address, size)
        finally:
            os.close(descriptor)
    return resident / total if total else None


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


def host_to_device_bandwidth(device: torch.device, nbytes: int = GIB) -> dict[str, float]:
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
    # The pinned buffer goes back to torch's host cache, still page-locked: hand it back so it is not counted
    # in the host memory before the load.
    empty_host_cache = getattr(getattr(torch, "accelerator", None), "empty_host_cache", None)
    empty_host_cache = empty_host_cache or getattr(torch._C, "_host_emptyCache", None)
    if callable(empty_host_cache):
        with contextlib.suppress(RuntimeError):
            empty_host_cache()
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


class DeviceMeter:
    """torch's allocator peaks and the device memory outside it (CUDA context, kernels, library handles).

    Peaks are reset at the start of each phase; a phase's measured peak is its max_memory_reserved (and
    max_memory_allocated) plus the memory the driver reports used outside torch's allocator at its end.
    On the CPU every figure is None.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def outside_allocator(self) -> int | None:
        if not self.cuda:
            return None
        torch.cuda.synchronize(self.device)
        free, total = torch.cuda.mem_get_info(self.device)
        return int(total - free - torch.cuda.memory_reserved(self.device))

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> dict[str, int] | None:
        if not self.cuda:
            return None
        outside = self.outside_allocator()
        assert outside is not None
        allocated = int(torch.cuda.max_memory_allocated(self.device))
        reserved = int(torch.cuda.max_memory_reserved(self.device))
        return {
            "max_allocated": allocated,
            "max_reserved": reserved,
            "outside_allocator": outside,
            "peak_allocated_plus_outside": allocated + outside,
            "peak_reserved_plus_outside": reserved + outside,
        }

    def now(self) -> dict[str, int] | None:
        if not self.cuda:
            return None
        free, total = torch.cuda.mem_get_info(self.device)
        return {
            "allocated": int(torch.cuda.memory_allocated(self.device)),
            "reserved": int(torch.cuda.memory_reserved(self.device)),
            "driver_used": int(total - free),
            "total": int(total),
        }

    def ooms(self) -> int:
        return int(torch.cuda.memory_stats(self.device).get("num_ooms", 0)) if self.cuda else 0


class _RunProbe:
    """on_progress for one engine.run: step end times (after a device sync) and device peaks per phase."""

    def __init__(self, meter: DeviceMeter) -> None:
        self.meter = meter
        self.started = time.perf_counter()
        self.step_ends: list[float] = []
        self.phases: dict[str, dict[str, int] | None] = {}

    def __call__(self, progress: Progress) -> None:
        if progress.stage is Stage.DENOISING:
            if self.meter.cuda:
                torch.cuda.synchronize(self.meter.device)
            self.step_ends.append(time.perf_counter())
            if len(self.step_ends) == 1:
                # Text encoding and the first step: the encoder's activations, and its weights if released.
                self.phases["encode_and_step_1"] = self.meter.peak()
                self.meter.reset()
        elif progress.stage is Stage.DECODING:
            self.phases["steps_2_on"] = self.meter.peak()
            self.meter.reset()

    def step_s(self) -> float | None:
        gaps = [b - a for a, b in zip(self.step_ends, self.step_ends[1:], strict=False)]
        return statistics.median(gaps) if gaps else None


def _device_box(device: torch.device, device_budget: int, host_budget: int) -> tuple[Box, dict[str, Any]]:
    """The box the planner plans for, capping torch's allocator at the device budget on CUDA."""
    if device.type != "cuda":
        # The CPU is its own device: one budget, as detect_box gives on a CPU.
        box = Box(device_bytes=host_budget, host_bytes=host_budget, accelerator=False, fp8_compute=False)
        return box, {"note": "CPU: no device budget to cap; CUDA-only figures skipped"}
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, device_budget / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    capability = torch.cuda.get_device_capability(device)
    box = Box(device_bytes=device_budget, host_bytes=host_budget, accelerator=True, fp8_compute=capability >= (8, 9))
    info = {
        "device_name": torch.cuda.get_device_name(device),
        "capability": f"{capability[0]}.{capability[1]}",
        "device_total": int(total),
        "memory_fraction": fraction,
    }
    return box, info


class _Result:
    """One set's figures, written to <out>/<model_id>.json after every phase (a killed run keeps what it had)."""

    def __init__(self, path: Path, figures: dict[str, Any]) -> None:
        self.path = path
        self.figures = figures
        self.save()

    def update(self, **figures: Any) -> None:
        self.figures.update(figures)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.figures, indent=2, default=str))
        temporary.replace(self.path)


def _guarded(result: _Result, phase: str, meter: DeviceMeter, action: Callable[[], Any]) -> Any:
    """Runs one phase; a failure (an out-of-memory included) is recorded instead of ending the run."""
    ooms = meter.ooms()
    try:
        return action()
    except Exception as error:
        _LOGGER.exception("%s failed", phase)
        oom = meter.ooms() > ooms or isinstance(error, torch.cuda.OutOfMemoryError)
        result.update(error={"phase": phase, "oom": oom, "message": f"{type(error).__name__}: {error}"})
        return None


def _generate(
    engine: DiffusionEngine, job: ImageJob, meter: DeviceMeter, result: _Result, phase: str
) -> dict[str, Any]:
    """One engine.run of the job: wall and step times, device peaks per phase, host peaks."""
    probe = _RunProbe(meter)
    meter.reset()
    with HostPeak() as host:
        output = _guarded(result, phase, meter, lambda: engine.run(job, probe, threading.Event()))
    probe.phases["decode"] = meter.peak()
    run: dict[str, Any] = {
        "wall_s": time.perf_counter() - probe.started,
        "first_step_end_s": probe.step_ends[0] - probe.started if probe.step_ends else None,
        "step_s": probe.step_s(),
        "steps_seen": len(probe.step_ends),
        "device_phases": probe.phases,
        "host": host.figures(),
        "ok": output is not None,
    }
    if output is not None:
        run.update(denoise_s=output.denoise_s, decode_s=output.decode_s, reloaded_s=output.load_s)
    return run


def measure(options: argparse.Namespace, scale: Scale, work_dir: Path) -> None:
    """Child process: every figure for one set, written to <out>/<model_id>.json."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_id: str = options.measure
    side = options.side or _DEFAULT_SIDE[scale.name]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    meter = DeviceMeter(device)
    registry = ModelRegistry.load(tiny=False)
    entry = registry.get(model_id)
    snapshot = cache_snapshot(work_dir / "hub", MODEL_SETS[model_id].repo)
    files = weight_files(snapshot)
    if meter.cuda:
        torch.cuda.init()
        torch.zeros(1, device=device)
    box, device_info = _device_box(device, options.device_memory, options.host_memory)
    result = _Result(
        options.out / f"{model_id}.json",
        {
            "model_id": model_id,
            "scale": scale.name,
            "device": str(device),
            "device_info": device_info,
            "cpu_threads": torch.get_num_threads(),
            "box": {"device_bytes": box.device_bytes, "host_bytes": box.host_bytes, "fp8_compute": box.fp8_compute},
            "side": side,
            "steps": entry.default_steps,
            "guidance": entry.default_guidance,
            "weight_files": len(files),
            "file_bytes": sum(f.stat().st_size for f in files),
            "filesystem": filesystem_of(files[0]),
            "context_at_start": meter.outside_allocator(),
            "host_at_start": host_now(),
        },
    )
    # Full scale: the planner as the service builds it (the kept configs, which the set was written from);
    # small scale: sized from the shrunk set itself, so the predictions are for what is loaded.
    planner = MemoryPlanner(box) if not scale.shrink else MemoryPlanner(box, configs_of=lambda _: local_repo(snapshot))
    decision = planner.plan(entry, side, side, Task.TEXT_TO_IMAGE)
    result.update(plan=decision_json(decision), plan_sizes_from="kept configs" if not scale.shrink else "the set")
    plan = decision.chosen
    print(
        f"\n[{model_id}] box: {box.device_bytes / GIB:.1f} GiB device, {box.host_bytes / GIB:.1f} GiB host", flush=True
    )
    if plan is None:
        smallest = decision.smallest
        print(f"[{model_id}] no plan fits; smallest: {smallest.summary} ({smallest.peak_device_bytes / GIB:.2f} GiB)")
        result.update(error={"phase": "plan", "oom": False, "message": "no plan fits the box"})
        return
    print(
        f"[{model_id}] plan at {side}²: {plan.summary}\n[{model_id}] predicted peak device"
        f" {plan.peak_device_bytes / GIB:.2f} GiB, host {plan.peak_host_bytes / GIB:.2f} GiB,"
        f" weights {plan.weight_bytes / GIB:.2f} GiB",
        flush=True,
    )

    # Disk: one cold read of every shard (page cache dropped first, and checked), the bandwidth floor of a load.
    if meter.cuda:
        result.update(h2d_bytes_per_s=host_to_device_bandwidth(device))
    method = drop_page_cache(files)
    resident_before_read = page_cache_fraction(files)
    cold_read = read_bandwidth(files)
    result.update(read_cold_bytes_per_s=cold_read, drop_method=method, page_cache_before_read=resident_before_read)
    drop_page_cache(files)
    resident_before_load = page_cache_fraction(files)
    result.update(page_cache_before_load=resident_before_load)

    engine = DiffusionEngine(registry, work_dir, device=str(device), planner=planner, scratch_dir=work_dir)
    host_before = host_now()
    device_before = meter.now()
    result.update(host_before_load=host_before, device_before_load=device_before)

    # Load under the chosen plan.
    meter.reset()
    with HostPeak() as load_host:
        report = _guarded(result, "load", meter, lambda: engine.load(model_id, plan=plan))
    result.update(host_load=load_host.figures(), device_load=meter.peak(), device_after_load=meter.now())
    if report is not None:
        result.update(
            load_s=report.duration_s,
            model_bytes=report.memory.model_bytes,
            engine_peak_anon_above_start=report.memory.peak_host_anon_bytes,
        )
        print(f"[{model_id}] loaded in {report.duration_s:.2f}s", flush=True)

        # Generate: the first call warms kernels up, the last is the timed one; peaks for each.
        job = ImageJob(
            model_id, Task.TEXT_TO_IMAGE, PROMPT, side, side, entry.default_steps, entry.default_guidance, SEED
        )
        runs: list[dict[str, Any]] = []
        for index in range(options.runs):
            run = _generate(engine, job, meter, result, f"generate {index + 1}")
            runs.append(run)
            result.update(runs=runs)
            step = "no step time" if run["step_s"] is None else f"{run['step_s'] * 1e3:.1f} ms/step"
            print(f"[{model_id}] run {index + 1}: {run['wall_s']:.2f}s, {step}", flush=True)
            if not run["ok"]:
                break

    # Unload, and memory against what it was before the load.
    unload = _guarded(result, "unload", meter, engine.unload)
    if unload is not None:
        memory = unload.memory
        result.update(
            unload={
                "seconds": unload.duration_s,
                "verified": memory.verified,
                "leaked_modules": memory.leaked_modules,
                "device_allocated": memory.device_allocated_bytes,
                "baseline_device_allocated": memory.baseline_device_allocated_bytes,
                "device_reserved": memory.device_reserved_bytes,
                "device_free": memory.device_free_bytes,
                "host_rss": memory.host_rss_bytes,
            }
        )
    result.update(
        host_after_unload=host_now(), device_after_unload=meter.now(), context_at_end=meter.outside_allocator()
    )


# ----- orchestration (parent process) -----


def _size(nbytes: float) -> str:
    """GiB at model scale, MiB for the small sets, so neither prints as 0.00."""
    return f"{nbytes / GIB:.2f} GiB" if abs(nbytes) >= GIB else f"{nbytes / MIB:.1f} MiB"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    return f"{numerator / denominator:.2f}x" if numerator is not None and denominator else "-"


class Clock:
    """--deadline-s: seconds left before the parent must print its table, counted from the process's start."""

    def __init__(self, deadline_s: float | None) -> None:
        self.started = psutil.Process().create_time()
        self.deadline_s = deadline_s

    def elapsed(self) -> float:
        return time.time() - self.started

    def left(self) -> float | None:
        if self.deadline_s is None:
            return None
        return self.deadline_s - _DEADLINE_RESERVE_S - self.elapsed()


def _build(model_id: str, scale: Scale, work_dir: Path) -> dict[str, Any]:
    """Builds the set unless it is there; `skipped` says why not when the disk cannot hold it."""
    model_set = MODEL_SETS[model_id]
    hub = work_dir / "hub"
    needed = set_bytes(set_spec(model_set, scale))
    if is_built(hub, model_set, scale):
        return {"build_s": 0.0, "set_bytes": needed, "reused": True}
    work_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work_dir).free
    if free < needed + _DISK_MARGIN_BYTES:
        return {"skipped": f"needs {needed / GB:.1f} GB + 2 GiB margin, {free / GB:.1f} GB free on {work_dir}"}
    print(f"building {model_id} ({scale.name}, {needed / GB:.2f} GB bf16) in {hub}", flush=True)
    started = time.perf_counter()
    build_set(hub, model_set, scale)
    return {"build_s": time.perf_counter() - started, "set_bytes": needed, "reused": False}


def _child_command(model_id: str, options: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.diffusion_gpu",
        "--measure",
        model_id,
        "--scale",
        options.scale,
        "--work-dir",
        str(options.work_dir),
        "--out",
        str(options.out),
        "--device-memory",
        str(options.device_memory),
        "--host-memory",
        str(options.host_memory),
        "--side",
        str(options.side or _DEFAULT_SIDE[options.scale]),
        "--runs",
        str(options.runs),
    ]


def _run_child(model_id: str, options: argparse.Namespace, work_dir: Path, timeout_s: float | None) -> dict[str, Any]:
    env = dict(os.environ, HF_HOME=str(work_dir), HF_HUB_CACHE=str(work_dir / "hub"), HF_HUB_OFFLINE="1")
    env.pop("ADGEN_DIFFUSION_TINY", None)
    path = options.out / f"{model_id}.json"
    path.unlink(missing_ok=True)
    print(f"measuring {model_id} in a fresh process", flush=True)
    status: int | str
    try:
        status = subprocess.run(_child_command(model_id, options), env=env, check=False, timeout=timeout_s).returncode
    except subprocess.TimeoutExpired:
        status = "killed at --deadline-s"
    try:
        result: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        result = {"model_id": model_id, "error": {"phase": "start", "oom": False, "message": "no result written"}}
    if status != 0:
        phase = "deadline" if isinstance(status, str) else "exit"
        result.setdefault("error", {"phase": phase, "oom": False, "message": f"measuring process: {status}"})
        result["exit"] = status
    return result


def _gib(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / GIB:.2f}"


def _device_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    plan = result.get("plan", {})
    predicted = plan.get("peak_device_bytes")
    runs = result.get("runs", [])
    if not result.get("device", "").startswith("cuda"):
        return [("device peak predicted GiB", _gib(predicted)), ("device peak measured", "- (CPU: no device)")]
    load = result.get("device_load") or {}
    phase_peaks = [load] + [p or {} for run in runs for p in run["device_phases"].values()]
    reserved = max((p.get("peak_reserved_plus_outside", 0) for p in phase_peaks), default=0)
    allocated = max((p.get("peak_allocated_plus_outside", 0) for p in phase_peaks), default=0)
    last = runs[-1]["device_phases"] if runs else {}
    by_phase = [load.get("peak_reserved_plus_outside")] + [
        (last.get(name) or {}).get("peak_reserved_plus_outside")
        for name in ("encode_and_step_1", "steps_2_on", "decode")
    ]
    h2d = result.get("h2d_bytes_per_s") or {}
    return [
        (
            "device budget (torch fraction) GiB",
            f"{result['box']['device_bytes'] / GIB:.1f} ({result['device_info']['memory_fraction']:.3f})",
        ),
        ("device peak predicted GiB", _gib(predicted)),
        ("device peak measured, reserved+ctx GiB", f"{_gib(reserved)} ({_ratio(reserved, predicted)})"),
        ("device peak measured, allocated+ctx GiB", f"{_gib(allocated)} ({_ratio(allocated, predicted)})"),
        ("  by phase: load/encode/denoise/decode", " / ".join(_gib(v) for v in by_phase)),
        (
            "outside allocator start / end GiB",
            f"{_gib(result.get('context_at_start'))} / {_gib(result.get('context_at_end'))}",
        ),
        ("host->device pageable / pinned GB/s", f"{h2d.get('pageable', 0) / GB:.1f} / {h2d.get('pinned', 0) / GB:.1f}"),
    ]


def _host_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    predicted = result.get("plan", {}).get("peak_host_bytes")
    peaks = [result.get("host_load") or {}] + [run["host"] for run in result.get("runs", [])]
    rss = max((p.get("peak_rss", 0) for p in peaks), default=0)
    anon = max((p.get("peak_anon", 0) for p in peaks), default=0)
    load = result.get("host_load") or {}
    load_anon = load.get("peak_anon", 0) - load.get("start_anon", 0)
    load_rss = load.get("peak_rss", 0) - load.get("start_rss", 0)
    return [
        ("host budget GiB", f"{result['box']['host_bytes'] / GIB:.1f}"),
        ("host peak predicted GiB", _gib(predicted)),
        ("host peak RSS measured GiB", f"{_gib(rss)} ({_ratio(rss, predicted)})"),
        ("host peak anon measured GiB", f"{_gib(anon)} ({_ratio(anon, predicted)})"),
        (
            "load: RSS / anon above start (engine's)",
            f"+{_size(load_rss)} / +{_size(load_anon)} ({_size(result.get('engine_peak_anon_above_start', 0))})",
        ),
    ]


def _load_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    size = result.get("file_bytes", 0)
    cold = result.get("read_cold_bytes_per_s")
    floor = size / cold if cold else None
    h2d = (result.get("h2d_bytes_per_s") or {}).get("pageable")
    if floor is not None and h2d:
        # A perfectly pipelined load is bound by the slower of reading and copying.
        floor = max(floor, size / h2d)
    cached = result.get("page_cache_before_read")
    cached_load = result.get("page_cache_before_load")
    load_s = result.get("load_s")
    return [
        ("weights on disk (files)", f"{size / GB:.2f} GB ({result.get('weight_files')})"),
        ("filesystem", str(result.get("filesystem"))),
        (
            "read cold GB/s (dropped by, cached)",
            f"{(cold or 0) / GB:.2f} ({result.get('drop_method')}, {_percent(cached)})",
        ),
        ("cached before load", _percent(cached_load)),
        (
            "load s / floor s / ratio",
            f"{_seconds(load_s)} / {_seconds(floor)} / {_ratio(load_s, floor)}",
        ),
    ]


def _percent(fraction: float | None) -> str:
    return "unknown" if fraction is None else f"{fraction * 100:.0f}%"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _run_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    runs = result.get("runs", [])
    warm = runs[-1] if runs else {}
    step = warm.get("step_s")
    walls = " / ".join(f"{run['wall_s']:.2f}" for run in runs) or "-"
    return [
        ("image side², steps", f"{result.get('side')}², {result.get('steps')}"),
        ("step ms (last run)", "-" if step is None else f"{step * 1e3:.1f}"),
        ("call s, each run (encode+denoise+decode)", walls),
        (
            "last run: first step end / denoise / decode s",
            " / ".join(_seconds(warm.get(key)) for key in ("first_step_end_s", "denoise_s", "decode_s")),
        ),
    ]


def _unload_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    unload = result.get("unload") or {}
    before_host = result.get("host_before_load") or {}
    after_host = result.get("host_after_unload") or {}
    rows = [
        (
            "unload verified (leaked modules), s",
            f"{unload.get('verified')} ({unload.get('leaked_modules')}), {_seconds(unload.get('seconds'))}",
        ),
        (
            "host RSS before load / after unload",
            f"{_size(before_host.get('rss', 0))} / {_size(after_host.get('rss', 0))}",
        ),
        (
            "host anon before load / after unload",
            f"{_size(before_host.get('anon', 0))} / {_size(after_host.get('anon', 0))}",
        ),
    ]
    before = result.get("device_before_load")
    after = result.get("device_after_unload")
    if before and after and unload:
        rows += [
            (
                "device allocated: baseline / after unload MiB",
                f"{unload['baseline_device_allocated'] / MIB:.1f} / {unload['device_allocated'] / MIB:.1f}",
            ),
            (
                "device reserved before / after unload MiB",
                f"{before['reserved'] / MIB:.1f} / {after['reserved'] / MIB:.1f}",
            ),
            ("driver used before / after unload GiB", f"{_gib(before['driver_used'])} / {_gib(after['driver_used'])}"),
        ]
    return rows


def _rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, value) lines of one set's results, in table order; a part a cut-short run lacks shows as n/a."""
    build = result.get("build", {})
    plan = result.get("plan", {})
    rows = [
        ("build s (reused)", f"{build.get('build_s', 0):.1f} ({build.get('reused')})"),
        ("plan fits / considered", f"{plan.get('fits')} / {plan.get('plans_considered')}"),
    ]
    # A run cut short before it planned has nothing more to show.
    sections = (_device_rows, _host_rows, _load_rows, _run_rows, _unload_rows) if "box" in result else ()
    for section in sections:
        try:
            rows += section(result)
        except (KeyError, TypeError, ValueError, IndexError):
            rows.append((section.__name__.strip("_").replace("_rows", " figures"), "n/a (run cut short)"))
    error = result.get("error")
    if error:
        oom = " (OOM)" if error.get("oom") else ""
        rows.append(("error", f"{error.get('phase')}{oom}, see below"))
    return rows


def print_table(results: list[dict[str, Any]]) -> None:
    columns = [dict(_rows(r)) for r in results]
    metrics: list[str] = []
    for result in results:
        metrics += [metric for metric, _ in _rows(result) if metric not in metrics]
    width = max(len(m) for m in metrics)
    column = max(28, *(len(v) for c in columns for v in c.values()))
    header = f"{'':{width}}  " + "  ".join(f"{r['model_id']:>{column}}" for r in results)
    print(header)
    print("-" * len(header))
    for metric in metrics:
        print(f"{metric:{width}}  " + "  ".join(f"{c.get(metric, '-'):>{column}}" for c in columns))


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def _summary(
    options: argparse.Namespace, clock: Clock, results: list[dict[str, Any]], skipped: dict[str, str]
) -> dict[str, Any]:
    return {
        "command": options.command_line,
        "scale": options.scale,
        "work_dir": str(options.work_dir),
        "cpus": os.cpu_count(),
        "versions": _versions(),
        "wall_s": clock.elapsed(),
        "results": results,
        "skipped": skipped,
    }


def run(options: argparse.Namespace) -> int:
    scale = SCALES[options.scale]
    work_dir = options.work_dir / scale.name
    clock = Clock(options.deadline_s)
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    # Seconds per set byte of the sets done so far (build and measurement): the next set's estimate.
    seconds_per_byte: float | None = None
    for model_id in options.models:
        needed = set_bytes(set_spec(MODEL_SETS[model_id], scale))
        left = clock.left()
        floor_s = _MIN_SET_S[scale.name]
        estimate = floor_s if seconds_per_byte is None else max(floor_s, seconds_per_byte * needed)
        if left is not None and left < estimate:
            skipped[model_id] = f"{left:.0f}s left before --deadline-s, about {estimate:.0f}s needed"
            print(f"skipping {model_id}: {skipped[model_id]}", flush=True)
            continue
        started = time.perf_counter()
        build = _build(model_id, scale, work_dir)
        if "skipped" in build:
            skipped[model_id] = build["skipped"]
            print(f"skipping {model_id}: {build['skipped']}", flush=True)
            continue
        result = _run_child(model_id, options, work_dir, clock.left())
        results.append({**result, "build": build})
        if not build["reused"]:
            seconds_per_byte = (time.perf_counter() - started) / needed
        if options.clean:
            # Frees the disk for the next set.
            remove_set(work_dir / "hub", MODEL_SETS[model_id])
        options.out.mkdir(parents=True, exist_ok=True)
        (options.out / "diffusion_gpu.json").write_text(
            json.dumps(_summary(options, clock, results, skipped), indent=2)
        )
    summary = _summary(options, clock, results, skipped)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "diffusion_gpu.json").write_text(json.dumps(summary, indent=2))
    print(f"\n== diffusion GPU bench, {scale.name} scale, random weights, loaded through DiffusionEngine ==")
    print(f"$ {options.command_line}")
    first = results[0] if results else {}
    device = (first.get("device_info") or {}).get("device_name")
    device = device or (f"{first.get('device')}, {first.get('cpu_threads')} threads" if "device" in first else "-")
    print(f"device {device}; {summary['versions']}; wall {summary['wall_s']:.0f}s")
    print(f"JSON {options.out / 'diffusion_gpu.json'}")
    for result in results:
        plan = result.get("plan") or {}
        fits = "" if plan.get("fits", True) else " (does not fit; the smallest plan)"
        print(f"plan {result['model_id']} at {result.get('side')}²{fits}: {plan.get('plan', '-')}")
    for model_id, why in skipped.items():
        print(f"skipped {model_id}: {why}")
    for result in results:
        if result.get("error"):
            error = result["error"]
            print(f"error {result['model_id']} in {error.get('phase')}: {error.get('message')}")
    if results:
        print_table(results)
        notes = [
            "predicted: the planner's peaks for the chosen plan (margins, 1 GiB device / 2 GiB host reserves in).",
            "device measured: max_memory_reserved (allocated) since the phase's reset, plus what the driver reports"
            " used outside torch's allocator (CUDA context, kernels, library handles) at the phase's end.",
            "host measured: peak VmRSS / RssAnon of the measuring process (5 ms samples and VmHWM), absolute.",
            "floor: bytes over the cold single-stream read (and, on CUDA, over the pageable host->device copy,"
            " whichever is slower); inside a VM a host-side cache may still serve a 'cold' read.",
            "step: median gap between DENOISING events of the last run (device synced at each).",
        ]
        if not first.get("device", "").startswith("cuda"):
            notes.append(
                "CPU: no device budget is capped and CUDA figures are skipped; the loader runs float32 on a CPU while"
                " the planner sizes bf16, so host figures are not comparable with the predictions here."
            )
        print("\n".join(notes))
    failed = [r["model_id"] for r in results if r.get("error")]
    return 0 if not failed and not skipped else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--out", type=Path, default=Path("out/diffusion_gpu"))
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "adgen-bench-gpu")
    parser.add_argument("--models", nargs="+", choices=sorted(MODEL_SETS), default=list(DEFAULT_MODELS))
    parser.add_argument("--device-memory", type=parse_size, default=parse_size("24GiB"), help="device budget (24GiB)")
    parser.add_argument("--host-memory", type=parse_size, default=parse_size("16GiB"), help="host budget (16GiB)")
    parser.add_argument("--side", type=int, default=0, help="image side (default 1024 full, 256 small)")
    parser.add_argument("--runs", type=int, default=2, help="generations per set; the last is the timed one")
    parser.add_argument("--clean", action="store_true", help="delete each set once measured, and the work dir")
    parser.add_argument("--deadline-s", type=float, help="print the table before this many seconds have passed")
    parser.add_argument("--measure", choices=sorted(MODEL_SETS), help=argparse.SUPPRESS)
    return parser


def main() -> None:
    options = _parser().parse_args()
    scale = SCALES[options.scale]
    work_dir = options.work_dir / scale.name
    if options.measure:
        measure(options, scale, work_dir)
        return
    if scale.name == "full" and not torch.cuda.is_available():
        print("warning: --scale full without CUDA runs the real-size models on the CPU (slow, ~37 GB of disk)")
    options.command_line = shlex.join(["python", "-m", "bench.diffusion_gpu", *sys.argv[1:]])
    print("$ " + options.command_line, flush=True)
    status = run(options)
    if options.clean:
        shutil.rmtree(work_dir, ignore_errors=True)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
