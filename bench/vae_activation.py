# mypy: disallow-untyped-calls=False
"""Peak host memory of one VAE decode per output pixel, for the real VAE configs (random weights, bf16, CPU).

Run: .venv/bin/python -m bench.vae_activation [--sides 256 512] [--vaes z-image flux2-klein qwen-image] [--out F]

Each VAE is built from its kept real config (`kept_repo(repo).component_config("vae")`), with random weights,
in bf16, and decodes one latent of the given side twice, in a fresh process per (VAE, side), so no freed heap
of an earlier size hides part of the next one. The first decode at a shape also leaves oneDNN's reordered
weights and kernels behind (a constant of the CPU backend, not an activation); the second decode is the
figure: its peak anonymous memory above its start (AnonPeakSampler, 5 ms samples; the kernel's VmHWM as a
check) over the output pixels, and that over the VAE's widest full-resolution channel count:
block_out_channels[1] for the KL decoders, base_dim * dim_mult[1] for the Qwen one. The marginal figure is
the slope between the smallest and the largest side, free of any constant. The memory planner sizes VAE
activations from these (planner._VAE_BYTES_PER_PIXEL_CHANNEL).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adgen_diffusion.kept_configs import kept_repo
from adgen_diffusion.memory import AnonPeakSampler, status_bytes, trim_host_heap
from adgen_diffusion.planner import _VAE_BYTES_PER_PIXEL_CHANNEL

_LATENT_SCALE = 8
_SEED = 0


@dataclass(frozen=True)
class Vae:
    """One real VAE: the repo whose kept config it is, and its kind ("kl" or "qwen", as the planner names it)."""

    name: str
    repo: str
    kind: str


VAES: dict[str, Vae] = {
    vae.name: vae
    for vae in (
        Vae("z-image", "Tongyi-MAI/Z-Image-Turbo", "kl"),
        Vae("flux2-klein", "black-forest-labs/FLUX.2-klein-4B", "kl"),
        Vae("qwen-image", "Qwen/Qwen-Image-Edit-2511", "qwen"),
    )
}


def full_resolution_channels(vae: Vae, config: dict[str, Any]) -> int:
    """The widest channel count the decoder runs at the output resolution (the planner's `vae_channels`)."""
    if vae.kind == "qwen":
        return int(config["base_dim"]) * int(config["dim_mult"][1])
    return int(config["block_out_channels"][1])


def _latent(vae: Vae, config: dict[str, Any], side: int, generator: torch.Generator) -> torch.Tensor:
    size = side // _LATENT_SCALE
    if vae.kind == "qwen":
        # A causal video VAE: one frame.
        shape: tuple[int, ...] = (1, int(config["z_dim"]), 1, size, size)
    else:
        shape = (1, int(config["latent_channels"]), size, size)
    return torch.randn(shape, generator=generator).to(torch.bfloat16)


def _decode(model: Any, latent: torch.Tensor) -> dict[str, float]:
    """One decode: peak anonymous memory above its start (sampled) and peak RSS above it (the kernel's VmHWM)."""
    trim_host_heap()
    # Resets VmHWM to the current RSS, so the kernel's own peak covers this decode alone.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    start_rss = status_bytes("VmRSS")
    started = time.perf_counter()
    with AnonPeakSampler() as sampler, torch.inference_mode():
        model.decode(latent, return_dict=False)
    return {
        "peak_anon_above_start": sampler.peak_above_start,
        "peak_rss_above_start": max(0, status_bytes("VmHWM") - start_rss),
        "seconds": time.perf_counter() - started,
    }


def measure_one(vae: Vae, side: int) -> dict[str, Any]:
    """Child process: two decodes of `vae` at side²; the first pays one-time CPU costs, the second is the figure."""
    import diffusers

    config = kept_repo(vae.repo).component_config("vae")
    torch.manual_seed(_SEED)
    model = getattr(diffusers, config["_class_name"]).from_config(config).to(torch.bfloat16).eval()
    latent = _latent(vae, config, side, torch.Generator().manual_seed(_SEED))
    # The first decode at a shape also keeps oneDNN's reordered weights and kernels (a constant, CPU only).
    first = _decode(model, latent)
    second = _decode(model, latent)
    pixels = side * side
    channels = full_resolution_channels(vae, config)
    per_pixel = second["peak_anon_above_start"] / pixels
    return {
        "vae": vae.name,
        "class": config["_class_name"],
        "side": side,
        "first_decode": first,
        "decode": second,
        "peak_anon_above_start": second["peak_anon_above_start"],
        "bytes_per_pixel": per_pixel,
        "rss_bytes_per_pixel": second["peak_rss_above_start"] / pixels,
        "first_bytes_per_pixel": first["peak_anon_above_start"] / pixels,
        "channels": channels,
        "bytes_per_pixel_channel": per_pixel / channels,
        "planner_bytes_per_pixel_channel": _VAE_BYTES_PER_PIXEL_CHANNEL[vae.kind],
        "decode_s": second["seconds"],
        "threads": torch.get_num_threads(),
    }


def _run_child(vae: str, side: int) -> dict[str, Any] | None:
    command = [sys.executable, "-m", "bench.vae_activation", "--one", vae, str(side)]
    finished = subprocess.run(command, check=False, capture_output=True, text=True)
    lines = [line for line in finished.stdout.splitlines() if line.startswith("{")]
    if finished.returncode != 0 or not lines:
        print(f"{vae} {side}²: failed with exit status {finished.returncode}\n{finished.stderr[-2000:]}")
        return None
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def marginal(results: list[dict[str, Any]]) -> dict[str, float]:
    """Per VAE, bytes per extra pixel per channel between its smallest and largest side (the constant cancels)."""
    slopes = {}
    for name in dict.fromkeys(r["vae"] for r in results):
        rows = sorted((r for r in results if r["vae"] == name), key=lambda r: r["side"])
        low, high = rows[0], rows[-1]
        pixels = high["side"] ** 2 - low["side"] ** 2
        if pixels > 0:
            growth = high["peak_anon_above_start"] - low["peak_anon_above_start"]
            slopes[name] = growth / pixels / high["channels"]
    return slopes


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'VAE':12} {'class':23} {'side':>5} {'peak anon MiB':>14} {'B/px':>7} {'RSS B/px':>9} {'1st B/px':>9}"
        f" {'ch':>4} {'B/px/ch':>8} {'planner':>8} {'/planner':>9} {'decode s':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['vae']:12} {r['class']:23} {r['side']:>5} {r['peak_anon_above_start'] / 1024**2:14.1f}"
            f" {r['bytes_per_pixel']:7.0f} {r['rss_bytes_per_pixel']:9.0f} {r['first_bytes_per_pixel']:9.0f}"
            f" {r['channels']:4d} {r['bytes_per_pixel_channel']:8.1f} {r['planner_bytes_per_pixel_channel']:8.1f}"
            f" {r['bytes_per_pixel_channel'] / r['planner_bytes_per_pixel_channel']:8.2f}x {r['decode_s']:9.1f}"
        )
    slopes = marginal(results)
    if slopes:
        print("marginal B/px/ch (slope smallest→largest side): " + ", ".join(f"{k} {v:.1f}" for k, v in slopes.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--vaes", nargs="+", choices=sorted(VAES), default=list(VAES))
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--one", nargs=2, metavar=("VAE", "SIDE"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.one:
        name, side = options.one
        print(json.dumps(measure_one(VAES[name], int(side))))
        return
    command_line = shlex.join(["python", "-m", "bench.vae_activation", *sys.argv[1:]])
    print("$ " + command_line, flush=True)
    results = []
    for name in options.vaes:
        for side in options.sides:
            result = _run_child(name, side)
            if result is not None:
                print(f"{name} {side}²: {result['bytes_per_pixel']:.0f} B/px ({result['decode_s']:.1f}s)", flush=True)
                results.append(result)
    print("\n== peak anonymous host memory of one VAE decode per output pixel (bf16, CPU, random weights) ==")
    print(f"$ {command_line}")
    print_table(results)
    print(
        "B/px: peak RssAnon above the second decode's start (5 ms samples) per output pixel; RSS B/px: the same from"
        " VmHWM; 1st B/px: the first decode, which also keeps oneDNN's reordered weights (CPU only); one process"
        " per row; ch: the widest full-resolution channels (KL: block_out_channels[1]; Qwen: base_dim*dim_mult[1])."
    )
    if options.out:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {"command": command_line, "results": results, "marginal_bytes_per_pixel_channel": marginal(results)}
        options.out.write_text(json.dumps(summary, indent=2))
    raise SystemExit(0 if len(results) == len(options.vaes) * len(options.sides) else 1)


if __name__ == "__main__":
    main()
