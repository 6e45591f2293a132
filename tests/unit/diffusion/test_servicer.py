"""DiffusionCore's own duties, without a server: readiness follows the engine even when a job fails."""

from __future__ import annotations

import threading

import pytest

from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.diffusion_core import DiffusionCore
from adgen_diffusion.engine import DiffusionEngine, ProgressSink
from adgen_diffusion.errors import JobCancelledError
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
