"""Structured logs: one JSON object per line on stdout, configured once in each service's main.

Every line written while a request is being served carries its `request_id` (set by fashionsearch.interceptors for
gRPC and by the gateway's HTTP middleware), so one search can be followed through the three services' logs.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

#: The header (HTTP) and metadata key (gRPC) that carries a request id, both ways.
REQUEST_ID_HEADER = "x-request-id"
#: The id of the request being served in this task (and the threads it hands work to), or None.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# What a caller may choose as an id: one, short, and nothing that could forge or break a log line. A call made on
# behalf of several requests (the gateway's batch calls) carries a batch id of its own, logged with its members
# where the batch is made: a list of ids would let one caller's long ids push a batch's metadata past gRPC's limit.
_ACCEPTABLE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_metadata() -> tuple[tuple[str, str], ...] | None:
    """gRPC metadata passing the request id being served on to a call this service makes (None outside a request)."""
    current = request_id.get()
    return None if current is None else ((REQUEST_ID_HEADER, current),)


def accept_request_id(incoming: str | None) -> str:
    """The caller's request id when it is an acceptable one (one id of up to 128 letters, digits, '.', '_', ':',
    '-'), else a new one."""
    if incoming is not None and _ACCEPTABLE_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def new_batch_id() -> str:
    """The id of a call made on behalf of several requests: an acceptable request id, told apart by its prefix."""
    return "batch-" + uuid.uuid4().hex


# Attributes every LogRecord has; anything else was passed with `extra=` and goes into the JSON object.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            entry["request_id"] = current
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = json.dumps(entry, default=str, ensure_ascii=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (a client's "\ud800" in JSON) cannot be written as UTF-8: escaped, the line stays one
            # JSON object instead of a lost line and a traceback.
            line = json.dumps(entry, default=str, ensure_ascii=True)
        return line


def configure_logging(level: str | int = "INFO", stream: Any = None) -> None:
    """Send every logger's records as JSON lines to stdout (or `stream`); replaces existing root handlers."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
