"""AI-content labels survive encoding in every output format and can be read back with Pillow."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from adgen_orchestrator.provenance import ContentLabel, SourceType, encode_labelled

LABEL = ContentLabel(
    source_type=SourceType.GENERATED, model_id="flux2-klein-4b", seed=1234, prompt='A "summer" strawberry juice & ice'
)


def _xmp_of(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    assert xmp, "no XMP packet in the file"
    return xmp.decode() if isinstance(xmp, bytes) else str(xmp)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
def test_generated_images_carry_the_trained_algorithmic_media_source_type(image_format: str) -> None:
    data = encode_labelled(Image.new("RGB", (32, 24), "pink"), image_format, LABEL)
    xmp = _xmp_of(data)
    assert 'DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"' in xmp
    assert "&quot;summer&quot; strawberry juice &amp; ice" in xmp or '"summer" strawberry juice &amp; ice' in xmp
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == image_format and image.size == (32, 24)


def test_edited_images_carry_the_composite_source_type() -> None:
    label = ContentLabel(SourceType.EDITED, "qwen-image-edit-2511", 7, "Replace the coffee with a latte")
    xmp = _xmp_of(encode_labelled(Image.new("RGB", (16, 16)), "PNG", label))
    assert "digitalsourcetype/compositeWithTrainedAlgorithmicMedia" in xmp


def test_png_text_chunks_name_the_model_seed_and_prompt() -> None:
    data = encode_labelled(Image.new("RGB", (16, 16)), "PNG", LABEL)
    with Image.open(io.BytesIO(data)) as image:
        assert image.info["Source"] == "flux2-klein-4b"
        assert image.info["adgen:seed"] == "1234"
        assert image.info["Description"] == LABEL.prompt
        assert image.info["Software"] == "AdGen"


# The signer runs last, on the finished file's bytes: C2paSigner (test_c2pa.py) hashes exactly these.
def test_signer_seam_receives_the_encoded_bytes() -> None:
    received: list[tuple[bytes, str, ContentLabel]] = []

    class Appender:
        def sign(self, data: bytes, image_format: str, label: ContentLabel) -> bytes:
            received.append((data, image_format, label))
            return data + b"signed"

    data = encode_labelled(Image.new("RGB", (8, 8)), "PNG", LABEL, signer=Appender())
    assert [(fmt, label) for _, fmt, label in received] == [("PNG", LABEL)]
    assert data == received[0][0] + b"signed"
    assert "trainedAlgorithmicMedia" in _xmp_of(received[0][0])  # the signer sees the labelled file
