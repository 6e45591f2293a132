"""AI-content labels on every image we deliver: IPTC digital source type in XMP, plus PNG text.

Korea's AI Basic Act (in force since 2026-01-22) asks that generated outputs be marked as
such; IPTC `DigitalSourceType` in XMP is what platforms such as Meta read. A `ContentSigner`
runs last, because a C2PA manifest hashes the encoded bytes: `C2paSigner` embeds signed content
credentials (c2pa-python) when the operator configures a certificate and key; without them
`UnsignedContent` leaves the labelled file as it is.
"""

from __future__ import annotations

import enum
import io
import logging
import struct
import unicodedata
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Protocol
from xml.sax.saxutils import escape

import c2pa
import fpng  # type: ignore[import-untyped]
from PIL import Image

_LOGGER = logging.getLogger(__name__)

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
    # The photos the image was made from, as uploaded: an edit's source photo first (its C2PA parent), then any
    # others (components, e.g. product photos). Only a signer reads them.
    source_photos: tuple[bytes, ...] = ()


class ContentSigner(Protocol):
    """Signs encoded image bytes (e.g. with a C2PA manifest) and returns the signed bytes."""

    def sign(self, data: bytes, image_format: str, label: ContentLabel) -> bytes: ...


class UnsignedContent:
    """The default signer: no C2PA manifest (signing needs an X.509 certificate the operator configures)."""

    def sign(self, data: bytes, image_format: str, label: ContentLabel) -> bytes:
        return data


SigningAlgorithm = Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"]
_MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_ACTIONS = {SourceType.GENERATED: "c2pa.created", SourceType.EDITED: "c2pa.edited"}
# No thumbnail in the manifest: the image is its own preview, and a thumbnail adds tens of KiB and milliseconds.
_BUILDER_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}


class SigningSetupError(ValueError):
    """The configured certificate, key or algorithm cannot sign; the message says what to fix."""


class C2paSigner:
    """Embeds a signed C2PA manifest in each delivered image. Its `c2pa.actions` assertion says the image was
    created by (or edited with) a trained model, with the IPTC digital source type, and names the model in the
    action's softwareAgent and parameters; an edit's source photo is its `parentOf` ingredient.

    Thread-safe: every call builds its own c2pa Builder and Signer (delivery signs in worker threads).
    """

    def __init__(
        self,
        certificate_chain: bytes,
        private_key: bytes,
        algorithm: SigningAlgorithm = "es256",
        timestamp_url: str | None = None,
    ) -> None:
        self._certificate_chain = certificate_chain
        self._private_key = private_key
        self._algorithm = c2pa.C2paSigningAlg[algorithm.upper()]
        self._timestamp_url = timestamp_url or None
        self._context = c2pa.Context.from_dict(_BUILDER_SETTINGS)
        self._generator = {"name": SOFTWARE, "version": _adgen_version()}

    @classmethod
    def from_files(
        cls,
        certificate_file: Path,
        key_file: Path,
        algorithm: SigningAlgorithm = "es256",
        timestamp_url: str | None = None,
    ) -> C2paSigner:
        """A signer from PEM files (the chain: the signing certificate first, then its issuers), checked by signing
        a test image now, so a wrong pair stops the server at start rather than failing every image."""
        signer = cls(certificate_file.read_bytes(), key_file.read_bytes(), algorithm, timestamp_url)
        try:
            signer.sign(_probe_png(), "PNG", ContentLabel(SourceType.GENERATED, "probe", 0, "probe"))
        except c2pa.C2paError as error:
            _LOGGER.error("C2PA test signature failed: %s", error)
            raise SigningSetupError(
                f"cannot sign C2PA manifests with this certificate and key ({algorithm}): the chain must start "
                "with an X.509 v3 signing certificate (key usage digitalSignature; extended key usage "
                "emailProtection, documentSigning or C2PA claim signing; not a CA, not self-signed), followed by "
                "its issuers, and the key file must hold its private key in PEM (PKCS#8)"
            ) from None
        return signer

    def sign(self, data: bytes, image_format: str, label: ContentLabel) -> bytes:
        builder = c2pa.Builder(self.manifest(image_format, label), context=self._context)
        photos = list(label.source_photos)
        if label.source_type is SourceType.EDITED and photos:
            # The EDIT intent makes the builder open the parent first (c2pa.opened), as the spec asks of an edit.
            builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
            _add_ingredient(builder, photos.pop(0), "parentOf", "source photo")
        for index, photo in enumerate(photos):
            _add_ingredient(builder, photo, "componentOf", f"photo {index + 1}")
        signed = io.BytesIO()
        builder.sign(self._signer(), _MIME_TYPES[image_format], io.BytesIO(data), signed)
        return signed.getvalue()

    def manifest(self, image_format: str, label: ContentLabel) -> dict[str, Any]:
        """The manifest definition; the builder adds the hashes, the ingredients and the signature."""
        action = {
            "action": _ACTIONS[label.source_type],
            "digitalSourceType": label.source_type.uri,
            "softwareAgent": {"name": label_text(label.model_id)},
            "parameters": {"model_id": label_text(label.model_id), "seed": label.seed},
        }
        return {
            "claim_generator_info": [self._generator],
            "title": f"{SOFTWARE} {label.source_type.name.lower()} image",
            "format": _MIME_TYPES[image_format],
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}],
        }

    def _signer(self) -> c2pa.Signer:
        info = c2pa.C2paSignerInfo(self._algorithm, self._certificate_chain, self._private_key, self._timestamp_url)
        return c2pa.Signer.from_info(info)


