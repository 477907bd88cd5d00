"""One JSON object per log line, with extra fields and exceptions."""

from __future__ import annotations

import io
import json
import logging

import pytest

from fashionsearch.logs import configure_logging


@pytest.fixture
def restore_root_logger():  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_with_extra_fields_and_exceptions(restore_root_logger: None) -> None:
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    log = logging.getLogger("services.example")
    log.debug("not shown")
    log.info("listening on %s", "[::]:50051", extra={"listen_port": 50051, "model": "m:1"})
    try:
        raise ValueError("broken")
    except ValueError:
        log.exception("failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "INFO" and first["logger"] == "services.example"
    assert first["message"] == "listening on [::]:50051"
    assert first["listen_port"] == 50051 and first["model"] == "m:1"
    assert first["time"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError: broken" in second["exception"]


def test_configuring_twice_keeps_one_handler(restore_root_logger: None) -> None:
    configure_logging()
    configure_logging("WARNING")
    assert len(logging.getLogger().handlers) == 1
    assert logging.getLogger().level == logging.WARNING
