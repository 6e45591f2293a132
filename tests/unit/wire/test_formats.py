"""The one image-format table covers the wire enum and agrees with Pillow and mimetypes."""

from __future__ import annotations

import mimetypes

from PIL import Image

from adgen.type.v1 import image_pb2
from adgen_wire.formats import FILE_SUFFIXES, IMAGE_FORMATS, MIME_TYPES, PILLOW_FORMATS, RAW_FORMATS


def test_every_format_is_a_file_row_or_a_raw_pixel_format_and_never_both() -> None:
    expected = {value for value in image_pb2.ImageFormat.values() if value != image_pb2.IMAGE_FORMAT_UNSPECIFIED}
    rows = [row.value for row in IMAGE_FORMATS]
    assert len(rows) == len(set(rows))
    assert set(rows).isdisjoint(RAW_FORMATS)
    assert set(rows) | RAW_FORMATS == expected
    assert set(FILE_SUFFIXES) == set(MIME_TYPES) == set(PILLOW_FORMATS) == set(rows)


def test_pillow_names_are_formats_pillow_writes() -> None:
    Image.init()
    for row in IMAGE_FORMATS:
        assert row.pillow_name in Image.SAVE


def test_mime_types_match_the_suffixes() -> None:
    for row in IMAGE_FORMATS:
        guessed, _ = mimetypes.guess_type(f"ad.{row.suffix}", strict=False)
        assert guessed == row.mime_type
