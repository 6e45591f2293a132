"""The Korean error messages: by ErrorInfo reason first, by gRPC code otherwise, request id always kept."""

from __future__ import annotations

import grpc
import pytest

from adgen_client.errors import AdGenError, FieldViolation
from adgen_web.messages import describe_error, field_labels

_C = grpc.StatusCode


def _error(code: grpc.StatusCode, reason: str = "", **extra: object) -> AdGenError:
    return AdGenError(code=code, message="internal english text", reason=reason, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (_C.INVALID_ARGUMENT, "EMPTY_KEYWORD", "키워드가 비어"),
        (_C.INVALID_ARGUMENT, "INVALID_SIZE", "이미지 크기"),
        (_C.INVALID_ARGUMENT, "INVALID_IMAGE", "사진 파일을 읽을 수 없어요"),
        (_C.NOT_FOUND, "MODEL_NOT_FOUND", "모델을 찾을 수 없어요"),
        (_C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", "연결할 수 없어요"),
        (_C.DEADLINE_EXCEEDED, "UPSTREAM_DEADLINE_EXCEEDED", "너무 오래 걸려"),
        (_C.FAILED_PRECONDITION, "BANNED_CLAIM", "식품 광고"),
        (_C.UNAVAILABLE, "NOT_READY", "켜지는 중"),
    ],
)
def test_known_reasons_get_their_own_korean_message(code: grpc.StatusCode, reason: str, expected: str) -> None:
    message = describe_error(_error(code, reason))
    assert expected in message.problem
    assert message.next_step.endswith("요.")
    assert "internal english text" not in message.text


def test_queue_full_tells_when_to_retry_rounded_up_to_whole_seconds() -> None:
    message = describe_error(_error(_C.RESOURCE_EXHAUSTED, "QUEUE_FULL", retry_after_s=4.2))
    assert "대기열" in message.problem and "5초 뒤에 다시 시도" in message.next_step


def test_queue_full_without_a_retry_delay_says_a_little_later() -> None:
    message = describe_error(_error(_C.RESOURCE_EXHAUSTED, "QUEUE_FULL"))
    assert message.next_step == "잠시 후 다시 시도해 주세요."


def test_deadline_exceeded_without_a_reason_suggests_fewer_variants() -> None:
    assert "시안 개수를 줄이거나" in describe_error(_error(_C.DEADLINE_EXCEEDED)).next_step


def test_server_not_running_is_told_as_a_connection_problem() -> None:
    assert describe_error(_error(_C.UNAVAILABLE)).problem == "광고 서버에 연결할 수 없어요."


def test_invalid_argument_without_a_known_reason_names_the_fields_in_korean_once_each() -> None:
    violations = [FieldViolation("request.width", "too big"), FieldViolation("height", "too big")]
    error = _error(_C.INVALID_ARGUMENT, "INVALID_ARGUMENT", field_violations=violations)
    assert field_labels(error) == ["이미지 크기"]
    assert "이미지 크기" in describe_error(error).problem


def test_unknown_failures_fall_back_to_a_generic_message_with_the_servers_request_id() -> None:
    error = _error(_C.INTERNAL, "INTERNAL", metadata={"request_id": "server-rid"})
    message = describe_error(error, request_id="caller-rid")
    assert message.problem == "예상하지 못한 문제가 생겼어요."
    assert message.request_id == "server-rid" and "요청 번호: server-rid" in message.text


def test_the_callers_request_id_is_used_when_the_server_named_none() -> None:
    message = describe_error(_error(_C.UNKNOWN), request_id="caller-rid")
    assert message.request_id == "caller-rid" and "요청 번호를 관리자에게" in message.next_step
