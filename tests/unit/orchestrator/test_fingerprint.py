"""The request fingerprint: what makes a repeated request id the same request."""

from __future__ import annotations

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import image_pb2
from adgen_orchestrator.ad_core import fingerprint


def _edit(data: bytes = b"photo", instruction: str = "brighter", request_id: str = "a") -> ad_pb.EditAdRequest:
    return ad_pb.EditAdRequest(
        image=image_pb2.Image(data=data, format=image_pb2.IMAGE_FORMAT_PNG),
        instruction=instruction,
        request_id=request_id,
        seed=7,
    )


def test_the_fingerprint_ignores_only_the_request_id() -> None:
    assert fingerprint(_edit(request_id="a")) == fingerprint(_edit(request_id="b"))


def test_the_fingerprint_tells_photos_and_fields_apart() -> None:
    prints = {
        fingerprint(_edit()),
        fingerprint(_edit(data=b"photo2")),
        fingerprint(_edit(instruction="darker")),
        fingerprint(ad_pb.EditAdRequest(instruction="brighter", seed=7)),
    }
    assert len(prints) == 4


def test_the_fingerprint_covers_nested_and_repeated_fields_of_a_create() -> None:
    base = ad_pb.CreateAdRequest(keyword="딸기", request_id="a")
    base.facts.extra.extend(["one", "two"])
    swapped = ad_pb.CreateAdRequest(keyword="딸기", request_id="b")
    swapped.facts.extra.extend(["two", "one"])
    assert fingerprint(base) != fingerprint(swapped)
    again = ad_pb.CreateAdRequest(keyword="딸기", request_id="c")
    again.facts.extra.extend(["one", "two"])
    assert fingerprint(base) == fingerprint(again)
