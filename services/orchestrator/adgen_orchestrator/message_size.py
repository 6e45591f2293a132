"""How large a response can be, predicted from the request before any GPU work, and the refusal of one too large.

The bounds per image are upper bounds, not estimates: PNG's is the raw pixels (fpng never writes more on
incompressible data); JPEG's and WebP's were measured on uniform noise, the content those codecs compress worst
(bench/wire_size.py prints them beside real sizes, which are 3-25 times smaller).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from adgen.type.v1 import error_reason_pb2, image_pb2
from adgen_orchestrator.sizing import Size
from adgen_runtime.errors import ResourceExhausted

# Bytes a pixel at most, for the lossy formats at the settings provenance.py encodes with: uniform noise
# measured 1.175 (JPEG q95 4:2:0) and 0.89 (WebP q92) at 1080x1920.
LOSSY_BYTES_PER_PIXEL: dict[image_pb2.ImageFormat.ValueType, float] = {
    image_pb2.IMAGE_FORMAT_JPEG: 1.2,
    image_pb2.IMAGE_FORMAT_WEBP: 1.0,
}
# The XMP packet and PNG text chunks carry the prompt, which the copywriter writes after this check.
LABEL_ALLOWANCE_BYTES = 16 * 1024
# The largest raw render the diffusion service sends back: 3 bytes a pixel of a 2048x2048 render (12 MiB), with
# room for renders a grid step over the largest delivered side and for the message around them.
RAW_HOP_MAX_BYTES = 3 * 2176 * 2176 + 1024 * 1024
# Per image: the AdImage around the file (prompt, seed, timings); per response: the copy, ids and durations.
IMAGE_ENVELOPE_BYTES = 8 * 1024
RESPONSE_ENVELOPE_BYTES = 64 * 1024


def image_bound_bytes(size: Size, image_format: image_pb2.ImageFormat.ValueType) -> int:
    """The most bytes one delivered file of `size` in `image_format` can take, labels included."""
    if image_format == image_pb2.IMAGE_FORMAT_PNG:
        # A filter byte a row, then stored deflate blocks and chunk headers (under 0.1 %) at worst.
        pixels_bytes = math.ceil(size.height * (3 * size.width + 1) * 1.001) + 1024
    else:
        pixels_bytes = math.ceil(size.area * LOSSY_BYTES_PER_PIXEL[image_format])
    return pixels_bytes + LABEL_ALLOWANCE_BYTES


def predicted_response_bytes(sizes: Sequence[Size], image_format: image_pb2.ImageFormat.ValueType) -> int:
    """An upper bound of a unary response carrying one delivered file per entry of `sizes`."""
    images = sum(image_bound_bytes(size, image_format) + IMAGE_ENVELOPE_BYTES for size in sizes)
    return images + RESPONSE_ENVELOPE_BYTES


def check_response_size(predicted_bytes: int, max_bytes: int, *, predicted: bool = True) -> None:
    """RESOURCE_EXHAUSTED RESPONSE_TOO_LARGE when a response of `predicted_bytes` would not fit in `max_bytes`."""
    if predicted_bytes <= max_bytes:
        return
    what = "could take up to" if predicted else "takes"
    raise ResourceExhausted(
        error_reason_pb2.ERROR_REASON_RESPONSE_TOO_LARGE,
        f"The response {what} {predicted_bytes} bytes, over this server's {max_bytes}-byte message limit. "
        "Ask for fewer variants, JPEG instead of PNG, or use the streaming call, which sends each image in a "
        "message of its own.",
        metadata={"predicted_bytes": str(predicted_bytes), "max_bytes": str(max_bytes)},
    )
