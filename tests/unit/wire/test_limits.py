"""The variant limit of the code is the one the protos document."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adgen_wire.limits import MAX_VARIANTS

PROTOS = Path(__file__).resolve().parents[3] / "protos" / "adgen"
COUNT_FIELDS = [
    ("ad/v1/ad_service.proto", "variant_count"),
    ("copywriter/v1/copywriter_service.proto", "variant_count"),
    ("diffusion/v1/diffusion_service.proto", "image_count"),
]


@pytest.mark.parametrize(("proto", "field"), COUNT_FIELDS)
def test_every_count_field_comment_states_the_limit(proto: str, field: str) -> None:
    text = (PROTOS / proto).read_text(encoding="utf-8")
    comments = re.findall(rf"//([^\n]*)\n\s*int32 {field} = \d+;", text)
    assert comments, f"{proto} has no commented {field}"
    for comment in comments:
        assert re.search(rf"\b1 to {MAX_VARIANTS}\b", comment), (proto, field, comment)
