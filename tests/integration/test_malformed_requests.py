"""A request that is not a valid protobuf message, to each of the three services: INVALID_ARGUMENT, one WARNING per
interval without a traceback, and the gateway's API key checked before the bytes are parsed.

grpc answers a request its deserializer cannot parse with UNKNOWN and logs an ERROR with a traceback per call:
2,000 such calls left 1.6 MB of tracebacks in 1.1 s, before the API-key check.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest

from testkit.gateway_stack import HOST

pytestmark = pytest.mark.integration

READ = "read-key-0123456789abcdef"
WRITE = "write-key-0123456789abcdef"
GARBAGE = b"\xff" * 5  # a field tag whose varint never ends
BAD_UTF8 = b"\x0a\x02\xff\xfe"  # field 1 (query, a string) holding bytes that are not UTF-8
CALLS = 20


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, Any]:
    return {
        "text_model": True,
        "read_api_keys": (READ,),
        "write_api_keys": (WRITE,),
        "allow_unauthenticated_writes": False,
    }


def _unary(port: int, method: str, payload: bytes, key: str | None = None) -> grpc.RpcError:
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        with pytest.raises(grpc.RpcError) as failed:
            channel.unary_unary(method)(payload, timeout=10, metadata=metadata)
    return failed.value


def test_malformed_requests_are_invalid_argument_with_one_warning_and_no_traceback(stack, caplog):
    caplog.set_level(logging.INFO)
    calls = [
        (stack.classifier.port, "/fashionsearch.v1.Classifier/Classify", GARBAGE),
        (stack.embedder.port, "/fashionsearch.v1.Embedder/Embed", GARBAGE),
        (stack.embedder.port, "/fashionsearch.v1.Embedder/EmbedText", BAD_UTF8),
        (stack.gateway.port, "/fashionsearch.v1.Gateway/Search", GARBAGE),
        (stack.gateway.port, "/fashionsearch.v1.Gateway/SearchText", BAD_UTF8),
    ]
    for port, method, payload in calls:
        for _ in range(CALLS):
            error = _unary(port, method, payload, READ)
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (method, error.code(), error.details())
            assert "not a valid" in error.details(), error.details()
    # The services' and grpc's own loggers (asyncio may report tasks of servers other tests left behind).
    ours = [r for r in caplog.records if r.name.startswith(("fashionsearch", "services", "grpc"))]
    assert not [r for r in ours if r.levelno >= logging.ERROR or r.exc_info], caplog.text[:3000]
    warned = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warned) == len(calls), warned  # one per method, not one per call


def test_a_malformed_upsert_stream_message_is_invalid_argument(stack):
    with grpc.insecure_channel(f"{HOST}:{stack.gateway.port}") as channel:
        call = channel.stream_stream("/fashionsearch.v1.Gateway/UpsertItems")
        with pytest.raises(grpc.RpcError) as failed:
            list(call(iter([GARBAGE]), timeout=10, metadata=(("authorization", f"Bearer {WRITE}"),)))
    assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT, failed.value.details()


def test_the_api_key_is_checked_before_the_request_is_parsed(stack):
    assert _unary(stack.gateway.port, "/fashionsearch.v1.Gateway/Search", GARBAGE).code() is (
        grpc.StatusCode.UNAUTHENTICATED
    )
    error = _unary(stack.gateway.port, "/fashionsearch.v1.Gateway/DeleteItems", GARBAGE, READ)
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
