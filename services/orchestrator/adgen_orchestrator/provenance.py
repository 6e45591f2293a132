"""AI-content labels on every image we deliver: IPTC digital source type in XMP, plus PNG text.

Korea's AI Basic Act (in force since 2026-01-22) asks that generated outputs be marked as
such; IPTC `DigitalSourceType` in XMP is what platforms such as Meta read. A `ContentSigner`
is the seam for C2PA manifests: the default signs nothing. It has no production signer yet and is
kept on purpose: issue #16 signs every delivered image with c2pa-python when a certificate is configured,
and that signer plugs in here, last, because the manifest hashes the encoded bytes.
"""

from __future__ import annotations

import enum
import io
import unicodedata
from dataclasses import dataclass
from typing import Protocol
from xml.sax.saxutils import escape

from PIL import Image, PngImagePlugin

IPTC_DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/"
SOFTWARE = "AdGen"
# In attributes parsers fold these into spaces; character references keep them.
_ATTRIBUTE_ENTITIES = {'"': "&quot;", "\t": "&#9;", "\n": "&#10;"}


class SourceType(enum.Enum):
    """IPTC digital source types for what we deliver."""

    GENERATED = "trainedAlgorithmicMedia"
    EDITED = "compositeWithTrainedAlgorithmicMedia"

    @property
    def uri(self) -> str:
        return IPTC_DIGITAL_SOURCE_TYPE + self.value


@dataclass(frozen=True)
class ContentLabel:
    """What an image is and what made it, written into the file's metadata."""

    source_type: SourceType
    model_id: str
    seed: int
    prompt: str


class ContentSigner(Protocol):
    """Signs encoded image bytes (e.g. with a C2PA manifest) and returns the signed bytes."""

    def sign(self, data: bytes, image_format: str, label: ContentLabel) -> bytes: ...


class UnsignedContent:
    """The default signer: no C2PA manifest (needs an X.509 signing certificate to do for real)."""

    def sign(self, data: bytes, image_format: str, label: ContentLabel) -> bytes:
        return data


def xmp_packet(label: ContentLabel) -> str:
    """An XMP packet carrying the IPTC digital source type and the generation parameters."""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about=""'
        ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/"'
        f' Iptc4xmpExt:DigitalSourceType="{label.source_type.uri}"'
        f' xmp:CreatorTool="{_xml_attribute(f"{SOFTWARE} ({label.model_id})")}">'
        f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{_xml_text(label.prompt)}</rdf:li></rdf:Alt>'
        "</dc:description>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="r"?>'
    )


def label_text(text: str) -> str:
    """`text` without what a label cannot carry: control characters but tab and line feed (most are not
    XML at all), lone surrogates and U+FFFE/U+FFFF. Requests refuse these; a model's own text may hold them."""
    return "".join(char for char in text if char in "\t\n" or not _unlabelable(char))


def _unlabelable(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs") or char in "\ufffe\uffff"


def _xml_text(text: str) -> str:
    return escape(label_text(text))


def _xml_attribute(text: str) -> str:
    return escape(label_text(text), _ATTRIBUTE_ENTITIES)


def encode_labelled(
    image: Image.Image,
    image_format: str,
    label: ContentLabel,
    signer: ContentSigner | None = None,
) -> bytes:
    """Encodes `image` as PNG, JPEG or WebP with the label in its metadata, then signs it."""
    xmp = xmp_packet(label)
    buffer = io.BytesIO()
    if image_format == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp)
        for key, value in png_text(label).items():
            info.add_itxt(key, value)
        image.save(buffer, "PNG", pnginfo=info)
    elif image_format in ("JPEG", "WEBP"):
        image.convert("RGB").save(buffer, image_format, quality=92, xmp=xmp.encode())
    else:
        raise ValueError(f"unsupported output format {image_format}")
    return (signer or UnsignedContent()).sign(buffer.getvalue(), image_format, label)


def png_text(label: ContentLabel) -> dict[str, str]:
    """PNG text chunks: readable by any PNG tool, not only XMP-aware ones."""
    return {
        "Software": SOFTWARE,
        "Source": label_text(label.model_id),
        "Description": label_text(label.prompt),
        "adgen:seed": str(label.seed),
        "adgen:digital_source_type": label.source_type.uri,
    }
