"""The copywriter refuses control characters in every text it is sent, and folds line breaks into spaces."""

from __future__ import annotations

import pytest

from adgen.copywriter.v1 import copywriter_service_pb2 as pb
from adgen.type.v1 import ad_pb2
from adgen_copywriter.validation import brief_from_request, edit_request_from
from adgen_runtime.errors import InvalidArgument

HOSTILE = ["\x00", "\x1b", "\x1c", "\x7f", "\x9b", "\u202e"]


@pytest.mark.parametrize("control", HOSTILE, ids=[f"U+{ord(c):04X}" for c in HOSTILE])
def test_generate_copy_names_every_field_holding_a_control_character(control: str) -> None:
    facts = ad_pb2.MerchantFacts(shop_name=f"하루{control}", promotion="1+1", extra=[f"논산{control}딸기"])
    with pytest.raises(InvalidArgument) as raised:
        brief_from_request(pb.GenerateCopyRequest(keyword=f"딸기{control}주스", facts=facts))
    violations = {v.field: v.description for v in raised.value.field_violations}
    assert set(violations) == {"keyword", "facts.shop_name", "facts.extra[0]"}
    assert f"U+{ord(control):04X}" in violations["keyword"]


def test_line_breaks_and_tabs_fold_into_single_spaces() -> None:
    facts = ad_pb2.MerchantFacts(price="5,500원\n(1잔)", extra=["첫째\t둘째"])
    brief = brief_from_request(pb.GenerateCopyRequest(keyword=" 딸기\r\n주스\t여름 ", facts=facts))
    assert brief.keyword == "딸기 주스 여름"
    assert (brief.facts.price, brief.facts.extra) == ("5,500원 (1잔)", ("첫째 둘째",))


@pytest.mark.parametrize("control", HOSTILE, ids=[f"U+{ord(c):04X}" for c in HOSTILE])
def test_an_edit_request_with_a_control_character_is_refused(control: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        edit_request_from(pb.WriteEditInstructionRequest(request=f"커피를{control} 라떼로"))
    assert [v.field for v in raised.value.field_violations] == ["request"]