def _add_ingredient(builder: c2pa.Builder, photo: bytes, relationship: str, title: str) -> None:
    with Image.open(io.BytesIO(photo)) as image:
        mime = Image.MIME.get(image.format or "", "application/octet-stream")
    builder.add_ingredient({"title": title, "relationship": relationship}, mime, io.BytesIO(photo))


def _adgen_version() -> str:
    try:
        return metadata.version("adgen")
    except metadata.PackageNotFoundError:  # Run from a checkout without installing it.
        return "0.0.0"


def _probe_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(buffer, "PNG")
    return buffer.getvalue()


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


# The final encode's settings, chosen by bench/image_encode.py's figures (README, "Benchmarks"): JPEG q95 4:2:0
# through Pillow's libjpeg-turbo is as fast as simplejpeg, PyTurboJPEG, OpenCV and imagecodecs (about 5 ms at
# 1080x1350); fpng writes PNG about 35x faster than zlib level 1 at the same size; WebP's method 0 is the fastest.
JPEG_OPTIONS: dict[str, object] = {"quality": 95, "subsampling": 2}  # Pillow's 2 is 4:2:0.
WEBP_OPTIONS: dict[str, object] = {"quality": 92, "method": 0}
_PNG_SIGNATURE_AND_IHDR = 8 + 4 + 4 + 13 + 4  # Signature, then IHDR's length, type, data and CRC.


def encode_labelled(
    image: Image.Image,
    image_format: str,
    label: ContentLabel,
    signer: ContentSigner | None = None,
) -> bytes:
    """Encodes `image` as PNG, JPEG or WebP with the label in its metadata, then signs it."""
    xmp = xmp_packet(label)
    if image_format == "PNG":
        encoded = labelled_png(image, {"XML:com.adobe.xmp": xmp, **png_text(label)})
    elif image_format in ("JPEG", "WEBP"):
        buffer = io.BytesIO()
        options = JPEG_OPTIONS if image_format == "JPEG" else WEBP_OPTIONS
        picture = image if image.mode == "RGB" else image.convert("RGB")  # No copy of what is RGB already.
        picture.save(buffer, image_format, xmp=xmp.encode(), **options)
        encoded = buffer.getvalue()
    else:
        raise ValueError(f"unsupported output format {image_format}")
    return (signer or UnsignedContent()).sign(encoded, image_format, label)


def labelled_png(image: Image.Image, texts: dict[str, str]) -> bytes:
    """`image` as a PNG written by fpng, with an iTXt chunk per text right after the header (before the pixels,
    where XMP readers look)."""
    picture = image if image.mode in ("RGB", "RGBA") else image.convert("RGBA" if "A" in image.mode else "RGB")
    encoded: bytes = fpng.from_pil(picture)
    if encoded[12:16] != b"IHDR":
        raise ValueError("fpng wrote no IHDR chunk first")
    chunks = b"".join(_itxt_chunk(key, value) for key, value in texts.items())
    return encoded[:_PNG_SIGNATURE_AND_IHDR] + chunks + encoded[_PNG_SIGNATURE_AND_IHDR:]


def _itxt_chunk(keyword: str, text: str) -> bytes:
    """An uncompressed international-text chunk: keyword, no language tag, UTF-8 text."""
    body = keyword.encode("latin-1") + b"\0\0\0" + b"\0" + b"\0" + text.encode("utf-8")
    return struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))


def png_text(label: ContentLabel) -> dict[str, str]:
    """PNG text chunks: readable by any PNG tool, not only XMP-aware ones."""
    return {
        "Software": SOFTWARE,
        "Source": label_text(label.model_id),
        "Description": label_text(label.prompt),
        "adgen:seed": str(label.seed),
        "adgen:digital_source_type": label.source_type.uri,
    }
