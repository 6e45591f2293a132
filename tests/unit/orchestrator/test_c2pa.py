"""Delivered images carry signed C2PA content credentials that c2pa's own Reader verifies against a test CA."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import c2pa
import pytest
from PIL import Image

from adgen_orchestrator.provenance import (
    IPTC_DIGITAL_SOURCE_TYPE,
    C2paSigner,
    ContentLabel,
    SigningSetupError,
    SourceType,
    encode_labelled,
)
from tests.support.c2pa_certs import SigningIdentity, make_signing_identity

MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
GENERATED = ContentLabel(SourceType.GENERATED, "flux2-klein-4b", 1234, "A strawberry juice on an oak counter")


@pytest.fixture(scope="module")
def identity() -> SigningIdentity:
    return make_signing_identity()


@pytest.fixture(scope="module")
def signer(identity: SigningIdentity) -> C2paSigner:
    return C2paSigner(identity.chain, identity.private_key)


def picture(colour: str = "pink") -> Image.Image:
    return Image.new("RGB", (96, 64), colour)


def read_credentials(data: bytes, image_format: str, trusted_ca: bytes | None) -> tuple[str, dict[str, Any]]:
    """The validation state and the active manifest, read with c2pa's Reader trusting `trusted_ca` (if any)."""
    settings = {"trust": {"trust_anchors": trusted_ca.decode()}} if trusted_ca else {}
    context = c2pa.Context.from_dict(settings)
    with c2pa.Reader(MIME_TYPES[image_format], io.BytesIO(data), context=context) as reader:
        state = reader.get_validation_state()
        manifest = reader.get_active_manifest()
    assert state is not None and manifest is not None
    return state, manifest


def actions_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    (assertion,) = [a for a in manifest["assertions"] if a["label"].startswith("c2pa.actions")]
    actions: list[dict[str, Any]] = assertion["data"]["actions"]
    return actions


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
def test_generated_images_are_signed_and_verify_against_the_trusted_ca(
    image_format: str, identity: SigningIdentity, signer: C2paSigner
) -> None:
    data = encode_labelled(picture(), image_format, GENERATED, signer=signer)
    state, manifest = read_credentials(data, image_format, identity.ca_certificate)
    assert state == "Trusted"
    (created,) = actions_of(manifest)
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == IPTC_DIGITAL_SOURCE_TYPE + "trainedAlgorithmicMedia"
    assert created["softwareAgent"]["name"] == "flux2-klein-4b"
    assert created["parameters"] == {"model_id": "flux2-klein-4b", "seed": 1234}
    assert manifest["claim_generator_info"][0]["name"] == "AdGen"
    assert manifest["signature_info"]["common_name"] == "AdGen Development Claim Signer"
    # The XMP label is still there, and the file still decodes as the same picture.
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == image_format and image.size == (96, 64)
        xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    assert xmp and "trainedAlgorithmicMedia" in (xmp.decode() if isinstance(xmp, bytes) else xmp)


def test_an_edit_records_its_source_photo_as_the_parent_ingredient(
    identity: SigningIdentity, signer: C2paSigner
) -> None:
    source = io.BytesIO()
    picture("green").save(source, "JPEG")
    label = ContentLabel(SourceType.EDITED, "qwen-image-edit-2511", 7, "Replace the coffee", (source.getvalue(),))
    data = encode_labelled(picture(), "PNG", label, signer=signer)
    state, manifest = read_credentials(data, "PNG", identity.ca_certificate)
    assert state == "Trusted"
    opened, edited = actions_of(manifest)
    assert opened["action"] == "c2pa.opened"
    assert edited["action"] == "c2pa.edited"
    assert edited["digitalSourceType"] == IPTC_DIGITAL_SOURCE_TYPE + "compositeWithTrainedAlgorithmicMedia"
    assert edited["softwareAgent"]["name"] == "qwen-image-edit-2511"
    (parent,) = manifest["ingredients"]
    assert parent["relationship"] == "parentOf" and parent["format"] == "image/jpeg"
    assert parent["label"] in json.dumps(opened["parameters"]["ingredients"])


def test_an_untrusted_ca_still_validates_but_is_not_trusted(signer: C2paSigner) -> None:
    data = encode_labelled(picture(), "JPEG", GENERATED, signer=signer)
    state, _ = read_credentials(data, "JPEG", trusted_ca=make_signing_identity().ca_certificate)
    assert state == "Valid"


def test_changing_one_pixel_after_signing_invalidates_the_manifest(
    identity: SigningIdentity, signer: C2paSigner
) -> None:
    data = bytearray(encode_labelled(Image.effect_noise((64, 64), 40).convert("RGB"), "JPEG", GENERATED, signer=signer))
    end_of_image = data.rindex(b"\xff\xd9")
    data[end_of_image - 10] ^= 0x01  # Inside the entropy-coded scan, which the manifest's hash covers.
    state, _ = read_credentials(bytes(data), "JPEG", identity.ca_certificate)
    assert state == "Invalid"


def test_from_files_signs_with_the_configured_pair(tmp_path: Path, identity: SigningIdentity) -> None:
    chain_file, key_file = identity.write(tmp_path)
    signer = C2paSigner.from_files(chain_file, key_file)
    state, _ = read_credentials(
        encode_labelled(picture(), "PNG", GENERATED, signer=signer), "PNG", identity.ca_certificate
    )
    assert state == "Trusted"


def test_a_key_that_does_not_match_the_certificate_stops_the_server_at_start(
    tmp_path: Path, identity: SigningIdentity
) -> None:
    chain_file, key_file = identity.write(tmp_path)
    key_file.write_bytes(make_signing_identity().private_key)
    with pytest.raises(SigningSetupError, match="cannot sign C2PA manifests"):
        C2paSigner.from_files(chain_file, key_file)


def test_a_certificate_without_a_claim_signing_usage_is_refused_at_start(tmp_path: Path) -> None:
    chain_file, key_file = make_signing_identity(claim_signing=False).write(tmp_path)
    with pytest.raises(SigningSetupError, match="extended key usage"):
        C2paSigner.from_files(chain_file, key_file)


def test_product_photos_of_a_generated_scene_are_component_ingredients(
    identity: SigningIdentity, signer: C2paSigner
) -> None:
    products = []
    for colour in ("red", "blue"):
        buffer = io.BytesIO()
        Image.new("RGBA", (32, 32), colour).save(buffer, "PNG")
        products.append(buffer.getvalue())
    label = ContentLabel(SourceType.GENERATED, "flux2-klein-4b", 5, "A scene around the product", tuple(products))
    state, manifest = read_credentials(
        encode_labelled(picture(), "JPEG", label, signer=signer), "JPEG", identity.ca_certificate
    )
    assert state == "Trusted"
    assert [a["action"] for a in actions_of(manifest)] == ["c2pa.created"]
    assert [i["relationship"] for i in manifest["ingredients"]] == ["componentOf", "componentOf"]
