"""One JSON object per log line, with extra fields and exceptions."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from fashionsearch.logs import configure_logging, request_id


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


def test_every_log_line_written_while_serving_carries_the_request_id(restore_root_logger: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    log = logging.getLogger("services.example")

    async def serve(rid: str) -> None:
        request_id.set(rid)
        log.info("in the handler")
        await asyncio.to_thread(log.info, "in a worker thread")  # to_thread copies the context

    log.info("before")

    async def both() -> None:
        await asyncio.gather(serve("first"), serve("second"))

    asyncio.run(both())
    log.info("after")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line.get("request_id") for line in lines if line["message"] == "before"] == [None]
    assert [line.get("request_id") for line in lines if line["message"] == "after"] == [None]
    for message in ("in the handler", "in a worker thread"):
        assert sorted(line["request_id"] for line in lines if line["message"] == message) == ["first", "second"]


def test_a_lone_surrogate_anywhere_leaves_one_json_line(restore_root_logger: None, capsys) -> None:
    """A client can put "\\ud800" (valid JSON, not encodable text) in a payload field name; the log line must stay one
    JSON object on a strict UTF-8 stdout, with non-ASCII text kept readable otherwise."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    configure_logging("INFO", stream=stream)
    log = logging.getLogger("services.example")
    log.info("unknown payload field(s) %s", "na\ud800me", extra={"field": "\udcff"})
    log.info("café")
    lines = raw.getvalue().decode("utf-8").splitlines()
    assert len(lines) == 2, capsys.readouterr().err[-2000:]
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "unknown payload field(s) na\ud800me" and first["field"] == "\udcff"
    assert second["message"] == "café" and "café" in lines[1]
