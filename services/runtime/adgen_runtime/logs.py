"""Logging with the request id of the current call on every line."""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_CALLER_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_from(caller_value: str | None) -> str:
    """The caller's request id when it is a short token, else a new one (it lands in every log line)."""
    if caller_value and _CALLER_REQUEST_ID.fullmatch(caller_value):
        return caller_value
    return uuid.uuid4().hex


def current_request_id() -> str:
    """The id of the call being served in this task, or "-" outside a call."""
    return request_id_var.get()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: str) -> None:
    """Sends logs to stderr as `time level [request-id] logger: message`."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
