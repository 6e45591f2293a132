"""The diffusion image path over real gRPC on the tiny twins: raw pixels out, timings that add up, batched calls."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from adgen.diffusion.v1 import diffusion_service_pb2 as pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as pb_grpc
from adgen.type.v1 import image_pb2
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.engine import DiffusionEngine
from adgen_diffusion.server import build_engine, create_server
from adgen_runtime.server import RunningServer
from adgen_wire.channel import create_aio_channel

pytestmark = pytest.mark.integration

# Time inside a call that no timing covers (hand-offs between the event loop, the GPU thread and the encode
# threads, proto mapping), allowed on a busy shared CPU.
UNTIMED_TOLERANCE_S = 0.25


@pytest.fixture(scope="module")
def engine(tiny_models_dir: Path) -> DiffusionEngine:
    return build_engine(_settings(tiny_models_dir))


def _settings(models_dir: Path) -> DiffusionSettings:
    return DiffusionSettings(host="127.0.0.1", port=0, tiny=True, models_dir=models_dir, device="cpu")


@pytest.fixture(scope="module")
async def server(tiny_models_dir: Path, engine: DiffusionEngine) -> AsyncIterator[RunningServer]:
    running = await create_server(_settings(tiny_models_dir), engine=engine)
    yield running
    await running.stop(None)


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[pb_grpc.DiffusionServiceAsyncStub]:
    async with create_aio_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.DiffusionServiceStub(channel)


def _generate(**fields: object) -> pb.GenerateRequest:
    defaults: dict[str, object] = {"prompt": "a strawberry smoothie", "width": 96, "height": 64, "seed": 5}
    defaults.update(fields)
    request = pb.GenerateRequest(**defaults)  # type: ignore[arg-type]
    request.num_inference_steps = 2
    return request


def _pipeline_calls(engine: DiffusionEngine, model_id: str) -> tuple[float, float]:
    labels = {"model": model_id}
    registry = engine.metrics.registry
    return (
        registry.get_sample_value("adgen_batch_images_count", labels) or 0.0,
        registry.get_sample_value("adgen_batch_images_sum", labels) or 0.0,
    )


async def test_the_raw_hop_carries_the_exact_pixels_the_png_holds(stub: pb_grpc.DiffusionServiceAsyncStub) -> None:
    raw = (await stub.Generate(_generate(output_format=image_pb2.IMAGE_FORMAT_RAW_RGB))).images[0].image
    png = (await stub.Generate(_generate(output_format=image_pb2.IMAGE_FORMAT_PNG))).images[0].image
    assert (raw.format, raw.width, raw.height, raw.stride) == (image_pb2.IMAGE_FORMAT_RAW_RGB, 96, 64, 96 * 3)
    assert len(raw.data) == raw.stride * raw.height
    pixels = Image.frombuffer("RGB", (raw.width, raw.height), raw.data, "raw", "RGB", raw.stride, 1)
    assert pixels.tobytes() == Image.open(io.BytesIO(png.data)).convert("RGB").tobytes()
    assert png.stride == 0


@pytest.mark.parametrize("output_format", [image_pb2.IMAGE_FORMAT_PNG, image_pb2.IMAGE_FORMAT_RAW_RGB])
async def test_the_timings_add_up_to_the_total_and_encode_is_zero_only_for_raw(
    stub: pb_grpc.DiffusionServiceAsyncStub, output_format: image_pb2.ImageFormat.ValueType
) -> None:
    timings = (await stub.Generate(_generate(output_format=output_format, image_count=2))).info.timings
    parts = [timings.queue, timings.load, timings.denoise, timings.decode, timings.encode]
    seconds = [part.ToNanoseconds() / 1e9 for part in parts]
    total = timings.total.ToNanoseconds() / 1e9
    assert sum(seconds) <= total < sum(seconds) + UNTIMED_TOLERANCE_S
    assert timings.denoise.ToNanoseconds() > 0 and timings.decode.ToNanoseconds() > 0
    assert (timings.encode.ToNanoseconds() == 0) == (output_format == image_pb2.IMAGE_FORMAT_RAW_RGB)


async def test_image_count_three_is_one_batched_pipeline_call(
    stub: pb_grpc.DiffusionServiceAsyncStub, engine: DiffusionEngine
) -> None:
    before = _pipeline_calls(engine, "z-image-turbo")
    reply = await stub.Generate(_generate(model_id="z-image-turbo", image_count=3))
    after = _pipeline_calls(engine, "z-image-turbo")
    assert [image.seed for image in reply.images] == [5, 6, 7]
    assert (after[0] - before[0], after[1] - before[1]) == (1, 3)


async def test_concurrent_variant_calls_all_get_their_own_images(stub: pb_grpc.DiffusionServiceAsyncStub) -> None:
    # As the orchestrator sends them: one Generate per variant, different prompts, the same model and size.
    prompts = ["a strawberry smoothie", "a mango lassi", "an iced matcha"]
    replies = await asyncio.gather(*(stub.Generate(_generate(prompt=p, seed=i)) for i, p in enumerate(prompts)))
    alone = await stub.Generate(_generate(prompt=prompts[2], seed=2, output_format=image_pb2.IMAGE_FORMAT_RAW_RGB))
    assert [reply.images[0].seed for reply in replies] == [0, 1, 2]
    together = Image.open(io.BytesIO(replies[2].images[0].image.data)).convert("RGB")
    lone = Image.frombuffer("RGB", (96, 64), alone.images[0].image.data, "raw", "RGB", 96 * 3, 1)
    # Batched or not (it depends on how the calls met in the queue), the image is the seed's within rounding.
    difference = max(abs(a - b) for a, b in zip(together.tobytes(), lone.tobytes(), strict=True))
    assert difference <= 2
