"""Downstream gRPC failures map to statuses a caller can act on; deadlines shrink as time passes."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from adgen.type.v1 import error_reason_pb2
from adgen_orchestrator.downstream import CallBudget, DownstreamError, map_downstream_error
from adgen_runtime.errors import (
    BadField,
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    ServiceError,
    Unavailable,
    invalid_fields,
)

_R = error_reason_pb2


def _aio_error(code: grpc.StatusCode, details: str, sent: ServiceError | None = None) -> aio.AioRpcError:
    """An AioRpcError as a client sees it, with the rich status trailer when `sent` is given."""
    trailers = aio.Metadata()
    if sent is not None:
        for key, value in sent.to_status().trailing_metadata:
            trailers.add(key, value)
    return aio.AioRpcError(code, aio.Metadata(), trailers, details=details)


def _details_of(error: ServiceError) -> list[any_pb2.Any]:
    """The rich details our caller would receive for `error`."""
    trailers = dict(error.to_status().trailing_metadata)
    return list(status_pb2.Status.FromString(trailers["grpc-status-details-bin"]).details)


def test_invalid_argument_keeps_reason_and_field_violations_and_names_the_service() -> None:
    sent = invalid_fields([BadField("prompt", "too long")], _R.ERROR_REASON_INVALID_ARGUMENT)
    mapped = map_downstream_error("diffusion", _aio_error(grpc.StatusCode.INVALID_ARGUMENT, sent.message, sent), "r1")
    assert isinstance(mapped, DownstreamError) and mapped.code == grpc.StatusCode.INVALID_ARGUMENT
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    details = _details_of(mapped)
    assert details[0].Unpack(info) and info.reason == "INVALID_ARGUMENT" and info.metadata["service"] == "diffusion"
    assert details[1].Unpack(bad) and bad.field_violations[0].field == "prompt"
    assert mapped.to_status().details == sent.message


def test_field_violations_are_renamed_from_the_downstream_request_to_the_callers() -> None:
    sent = invalid_fields([BadField("request.num_inference_steps", "too many")], _R.ERROR_REASON_INVALID_ARGUMENT)
    error = _aio_error(grpc.StatusCode.INVALID_ARGUMENT, sent.message, sent)
    renamed = {
        caller: map_downstream_error("diffusion", error, "r", downstream_prefix="request.", caller_prefix=caller)
        for caller in ("", "request.")
    }
    fields = {}
    for caller, mapped in renamed.items():
        bad = error_details_pb2.BadRequest()
        assert any(detail.Unpack(bad) for detail in _details_of(mapped))
        fields[caller] = [violation.field for violation in bad.field_violations]
    assert fields == {"": ["num_inference_steps"], "request.": ["request.num_inference_steps"]}


def test_a_copywriter_field_the_caller_sent_under_another_path_is_named_by_the_callers_path() -> None:
    sent = invalid_fields([BadField("brand_name", "makes a banned claim")], _R.ERROR_REASON_BANNED_CLAIM)
    error = _aio_error(grpc.StatusCode.INVALID_ARGUMENT, sent.message, sent)
    mapped = map_downstream_error(
        "copywriter", error, "r", caller_prefix="request.", caller_fields={"brand_name": "brand.name"}
    )
    bad = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad) for detail in _details_of(mapped))
    assert [violation.field for violation in bad.field_violations] == ["request.brand.name"]
    assert "request.brand.name" in mapped.to_status().details and "brand_name" not in mapped.to_status().details


def test_resource_exhausted_keeps_retry_info() -> None:
    sent = ResourceExhausted(_R.ERROR_REASON_QUEUE_FULL, "queue full", retry_after_s=1.5)
    mapped = map_downstream_error("diffusion", _aio_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", sent), "r")
    assert mapped.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in _details_of(mapped))
    assert retry.retry_delay.ToMilliseconds() == 1500


def test_resource_exhausted_without_details_is_our_fault_not_a_queue() -> None:
    # gRPC itself says RESOURCE_EXHAUSTED when a message exceeds the limit: no ErrorInfo.
    error = _aio_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (5 vs. 4)")
    mapped = map_downstream_error("diffusion", error, "r9")
    assert isinstance(mapped, Internal) and "r9" in mapped.message and "larger" not in mapped.message


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED])
def test_unreachable_or_dropped_downstream_is_upstream_unavailable(code: grpc.StatusCode) -> None:
    mapped = map_downstream_error("copywriter", _aio_error(code, "failed to connect to all addresses; 10.0.0.1"), "r")
    assert isinstance(mapped, Unavailable) and mapped.reason == _R.ERROR_REASON_UPSTREAM_UNAVAILABLE
    assert mapped.metadata == {"service": "copywriter"}
    assert "copywriter" in mapped.message and "10.0.0.1" not in mapped.message


def test_llm_unavailable_keeps_its_retry_delay_and_downstream_reason() -> None:
    sent = Unavailable(_R.ERROR_REASON_LLM_UNAVAILABLE, "LLM rate-limited", retry_after_s=4)
    mapped = map_downstream_error("copywriter", _aio_error(grpc.StatusCode.UNAVAILABLE, sent.message, sent), "r")
    assert mapped.reason == _R.ERROR_REASON_UPSTREAM_UNAVAILABLE and mapped.retry_after_s == 4
    assert mapped.metadata["downstream_reason"] == "LLM_UNAVAILABLE"


def test_downstream_deadline_is_upstream_deadline_exceeded() -> None:
    mapped = map_downstream_error("diffusion", _aio_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), "r")
    assert isinstance(mapped, DeadlineExceeded)
    assert mapped.reason == _R.ERROR_REASON_UPSTREAM_DEADLINE_EXCEEDED and mapped.metadata["service"] == "diffusion"


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.DATA_LOSS],
)
def test_other_failures_are_internal_with_the_request_id_and_no_downstream_text(code: grpc.StatusCode) -> None:
    mapped = map_downstream_error("diffusion", _aio_error(code, "Traceback: /srv/secret.py line 3"), "req-77")
    assert isinstance(mapped, Internal) and mapped.code == grpc.StatusCode.INTERNAL
    assert "req-77" in mapped.message and "secret" not in mapped.message
    assert mapped.metadata["request_id"] == "req-77"


def test_budget_without_a_caller_deadline_uses_the_service_cap() -> None:
    assert CallBudget("r").timeout("diffusion", 600) == 600


def test_budget_passes_on_what_is_left_of_the_deadline_minus_the_margin() -> None:
    budget = CallBudget.from_time_remaining("r", 10.0, margin_s=0.5)
    assert 9.0 < budget.timeout("copywriter", 60) <= 9.5
    assert budget.timeout("copywriter", 2) == 2  # the service cap still applies


def test_budget_refuses_a_call_once_the_deadline_has_passed() -> None:
    budget = CallBudget("r", deadline=time.monotonic() - 1)
    with pytest.raises(DeadlineExceeded) as raised:
        budget.timeout("diffusion", 600)
    assert raised.value.reason == _R.ERROR_REASON_UPSTREAM_DEADLINE_EXCEEDED
