"""A relayed downstream INVALID_ARGUMENT names the caller's fields in its message, as in its field violations."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from adgen.type.v1 import error_reason_pb2
from adgen_orchestrator.downstream import map_downstream_error
from adgen_runtime.errors import BadField, InvalidArgument, ServiceError, invalid_fields

_R = error_reason_pb2


def _relayed(sent: ServiceError, downstream_prefix: str, caller_prefix: str) -> tuple[str, list[str]]:
    """The message and violated fields our caller gets for `sent`, relayed from one layout to the other."""
    trailers = aio.Metadata()
    for key, value in sent.to_status().trailing_metadata:
        trailers.add(key, value)
    error = aio.AioRpcError(grpc.StatusCode.INVALID_ARGUMENT, aio.Metadata(), trailers, details=sent.message)
    mapped = map_downstream_error(
        "diffusion", error, "r1", downstream_prefix=downstream_prefix, caller_prefix=caller_prefix
    )
    status = status_pb2.Status.FromString(dict(mapped.to_status().trailing_metadata)["grpc-status-details-bin"])
    bad = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad) for detail in status.details)
    assert mapped.to_status().details == status.message  # grpc-message and the rich status agree.
    return status.message, [violation.field for violation in bad.field_violations]


def test_a_stream_hops_violation_is_named_as_the_unary_caller_sent_it() -> None:
    sent = invalid_fields([BadField("request.num_inference_steps", "must be between 1 and 50 for klein")])
    message, fields = _relayed(sent, "request.", "")
    assert fields == ["num_inference_steps"]
    assert message == "Invalid request: num_inference_steps: must be between 1 and 50 for klein"


def test_a_stream_caller_keeps_its_own_stream_layout() -> None:
    sent = invalid_fields([BadField("request.num_inference_steps", "must be between 1 and 50")])
    message, fields = _relayed(sent, "request.", "request.")
    assert fields == ["request.num_inference_steps"] and "request.num_inference_steps:" in message


def test_a_unary_hops_violation_is_named_in_a_stream_callers_layout() -> None:
    sent = invalid_fields([BadField("keyword", "must not be empty"), BadField("width", "too big")])
    message, fields = _relayed(sent, "", "request.")
    assert fields == ["request.keyword", "request.width"]
    assert message == "Invalid request: request.keyword: must not be empty; request.width: too big"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A sub-field of a violated field is renamed with it; another field that merely contains the name is not.
        ("request.image.data: could not be decoded", "image.data: could not be decoded"),
        ("request.image: too large; max_image_side is 2048", "image: too large; max_image_side is 2048"),
        # Other paths of the downstream layout are renamed by their prefix; prose about "the request" is not.
        ("request.image: larger than request.width allows", "image: larger than width allows"),
        ("Invalid request: request.image: bad", "Invalid request: image: bad"),
    ],
)
def test_paths_in_free_text_are_renamed_whole(text: str, expected: str) -> None:
    sent = InvalidArgument(_R.ERROR_REASON_INVALID_IMAGE, text, field_violations=[BadField("request.image", "bad")])
    message, fields = _relayed(sent, "request.", "")
    assert message == expected and fields == ["image"]
