"""The HTTP edge's strict proto JSON: every kind of field, checked before anything is coerced."""

from __future__ import annotations

import base64

import pytest
from connectrpc.errors import ConnectError
from google.rpc import error_details_pb2

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen_orchestrator.http_edge import decode_json_message


def _violations(error: ConnectError) -> list[tuple[str, str]]:
    for detail in error.details:
        if detail.type_name == "google.rpc.BadRequest":
            bad = error_details_pb2.BadRequest.FromString(detail.message_bytes)
            return [(v.field, v.description) for v in bad.field_violations]
    raise AssertionError("no BadRequest")


def test_good_json_decodes_with_proto_and_json_names_alike() -> None:
    request = decode_json_message(
        b'{"keyword": "k", "variant_count": 2, "seed": "18446744073709551615", "width": 64.0, "height": "96",'
        b' "placement": "PLACEMENT_STORY", "tone": 3, "facts": {"extra": ["a"]}, "numInferenceSteps": null}',
        ad_pb.CreateAdRequest,
    )
    assert (request.keyword, request.variant_count, request.seed, request.width, request.height) == (
        "k",
        2,
        2**64 - 1,
        64,
        96,
    )
    assert request.placement == 3 and request.tone == 3 and list(request.facts.extra) == ["a"]
    assert not request.HasField("num_inference_steps")


def test_an_empty_body_is_the_empty_message() -> None:
    assert decode_json_message(b"  ", ad_pb.EditAdRequest) == ad_pb.EditAdRequest()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"placement": "STORY"}', ("placement", "must be one of PLACEMENT_UNSPECIFIED")),
        (b'{"seed": 1.5}', ("seed", "whole number from 0 to 18446744073709551615")),
        (b'{"seed": "12abc"}', ("seed", "whole number")),
        (b'{"width": false}', ("width", "whole number from -2147483648 to 2147483647")),
        (b'{"keyword": ["k"]}', ("keyword", "must be a string")),
        (b'{"facts": {"extra": ["a", {"b": 1}]}}', ("facts.extra[1]", "must be a string")),
        (b'{"facts": []}', ("facts", "must be a JSON object (MerchantFacts)")),
        (b'{"' + b"x" * 500 + b'": 1}', ("x" * 63 + "…", "is not a field of CreateAdRequest")),
        (b'{"bad\\nkey": 1}', ("bad\\nkey", "is not a field of CreateAdRequest")),
    ],
)
def test_each_bad_value_is_named_by_its_proto_path(body: bytes, expected: tuple[str, str]) -> None:
    with pytest.raises(ConnectError) as raised:
        decode_json_message(body, ad_pb.CreateAdRequest)
    [(field, description)] = _violations(raised.value)
    assert field == expected[0] and expected[1] in description


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"metadata": {"a": "x", "b": 2}}', "metadata[b]"),  # a map's values
        (b'{"metadata": ["a"]}', "metadata"),
    ],
)
def test_map_fields_are_checked_value_by_value(body: bytes, expected: str) -> None:
    with pytest.raises(ConnectError) as raised:
        decode_json_message(body, error_details_pb2.ErrorInfo)
    assert [field for field, _ in _violations(raised.value)] == [expected]


def test_repeated_messages_and_well_known_types_are_checked_inside() -> None:
    with pytest.raises(ConnectError) as raised:
        decode_json_message(
            b'{"images": [{"seed": "1"}, {"seed": "x"}], "totalDuration": "forever"}', ad_pb.CreateAdResponse
        )
    assert [field for field, _ in _violations(raised.value)] == ["images[1].seed", "total_duration"]
    decoded = decode_json_message(b'{"totalDuration": "1.5s"}', ad_pb.CreateAdResponse)
    assert decoded.total_duration.ToMilliseconds() == 1500


def test_bytes_must_be_base64_in_either_alphabet() -> None:
    data = bytes(range(250))
    for encoded in (base64.b64encode(data), base64.urlsafe_b64encode(data).rstrip(b"=")):
        request = decode_json_message(b'{"image": {"data": "' + encoded + b'"}}', ad_pb.EditAdRequest)
        assert request.image.data == data
    with pytest.raises(ConnectError) as raised:
        decode_json_message(b'{"image": {"data": "abcde"}}', ad_pb.EditAdRequest)  # 5 characters: not base64
    assert _violations(raised.value) == [("image.data", "must be base64-encoded bytes")]
