"""The predicted response size is an upper bound, and a response over the message limit is refused with figures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from adgen.type.v1 import error_reason_pb2, image_pb2
from adgen_orchestrator.imaging import deliver
from adgen_orchestrator.message_size import check_response_size, image_bound_bytes, predicted_response_bytes
from adgen_orchestrator.provenance import ContentLabel, SourceType
from adgen_orchestrator.sizing import Size
from adgen_runtime.errors import ResourceExhausted

# A long prompt: the labels carry it, in XMP and in PNG text.
LABEL = ContentLabel(SourceType.GENERATED, "flux2-klein-4b", 1, "strawberry juice on a cafe table, " * 60)
FORMATS = [image_pb2.IMAGE_FORMAT_PNG, image_pb2.IMAGE_FORMAT_JPEG, image_pb2.IMAGE_FORMAT_WEBP]


@pytest.mark.parametrize("image_format", FORMATS)
def test_the_bound_holds_for_uniform_noise_the_worst_case_of_every_codec(
    image_format: image_pb2.ImageFormat.ValueType,
) -> None:
    size = Size(540, 675)  # A quarter of the feed portrait: the bytes a pixel are what matter.
    noise = np.random.default_rng(3).integers(0, 256, (size.height, size.width, 3), dtype=np.uint8)
    encoded = deliver(Image.fromarray(noise), size, image_format, LABEL).image.data
    bound = image_bound_bytes(size, image_format)
    assert len(encoded) <= bound
    # And it is a bound, not a multiple of one: within 20 % of the worst case.
    assert bound < len(encoded) * 1.2 + 32 * 1024


def test_the_prediction_grows_with_every_image_and_png_is_the_largest() -> None:
    story = Size(1080, 1920)
    one, four = (predicted_response_bytes([story] * n, image_pb2.IMAGE_FORMAT_JPEG) for n in (1, 4))
    assert four > 3.9 * one
    png = predicted_response_bytes([story] * 4, image_pb2.IMAGE_FORMAT_PNG)
    assert png > 4 * 1080 * 1920 * 3 > four


def test_a_response_over_the_limit_is_resource_exhausted_with_both_figures() -> None:
    check_response_size(4 * 1024 * 1024, 4 * 1024 * 1024)  # At the limit: fits.
    with pytest.raises(ResourceExhausted) as raised:
        check_response_size(4 * 1024 * 1024 + 1, 4 * 1024 * 1024)
    assert raised.value.reason == error_reason_pb2.ERROR_REASON_RESPONSE_TOO_LARGE
    assert raised.value.metadata == {"predicted_bytes": str(4 * 1024 * 1024 + 1), "max_bytes": str(4 * 1024 * 1024)}
