"""Logging with the request id of the current call on every line, and the one request-id rule."""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

from opentelemetry import trace

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# Ids land in every log line and in metadata, which takes printable ASCII only: a short token keeps both safe.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID_RULE = "must be 1 to 128 characters, each a letter, digit, '.', '_', ':' or '-'"


def is_request_id(value: str) -> bool:
    """Whether `value` is a request id a caller may choose (the `x-request-id` and `request_id` rule)."""
    return _REQUEST_ID.fullmatch(value) is not None


def request_id_from(caller_value: str | None) -> str:
    """The caller's request id when it is a short token, else a new one (it lands in every log line)."""
    if caller_value and is_request_id(caller_value):
        return caller_value
    return uuid.uuid4().hex


def call_request_id(body_value: str, header_value: str | None) -> str:
    """The id a call is logged and answered under: the request's own `request_id` field when it is a
    valid token, else the caller's `x-request-id`, else a new one.

    The body field wins because it is the idempotency key the response echoes; a proxy may add its own
    `x-request-id`. An invalid body field is refused by validation, under the header's (or a new) id.
    """
    if body_value and is_request_id(body_value):
        return body_value
    return request_id_from(header_value)


def adopt_request_id(request_id: str) -> None:
    """Makes `request_id` the current call's id for the log lines that follow."""
    request_id_var.set(request_id)


def current_request_id() -> str:
    """The id of the call being served in this task, or "-" outside a call."""
    return request_id_var.get()


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id`: the id of the call the line was logged in."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


# The span attribute that carries the request id on every span, so a trace leads to the call's log lines.
REQUEST_ID_SPAN_ATTRIBUTE = "adgen.request_id"
LOG_FORMATS = ("text", "json")
# The JSON line's fixed fields; a call's last line adds method, outcome, code, reason and duration_s.
_JSON_FIELDS = ("asctime", "levelname", "name", "message", "request_id", "trace_id")


class TraceIdFilter(logging.Filter):
    """Adds `record.trace_id`: the OpenTelemetry trace of the current span, or "-" when none is recording."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = _current_trace_id()
        return True


def _current_trace_id() -> str:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else "-"


def configure_logging(level: str, log_format: str = "text") -> None:
    """Sends logs to stderr: `time level [request-id] logger: message`, or one JSON object a line.

    JSON lines carry `request_id` and `trace_id` on every line, and the fields a call's last line is
    logged with, so a log pipeline can filter by outcome or duration without parsing messages.
    """
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.addFilter(TraceIdFilter())
    handler.setFormatter(_formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            _JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )
    return logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
