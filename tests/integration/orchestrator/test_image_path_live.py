"""The image path through the three real services (diffusion on the tiny twins): the raw hop carries the exact
pixels the model made, the timings name real denoise and decode times and add up, and the SDK rebuilds from a
stream the same ad the one-call path returns for the same seed."""

from __future__ import annotations

import io

import numpy as np
import pytest
from google.protobuf import duration_pb2
from PIL import Image

from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as df_grpc
from adgen.type.v1 import image_pb2
from adgen_client import AsyncAdGenClient
from adgen_wire.channel import create_aio_channel
from tests.live_services import Services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYWORD = "여름 느낌 딸기 생과일 주스"
# A legal render size: delivered as rendered, so no crop or resize stands between the two files compared.
SIDE = 128
# See test_image_path.py: the model lookup and the thread hand-offs are all the timings leave out.
TIMINGS_TOLERANCE_S = 0.1


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.ToNanoseconds() / 1e9


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


async def test_the_delivered_png_holds_exactly_the_pixels_the_model_made(services: Services) -> None:
    async with AsyncAdGenClient(services.orchestrator, timeout=120) as client:
        ad = await client.create_ad(
            KEYWORD, width=SIDE, height=SIDE, num_inference_steps=2, seed=5, output_format="png"
        )
    (image,) = ad.images
    # The same job asked of the diffusion service directly, as a PNG: its own lossless file of the same pixels.
    request = df_pb.GenerateRequest(
        model_id=ad.model_id,
        prompt=image.image_prompt,
        width=SIDE,
        height=SIDE,
        num_inference_steps=2,
        seed=image.seed,
        output_format=image_pb2.IMAGE_FORMAT_PNG,
    )
    async with create_aio_channel(services.diffusion) as channel:
        direct = await df_grpc.DiffusionServiceStub(channel).Generate(request, timeout=120)
    assert np.array_equal(_pixels(image.image.data), _pixels(direct.images[0].image.data))


async def test_the_timings_name_the_models_work_and_add_up_to_the_call(services: Services) -> None:
    async with AsyncAdGenClient(services.orchestrator, timeout=120) as client:
        ad = await client.create_ad(KEYWORD, width=SIDE, height=SIDE, num_inference_steps=2, variant_count=2, seed=9)
    total, copy = _seconds(ad.total_duration), _seconds(ad.copy_duration)
    sums = []
    for image in ad.images:
        t = image.timings
        assert _seconds(t.denoise) > 0 and _seconds(t.decode) > 0 and _seconds(t.encode) > 0
        parts = (t.queue, t.load, t.denoise, t.decode, t.encode, t.deliver)
        sums.append(sum(_seconds(part) for part in parts))
    assert 0 <= total - (copy + max(sums)) < TIMINGS_TOLERANCE_S


async def test_an_ad_rebuilt_from_the_stream_equals_the_one_call_ad_for_the_same_seed(services: Services) -> None:
    options = {"width": SIDE, "height": SIDE, "num_inference_steps": 2, "variant_count": 2, "seed": 13}
    async with AsyncAdGenClient(services.orchestrator, timeout=120) as client:
        streamed = await client.create_ad_and_wait(KEYWORD, **options, output_format="png")  # type: ignore[arg-type]
        unary = await client.create_ad(KEYWORD, **options, output_format="png")  # type: ignore[arg-type]
    assert all(image.image.data and not image.data_in_stream for image in streamed.images)
    assert streamed.copy == unary.copy and streamed.model_id == unary.model_id
    for rebuilt, whole in zip(streamed.images, unary.images, strict=True):
        assert (rebuilt.variant_index, rebuilt.seed, rebuilt.image_prompt) == (
            whole.variant_index,
            whole.seed,
            whole.image_prompt,
        )
        # The diffusion service may batch the two variants in one run and not in the other: a batched image equals
        # the lone one within float32 rounding (at most 2 of 255 a channel, see README "Batching").
        difference = np.abs(_pixels(rebuilt.image.data).astype(np.int16) - _pixels(whole.image.data))
        assert difference.max() <= 2
