"""Control characters: refused in every text field of AdService requests; never in an image's label."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import ad_pb2, image_pb2
from adgen_orchestrator.provenance import ContentLabel, SourceType, encode_labelled, png_text, xmp_packet
from adgen_orchestrator.validation import parse_create_request, parse_edit_request
from adgen_runtime.errors import InvalidArgument
from adgen_runtime.text import forbidden_characters
from tests.support.orchestrator_fakes import png

# NUL, the bell, escape, unit separator, DEL, a C1 control, a right-to-left override, a noncharacter.
HOSTILE = ["\x00", "\x07", "\x1b[31m", "\x1f", "\x7f", "\x85", "\u202e", "\uffff"]
HOSTILE_IDS = ["nul", "bell", "ansi-escape", "unit-separator", "del", "c1-nel", "rtl-override", "nonchar"]
XMP_DESCRIPTION = "{http://purl.org/dc/elements/1.1/}description"
RDF_LI = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}li"
CREATOR_TOOL = "{http://ns.adobe.com/xap/1.0/}CreatorTool"


def _violations(create: ad_pb.CreateAdRequest) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as raised:
        parse_create_request(create, default_model_id="flux2-klein-4b", request_id="rid")
    return {v.field: v.description for v in raised.value.field_violations}


@pytest.mark.parametrize("control", HOSTILE, ids=HOSTILE_IDS)
def test_create_ad_refuses_control_characters_in_every_text_field_naming_each(control: str) -> None:
    facts = ad_pb2.MerchantFacts(
        shop_name=f"하루{control}카페",
        price=f"5,500원{control}",
        origin=control,
        promotion=f"1+1{control}",
        extra=["ok", f"bad{control}"],
    )
    violations = _violations(
        ad_pb.CreateAdRequest(keyword=f"딸기{control}주스", model_id=f"flux{control}", facts=facts)
    )
    expected = {"keyword", "model_id", "facts.shop_name", "facts.price", "facts.origin", "facts.promotion"}
    assert set(violations) == expected | {"facts.extra[1]"}
    assert f"U+{ord(control[0]):04X}" in violations["keyword"]


def test_tabs_and_line_breaks_are_text_not_control_characters() -> None:
    spec = parse_create_request(
        ad_pb.CreateAdRequest(keyword="딸기\t주스\r\n여름", facts=ad_pb2.MerchantFacts(extra=["첫 줄\n둘째 줄"])),
        default_model_id="flux2-klein-4b",
        request_id="rid",
    )
    assert spec.keyword == "딸기\t주스\r\n여름"  # The copywriter folds them into spaces.


@pytest.mark.parametrize("control", HOSTILE, ids=HOSTILE_IDS)
def test_edit_ad_refuses_control_characters_in_its_instruction_and_model_id(control: str) -> None:
    request = ad_pb.EditAdRequest(
        image=image_pb2.Image(data=png(32, 32)), instruction=f"밝게{control} 해줘", model_id=f"qwen{control}"
    )
    with pytest.raises(InvalidArgument) as raised:
        parse_edit_request(
            request, default_model_id="qwen", request_id="rid", max_input_bytes=1_000_000, max_input_pixels=10**7
        )
    assert [v.field for v in raised.value.field_violations] == ["instruction", "model_id"]


def test_the_rule_names_each_forbidden_character_once_in_order() -> None:
    assert forbidden_characters("a\x00b\x00\x1b\u202e한글 😀\u200d🍓\t\n") == ["\x00", "\x1b", "\u202e"]


# Every character a model's own text may hold that no XML may carry, plus the markup XML must escape.
EVERY_CONTROL = "".join(chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]) + "\ud800\ufffe\uffff"
HOSTILE_LABEL = ContentLabel(
    SourceType.EDITED,
    model_id=f'qwen" onload="x{EVERY_CONTROL}<&>',
    seed=1,
    prompt=f"Make it ]]> <rdf:li>pink</rdf:li> &amp; {EVERY_CONTROL} bright\nsecond line",
)


def test_the_xmp_label_of_hostile_text_parses_and_keeps_the_readable_text() -> None:
    root = ET.fromstring(xmp_packet(HOSTILE_LABEL))
    description = root.find(f".//{XMP_DESCRIPTION}//{RDF_LI}")
    assert description is not None and description.text is not None
    assert description.text.startswith("Make it ]]> <rdf:li>pink</rdf:li> &amp; \t\n")
    assert description.text.endswith(" bright\nsecond line")
    assert not forbidden_characters(description.text) and "\ud800" not in description.text
    (tool,) = [e.attrib[CREATOR_TOOL] for e in root.iter() if CREATOR_TOOL in e.attrib]
    assert tool.startswith('AdGen (qwen" onload="x\t\n') and tool.endswith("<&>)")


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
def test_every_output_format_carries_a_label_that_parses(image_format: str) -> None:
    data = encode_labelled(Image.new("RGB", (16, 16), "pink"), image_format, HOSTILE_LABEL)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    assert xmp
    ET.fromstring(xmp.decode() if isinstance(xmp, bytes) else str(xmp))


def test_png_text_chunks_carry_no_control_characters_but_line_breaks() -> None:
    for value in png_text(HOSTILE_LABEL).values():
        assert not forbidden_characters(value) and "\r" not in value and "\ud800" not in value
