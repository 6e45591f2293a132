"""The one table of image formats: each adgen.type.v1.ImageFormat with its MIME type, file suffix and Pillow name.

Pillow names are plain strings so this package stays free of server libraries.
"""

from __future__ import annotations

from dataclasses import dataclass

from adgen.type.v1 import image_pb2


@dataclass(frozen=True)
class ImageFormatRow:
    """How one wire image format is written to files, HTTP and Pillow."""

    value: image_pb2.ImageFormat.ValueType
    mime_type: str
    suffix: str  # without the dot
    pillow_name: str


IMAGE_FORMATS: tuple[ImageFormatRow, ...] = (
    ImageFormatRow(image_pb2.IMAGE_FORMAT_PNG, "image/png", "png", "PNG"),
    ImageFormatRow(image_pb2.IMAGE_FORMAT_JPEG, "image/jpeg", "jpg", "JPEG"),
    ImageFormatRow(image_pb2.IMAGE_FORMAT_WEBP, "image/webp", "webp", "WEBP"),
)

FILE_SUFFIXES: dict[image_pb2.ImageFormat.ValueType, str] = {row.value: row.suffix for row in IMAGE_FORMATS}
MIME_TYPES: dict[image_pb2.ImageFormat.ValueType, str] = {row.value: row.mime_type for row in IMAGE_FORMATS}
PILLOW_FORMATS: dict[image_pb2.ImageFormat.ValueType, str] = {row.value: row.pillow_name for row in IMAGE_FORMATS}

# Pixel formats that are not files (no MIME type, no suffix): a hop between services, never a download.
# IMAGE_FORMAT_RAW_RGB is row-major 8-bit RGB with Image.stride bytes a row.
RAW_FORMATS: frozenset[image_pb2.ImageFormat.ValueType] = frozenset({image_pb2.IMAGE_FORMAT_RAW_RGB})
RAW_RGB_BYTES_PER_PIXEL = 3
