"""DiffusionCore's own duties, without a server: readiness follows the engine, encoding runs off the GPU thread."""

from __future__ import annotations

import asyncio
import io
import threading

import pytest
from PIL import Image

from adgen.diffusion.v1 import diffusion_service_pb2 as pb
from adgen.type.v1 import image_pb2
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.diffusion_core import DiffusionCore, JobResult
from adgen_diffusion.engine import DiffusionEngine, ImageJob, Progress, ProgressSink, Stage
from adgen_diffusion.errors import JobCancelledError
from adgen_diffusion.images import EncodedImage, encode_image
from adgen_diffusion.job_requests import PreparedJob
from adgen_diffusion.registry import Task
from adgen_diffusion.worker import GpuWorker
from adgen_runtime.errors import Cancelled


async def test_a_failed_job_that_left_the_engine_unclean_still_turns_readiness_off(engine: DiffusionEngine) -> None:
    worker = GpuWorker(engine, queue_max=4, max_overtakes=4)
    readiness: list[bool] = []

    async def on_clean_changed(clean: bool) -> None:
        readiness.append(clean)

    core = DiffusionCore(worker, DiffusionSettings(tiny=True, device="cpu"), on_clean_changed)

    # Like a load whose unload of the previous model failed verification, then whose own load failed.
    def unclean_then_fail(_progress: ProgressSink, _cancel: threading.Event) -> None:
        engine.clean = False
        raise JobCancelledError()

    try:
        with pytest.raises(Cancelled):
            await core.submit(None, unclean_then_fail)
        assert readiness == [False]
    finally:
        engine.clean = True
        worker.close()


async def test_the_next_job_denoises_while_the_last_one_is_still_encoding(engine: DiffusionEngine) -> None:
    worker = GpuWorker(engine, queue_max=4, max_overtakes=4)
    core = DiffusionCore(worker, DiffusionSettings(tiny=True, device="cpu"), encoder=_held_png_encoder)
    _HELD.clear()
    try:
        first = _prepared(ImageJob("flux2-klein-4b", Task.TEXT_TO_IMAGE, "a latte", 64, 64, 2, 1.0, 1), "png")
        # Another step count: not coalesced with the first job, so it runs after it on the GPU thread.
        second = _prepared(ImageJob("flux2-klein-4b", Task.TEXT_TO_IMAGE, "a bagel", 64, 64, 3, 1.0, 2), "jpeg")

        def on_second_progress(event: Progress) -> None:
            if event.stage is Stage.DENOISING:
                _HELD.second_denoising.set()

        results = await asyncio.gather(
            core.execute(first, threading.Event(), None),
            core.execute(second, threading.Event(), on_second_progress),
        )
        # The first job's encode was still running (held until the second job denoised) when the second began.
        assert _HELD.overlapped == [True]
        assert [len(result.encoded) for result in results] == [1, 1]
        first_timings = results[0].info.timings
        assert first_timings.encode.ToNanoseconds() > 0 and first_timings.decode.ToNanoseconds() > 0
    finally:
        worker.close()
        core.close()


async def test_raw_rgb_output_is_the_decoded_pixels_with_no_encode_time(engine: DiffusionEngine) -> None:
    worker = GpuWorker(engine, queue_max=4, max_overtakes=4)
    core = DiffusionCore(worker, DiffusionSettings(tiny=True, device="cpu"))
    try:
        job = ImageJob("z-image-turbo", Task.TEXT_TO_IMAGE, "a latte", 96, 64, 2, 1.0, 4)
        (raw,), raw_info = _response(await core.execute(_prepared(job, "raw_rgb"), threading.Event(), None))
        (png,), png_info = _response(await core.execute(_prepared(job, "png"), threading.Event(), None))
        assert (raw.image.format, raw.image.width, raw.image.height) == (image_pb2.IMAGE_FORMAT_RAW_RGB, 96, 64)
        assert raw.image.stride == 96 * 3 and len(raw.image.data) == 96 * 64 * 3
        assert raw.image.data == Image.open(io.BytesIO(png.image.data)).convert("RGB").tobytes()
        assert png.image.stride == 0
        assert raw_info.timings.encode.ToNanoseconds() == 0 < png_info.timings.encode.ToNanoseconds()
    finally:
        worker.close()
        core.close()


def _response(result: JobResult) -> tuple[list[pb.GeneratedImage], pb.GenerationInfo]:
    """The result as the servicer sends it."""
    response = pb.GenerateResponse()
    result.write_to(response)
    return list(response.images), response.info


def _prepared(job: ImageJob, output_format: str) -> PreparedJob:
    return PreparedJob(job, output_format, priority=0)


class _Held:
    """Holds the first PNG encode until the next job reports a denoising step (or 30 s pass)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.second_denoising = threading.Event()
        self.overlapped: list[bool] = []


_HELD = _Held()


def _held_png_encoder(image: Image.Image, output_format: str) -> EncodedImage:
    if output_format == "png" and not _HELD.overlapped:
        _HELD.overlapped.append(_HELD.second_denoising.wait(30))
    return encode_image(image, output_format)
