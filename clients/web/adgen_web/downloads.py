"""File names, MIME types and text/JSON exports for the download buttons."""

from __future__ import annotations

import json

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import image_pb2
from adgen_wire.formats import FILE_SUFFIXES, MIME_TYPES


def image_suffix(image: image_pb2.Image) -> str:
    """The file suffix of an encoded image; the server's default format is PNG."""
    return FILE_SUFFIXES.get(image.format, "png")


def image_mime(image: image_pb2.Image) -> str:
    """The MIME type of an encoded image."""
    # Unset or unknown means the server's default, PNG, as in image_suffix.
    return MIME_TYPES.get(image.format, MIME_TYPES[image_pb2.IMAGE_FORMAT_PNG])


def hashtags_for_display(copy: ad_pb.AdCopy) -> list[str]:
    """The hashtags with their leading '#', as people paste them into Instagram."""
    return [f"#{tag.lstrip('#')}" for tag in copy.hashtags]


def copy_as_text(copy: ad_pb.AdCopy) -> str:
    """The copy as a text file: headline, caption, then the hashtags on one line."""
    parts = [copy.headline, copy.caption, " ".join(hashtags_for_display(copy))]
    return "\n\n".join(part for part in parts if part) + "\n"


def copy_as_json(copy: ad_pb.AdCopy) -> str:
    """The copy as pretty JSON with Korean kept readable."""
    document = {
        "headline": copy.headline,
        "hook": copy.hook,
        "caption": copy.caption,
        "hashtags": hashtags_for_display(copy),
        "alt_text": copy.alt_text,
        "facts_used": list(copy.facts_used),
        "written_by": copy.written_by,
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
