"""CPU benchmark: the final encode of an ad image (PNG, JPEG, WebP; Pillow and PyPI encoders) vs `deliver`.

Run: .venv/bin/python -m bench.image_encode [--sizes 1080x1080 ...] [--sources photo photo+grain gradient] [--repeat 20]
"""

from __future__ import annotations

import argparse
import importlib
import io
import math
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from adgen.type.v1 import image_pb2
from adgen_orchestrator.imaging import deliver
from adgen_orchestrator.provenance import ContentLabel, SourceType
from adgen_orchestrator.sizing import Size, SizeRules, generation_size

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "iced-americano.jpg"
LABEL = ContentLabel(SourceType.GENERATED, "flux2-klein-4b", 7, "iced americano on a wooden cafe table, summer light")
BASELINE = "Pillow PNG level 6 (default)"
SOURCES = ("photo", "photo+grain", "gradient")

Pixels = NDArray[np.uint8]


@dataclass(frozen=True)
class Case:
    """One thing timed: `run` turns the picture into bytes (or into nothing, for a step of `deliver`)."""

    name: str
    run: Callable[[], bytes | None]


@dataclass(frozen=True)
class Row:
    name: str
    median_ms: float
    p90_ms: float
    size_bytes: int | None
    psnr_db: float | None


def _optional(module: str) -> ModuleType | None:
    """An encoder from PyPI that is not a project dependency: measured where installed, else skipped."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _turbojpeg() -> Any:
    """PyTurboJPEG needs the system libturbojpeg (its wheel bundles none)."""
    module = _optional("turbojpeg")
    if module is None:
        return None
    try:
        return module.TurboJPEG()
    except (OSError, RuntimeError):
        return None


def _fill(image: Image.Image, size: Size) -> Image.Image:
    """`image` scaled to cover `size` and centre-cropped to it."""
    scale = max(size.width / image.width, size.height / image.height)
    scaled = image.resize((math.ceil(image.width * scale), math.ceil(image.height * scale)), Image.Resampling.LANCZOS)
    left, top = (scaled.width - size.width) // 2, (scaled.height - size.height) // 2
    return scaled.crop((left, top, left + size.width, top + size.height))


def _grain(base: NDArray[np.float64], sigma: float) -> Image.Image:
    noisy = base + np.random.default_rng(7).normal(0.0, sigma, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def _gradient(size: Size) -> Image.Image:
    """A diagonal colour gradient with Gaussian noise (sigma 6): smooth areas plus heavy grain, a worst case."""
    y, x = np.mgrid[0 : size.height, 0 : size.width].astype(np.float64)
    u, v = x / size.width, y / size.height
    return _grain(np.stack([255 * u, 255 * v, 255 * (1 - (u + v) / 2)], axis=-1), 6.0)


def render(source: str, size: Size) -> Image.Image:
    """What the diffusion service would hand back for `size`: the picture at the legal render size."""
    if source == "gradient":
        return _gradient(size)
    with Image.open(SAMPLE) as sample:
        photo = _fill(sample.convert("RGB"), size)
    # The 768² sample scaled up is smoother than a render; mild grain stands in for a render's fine texture.
    return photo if source == "photo" else _grain(np.asarray(photo, dtype=np.float64), 2.0)


def psnr(reference: Pixels, data: bytes) -> float:
    """PSNR of the decoded `data` against `reference` in dB, over the three channels; identical → inf."""
    with Image.open(io.BytesIO(data)) as decoded:
        pixels = np.asarray(decoded.convert("RGB"), dtype=np.float64)
    mse = float(np.mean((pixels - reference.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _pillow(picture: Image.Image, image_format: str, **options: object) -> Callable[[], bytes]:
    def encode() -> bytes:
        buffer = io.BytesIO()
        picture.save(buffer, image_format, **options)
        return buffer.getvalue()

    return encode


def pillow_cases(picture: Image.Image) -> list[Case]:
    cases = [
        Case("Pillow PNG level 1", _pillow(picture, "PNG", compress_level=1)),
        Case(BASELINE, _pillow(picture, "PNG", compress_level=6)),
        Case("Pillow PNG level 9", _pillow(picture, "PNG", compress_level=9)),
    ]
    for quality in (90, 95):
        for subsampling, chroma in ((2, "4:2:0"), (0, "4:4:4")):
            for optimize in (False, True):
                name = f"Pillow JPEG q{quality} {chroma}{' optimize' if optimize else ''}"
                encode = _pillow(picture, "JPEG", quality=quality, subsampling=subsampling, optimize=optimize)
                cases.append(Case(name, encode))
    for method in (0, 4, 6):
        cases.append(Case(f"Pillow WebP q90 method {method}", _pillow(picture, "WEBP", quality=90, method=method)))
    for method in (0, 4):
        name = f"Pillow WebP lossless method {method}"
        cases.append(Case(name, _pillow(picture, "WEBP", lossless=True, method=method)))
    return cases


def pypi_cases(picture: Image.Image) -> tuple[list[Case], list[str]]:
    """Cases for the optional encoders, timed from the PIL image (the array copy included, as `deliver` would pay)."""
    cases: list[Case] = []
    missing: list[str] = []
    simplejpeg = _optional("simplejpeg")
    if simplejpeg is None:
        missing.append("simplejpeg (not installed)")
    else:
        for quality in (90, 95):
            for chroma in ("420", "444"):

                def encode(quality: int = quality, chroma: str = chroma) -> bytes:
                    pixels = np.ascontiguousarray(np.asarray(picture))
                    data: bytes = simplejpeg.encode_jpeg(pixels, quality, "RGB", chroma)
                    return data

                cases.append(Case(f"simplejpeg q{quality} {chroma[0]}:{chroma[1]}:{chroma[2]}", encode))
    turbo = _turbojpeg()
    if turbo is None:
        missing.append("PyTurboJPEG (not installed, or no system libturbojpeg)")
    else:
        for quality in (90, 95):

            def encode_turbo(quality: int = quality) -> bytes:
                pixels = np.ascontiguousarray(np.asarray(picture)[:, :, ::-1])  # Its default pixel format is BGR.
                data: bytes = turbo.encode(pixels, quality=quality)
                return data

            cases.append(Case(f"PyTurboJPEG q{quality} 4:2:0", encode_turbo))
    if _optional("fpnge") is None:
        missing.append("fpnge (not installed)")
    return cases, missing


def deliver_cases(rendered: bytes, size: Size) -> list[Case]:
    """The real `adgen_orchestrator.imaging.deliver` (no overlay), then its Pillow steps one by one."""

    def delivered(image_format: image_pb2.ImageFormat.ValueType) -> Callable[[], bytes]:
        return lambda: deliver(rendered, size, image_format, LABEL).data

    def decode_pillow() -> None:
        with Image.open(io.BytesIO(rendered)) as generated:
            generated.convert("RGB")

    with Image.open(io.BytesIO(rendered)) as generated:
        picture = generated.convert("RGB")

    def resize() -> None:
        picture.resize((size.width, size.height), Image.Resampling.LANCZOS)

    def resize_bicubic() -> None:
        picture.resize((size.width, size.height), Image.Resampling.BICUBIC)

    def crop() -> None:
        left, top = (picture.width - size.width) // 2, (picture.height - size.height) // 2
        picture.crop((left, top, left + size.width, top + size.height))

    cases = [
        Case("deliver → PNG (today's default)", delivered(image_pb2.IMAGE_FORMAT_PNG)),
        Case("deliver → JPEG (q92 4:2:0)", delivered(image_pb2.IMAGE_FORMAT_JPEG)),
        Case("deliver → WebP (q92 method 4)", delivered(image_pb2.IMAGE_FORMAT_WEBP)),
        Case("  step: decode render PNG (Pillow)", decode_pillow),
        Case("  step: resize LANCZOS", resize),
        Case("  alt:  resize BICUBIC", resize_bicubic),
        Case("  alt:  centre crop (no resample)", crop),
    ]
    pyspng = _optional("pyspng")
    if pyspng is not None:

        def decode_pyspng() -> None:
            pyspng.load(rendered)

        cases.append(Case("  alt:  decode render PNG (pyspng)", decode_pyspng))
    return cases


def measure(case: Case, reference: Pixels, repeat: int) -> Row:
    output = case.run()  # Warm-up: first-call allocations and lazy imports stay out of the figures.
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        case.run()
        times.append(time.perf_counter() - started)
    p90 = statistics.quantiles(times, n=10, method="inclusive")[8] if len(times) > 1 else times[0]
    if output is None:
        return Row(case.name, statistics.median(times) * 1e3, p90 * 1e3, None, None)
    return Row(case.name, statistics.median(times) * 1e3, p90 * 1e3, len(output), psnr(reference, output))


def print_table(title: str, rows: list[Row]) -> None:
    base = next(row for row in rows if row.name == BASELINE)
    assert base.size_bytes is not None
    print(f"\n== {title} ==")
    header = f"{'encoder':38} {'median ms':>10} {'p90 ms':>8} {'KB':>8} {'PSNR dB':>8} {'× time':>7} {'× size':>7}"
    print(header)
    print("-" * len(header))
    for row in rows:
        size = f"{row.size_bytes / 1024:8.0f}" if row.size_bytes is not None else f"{'-':>8}"
        quality = f"{row.psnr_db:8.2f}" if row.psnr_db is not None else f"{'-':>8}"
        ratio = f"{row.size_bytes / base.size_bytes:7.3f}" if row.size_bytes is not None else f"{'-':>7}"
        print(
            f"{row.name:38} {row.median_ms:10.1f} {row.p90_ms:8.1f} {size} {quality}"
            f" {row.median_ms / base.median_ms:7.3f} {ratio}"
        )


def bench_size(source: str, size: Size, repeat: int) -> list[str]:
    render_size = generation_size(size, SizeRules())
    rendered_picture = render(source, render_size)
    buffer = io.BytesIO()
    rendered_picture.save(buffer, "PNG")  # As the diffusion service sends it (adgen_diffusion.images).
    rendered = buffer.getvalue()
    # The lossless deliverable: every encoder starts from it, and every PSNR is against it.
    picture = rendered_picture.resize((size.width, size.height), Image.Resampling.LANCZOS)
    reference = np.asarray(picture)
    extra, missing = pypi_cases(picture)
    cases = [*pillow_cases(picture), *extra, *deliver_cases(rendered, size)]
    rows = [measure(case, reference, repeat) for case in cases]
    title = (
        f"{source} {size.width}x{size.height} (rendered {render_size.width}x{render_size.height},"
        f" {len(rendered) / 1024:.0f} KB PNG), {repeat} runs after a warm-up"
    )
    print_table(title, rows)
    return missing


def _size(text: str) -> Size:
    width, height = text.lower().split("x")
    return Size(int(width), int(height))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", type=_size, default=[Size(1080, 1080), Size(1080, 1350)])
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    parser.add_argument("--repeat", type=int, default=20)
    options = parser.parse_args()
    print("$ " + shlex.join([Path(sys.executable).name, "-m", "bench.image_encode", *sys.argv[1:]]))
    missing: set[str] = set()
    for source in options.sources:
        for size in options.sizes:
            missing.update(bench_size(source, size, options.repeat))
    print(
        "\nms: wall time of one encode from the PIL image at the delivered size (one thread); p90 over the runs."
        "\n× time, × size: against Pillow PNG level 6, the encoder deliver uses today. PSNR: the decoded file against"
        " the lossless deliverable (inf: lossless).\ndeliver rows: the real function from the render-size PNG"
        " (decode, LANCZOS resize, labelled encode; no overlay); step rows time its parts."
    )
    if missing:
        print("skipped: " + "; ".join(sorted(missing)))


if __name__ == "__main__":
    main()
