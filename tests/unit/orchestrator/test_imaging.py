"""The raw hop, the centre crop and the one final encode: exact pixels in, labelled files out."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from adgen.type.v1 import image_pb2
from adgen_orchestrator.imaging import DownstreamImageError, deliver, rendered_picture
from adgen_orchestrator.provenance import ContentLabel, SourceType
from adgen_orchestrator.sizing import Size, SizeRules, generation_size

LABEL = ContentLabel(SourceType.GENERATED, "flux2-klein-4b", 11, "strawberry juice, summer light")
RAW = image_pb2.IMAGE_FORMAT_RAW_RGB


def _noise(width: int, height: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _raw(pixels: np.ndarray, padding: int = 0) -> image_pb2.Image:
    height, width, _ = pixels.shape
    rows = np.zeros((height, 3 * width + padding), dtype=np.uint8)
    rows[:, : 3 * width] = pixels.reshape(height, 3 * width)
    return image_pb2.Image(data=rows.tobytes(), format=RAW, width=width, height=height, stride=3 * width + padding)


def _decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("padding", [0, 5])
def test_the_raw_hop_carries_exact_pixels_whatever_the_stride(padding: int) -> None:
    pixels = _noise(33, 17)
    picture = rendered_picture(_raw(pixels, padding))
    assert picture.size == (33, 17) and picture.mode == "RGB"
    assert np.array_equal(np.asarray(picture), pixels)


def test_a_raw_image_whose_last_row_stops_at_its_pixels_is_read() -> None:
    pixels = _noise(8, 4)
    image = _raw(pixels, padding=2)
    image.data = image.data[:-2]
    assert np.array_equal(np.asarray(rendered_picture(image)), pixels)


@pytest.mark.parametrize(("padding", "last_row_cut"), [(0, False), (5, False), (5, True)])
def test_a_raw_render_read_at_its_delivered_size_is_exactly_its_centre(padding: int, last_row_cut: bool) -> None:
    pixels = _noise(105, 83)  # Within MAX_CROP of 100x80: deliver would centre-crop it.
    image = _raw(pixels, padding)
    if last_row_cut:
        image.data = image.data[:-padding]
    picture = rendered_picture(image, fit_to=Size(100, 80))
    assert picture.size == (100, 80) and picture.mode == "RGB"
    assert np.array_equal(np.asarray(picture), pixels[1:81, 2:102])  # (83 - 80) // 2 = 1 row, (105 - 100) // 2 = 2


def test_a_raw_render_far_from_the_delivered_shape_is_read_whole_for_deliver_to_fit() -> None:
    pixels = _noise(64, 16)
    picture = rendered_picture(_raw(pixels), fit_to=Size(32, 32))
    assert np.array_equal(np.asarray(picture), pixels)


@pytest.mark.parametrize(
    ("width", "height", "stride", "size"),
    [
        (8, 4, 23, 96),  # stride shorter than a row of pixels
        (8, 4, 24, 95),  # a byte short
        (8, 4, 24, 97),  # a byte too many
        (0, 4, 24, 96),  # no width
        (8, -1, 24, 96),
        (8, 4, 0, 96),  # stride left unset
    ],
)
def test_raw_pixels_that_disagree_with_their_declared_shape_are_refused(
    width: int, height: int, stride: int, size: int
) -> None:
    image = image_pb2.Image(data=bytes(size), format=RAW, width=width, height=height, stride=stride)
    with pytest.raises(DownstreamImageError):
        rendered_picture(image)


def test_an_encoded_render_is_decoded_and_a_broken_one_refused() -> None:
    buffer = io.BytesIO()
    Image.fromarray(_noise(20, 10)).save(buffer, "PNG")
    assert rendered_picture(image_pb2.Image(data=buffer.getvalue(), format=image_pb2.IMAGE_FORMAT_PNG)).size == (20, 10)
    with pytest.raises(DownstreamImageError):
        rendered_picture(image_pb2.Image(data=buffer.getvalue()[:60], format=image_pb2.IMAGE_FORMAT_PNG))


@pytest.mark.parametrize("delivered", [Size(1080, 1080), Size(1080, 1350), Size(1080, 1920)])
def test_a_placement_is_centre_cropped_from_its_render_with_no_resample(delivered: Size) -> None:
    render_size = generation_size(delivered, SizeRules())
    pixels = _noise(render_size.width, render_size.height)
    image = deliver(rendered_picture(_raw(pixels)), delivered, image_pb2.IMAGE_FORMAT_PNG, LABEL).image
    left, top = (render_size.width - delivered.width) // 2, (render_size.height - delivered.height) // 2
    expected = pixels[top : top + delivered.height, left : left + delivered.width]
    assert (image.width, image.height) == (delivered.width, delivered.height)
    assert np.array_equal(_decoded(image.data), expected)


@pytest.mark.parametrize(
    ("image_format", "pillow_name"),
    [(image_pb2.IMAGE_FORMAT_PNG, "PNG"), (image_pb2.IMAGE_FORMAT_JPEG, "JPEG"), (image_pb2.IMAGE_FORMAT_WEBP, "WEBP")],
)
def test_every_format_round_trips_with_its_label(
    image_format: image_pb2.ImageFormat.ValueType, pillow_name: str
) -> None:
    # A smooth picture, so the lossy formats' error is small enough to bound.
    y, x = np.mgrid[0:96, 0:128]
    pixels = np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.uint8)
    delivered = deliver(Image.fromarray(pixels), Size(128, 96), image_format, LABEL)
    assert delivered.image.format == image_format and delivered.encode_s > 0
    with Image.open(io.BytesIO(delivered.image.data)) as decoded:
        decoded.load()
        assert decoded.format == pillow_name and decoded.size == (128, 96)
        xmp = decoded.info.get("xmp") or decoded.info.get("XML:com.adobe.xmp")
        assert "trainedAlgorithmicMedia" in (xmp.decode() if isinstance(xmp, bytes) else str(xmp))
        error = np.abs(np.asarray(decoded.convert("RGB"), dtype=np.int16) - pixels).mean()
    assert error == 0 if pillow_name == "PNG" else error < 3


def test_the_default_jpeg_is_quality_95_with_4_2_0_chroma() -> None:
    data = deliver(Image.fromarray(_noise(64, 64)), Size(64, 64), image_pb2.IMAGE_FORMAT_JPEG, LABEL).image.data
    with Image.open(io.BytesIO(data)) as decoded:
        assert isinstance(decoded, JpegImagePlugin.JpegImageFile)
        assert decoded.layer[0][1:3] == (2, 2) and decoded.layer[1][1:3] == (1, 1)  # luma 2x2, chroma 1x1: 4:2:0
        # libjpeg scales its base luma table's first entry, 16, to 2 at quality 95 (50 -> 16, 95 -> 16 * 10 / 100).
        assert decoded.quantization[0][0] == 2
