"""Oversized messages and bodies are refused by the transport limits, and the gateway keeps serving.

The gateway's gRPC receive limit is GATEWAY_MAX_IMAGE_BYTES plus room for framing; anything larger ends as
RESOURCE_EXHAUSTED in the transport, before a servicer sees it. HTTP bodies over GATEWAY_HTTP_MAX_BODY_BYTES are
refused from their Content-Length before the body is sent (tests/integration/test_gateway_http.py checks the
streamed cases). Calls beyond GATEWAY_MAX_CONCURRENT_RPCS in progress are refused at once with RESOURCE_EXHAUSTED,
so in-flight images cannot pile up without bound.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from gateway_stack import Stack, jpeg, start_stack
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from fashionsearch.v1 import gateway_pb2
from services.gateway.bootstrap import max_message_bytes
from testkit.process_stack import free_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
MAX_IMAGE = 64 * 1024
MAX_BODY = 128 * 1024
GOOD = jpeg((30, 150, 60))


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    running = start_stack(
        tmp_path_factory.mktemp("limits"),
        max_image_bytes=MAX_IMAGE,
        http_port=free_port(),
        http_max_body_bytes=MAX_BODY,
    )
    yield running
    running.close()


def still_serves(stack: Stack) -> None:
    reply = stack.stub.Search(gateway_pb2.SearchRequest(image=GOOD), timeout=10)
    assert reply.attributes


def test_message_over_the_receive_limit_is_resource_exhausted(stack):
    limit = max_message_bytes(stack.gateway_settings)
    for size in (limit + 1, 8 * 1024 * 1024, 40 * 1024 * 1024):
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            stack.stub.Search(gateway_pb2.SearchRequest(image=b"\xff" * size), timeout=30)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
        assert str(limit) in refused.value.details()
        assert time.monotonic() - started < 10
    still_serves(stack)


def test_image_between_the_image_limit_and_the_message_limit_is_invalid_argument(stack):
    with pytest.raises(grpc.RpcError) as refused:
        stack.stub.Search(gateway_pb2.SearchRequest(image=b"\xff" * (MAX_IMAGE + 1)), timeout=10)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert str(MAX_IMAGE) in refused.value.details()


def test_oversized_item_in_an_upsert_stream_ends_the_stream(stack):
    items = [
        gateway_pb2.CatalogueItem(id=1, image=GOOD, payload=gateway_pb2.ItemPayload(sub_category="Topwear")),
        gateway_pb2.CatalogueItem(id=2, image=b"\xff" * (4 * 1024 * 1024)),
    ]
    with pytest.raises(grpc.RpcError) as refused:
        stack.upsert(items)
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    still_serves(stack)


def test_http_body_declared_over_the_limit_is_refused_before_it_is_sent(stack):
    """Only the headers go out, declaring 10 GB: the answer is 413 at once, nothing waits for the body."""
    port = stack.gateway_settings.http_port
    with socket.create_connection((HOST, port), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/search HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )
        head = conn.recv(4096).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head
    still_serves(stack)


def test_calls_over_the_concurrency_limit_are_resource_exhausted_at_once(tmp_path):
    limited = start_stack(tmp_path, max_concurrent_rpcs=1)
    release = threading.Event()

    def held_open():
        release.wait(30)
        yield gateway_pb2.UpsertItemsRequest(
            item=gateway_pb2.CatalogueItem(id=5, image=GOOD, payload=gateway_pb2.ItemPayload(sub_category="Topwear"))
        )

    try:
        stream = limited.stub.UpsertItems(held_open(), timeout=30)
        time.sleep(0.5)  # the stream is now the one call in progress
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            limited.stub.Search(gateway_pb2.SearchRequest(image=GOOD), timeout=10)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 2
        release.set()
        assert [r.upserted for r in stream] == [True]
        still_serves(limited)
    finally:
        release.set()
        limited.close()


def _noise_png(side: int, seed: int) -> bytes:
    """A PNG that does not compress: about 3 * side**2 bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def test_every_image_the_gateway_accepts_can_be_stored_however_many_come_together(tmp_path):
    """Each image is under the image limit, together they are far over the gateway-to-embedder message limit: the
    gateway splits its calls to the embedder by bytes, on the upsert stream and on POST /v1/items alike."""
    limited = start_stack(tmp_path, max_image_bytes=MAX_IMAGE, http_port=free_port(), http_max_body_bytes=1 << 20)
    try:
        images = [_noise_png(140, seed) for seed in range(9)]
        assert all(50_000 < len(image) <= MAX_IMAGE for image in images)
        assert sum(len(image) for image in images[:6]) > 2 * max_message_bytes(limited.gateway_settings)
        payload = gateway_pb2.ItemPayload(sub_category="Topwear", gender="Men", master_category="Apparel")
        replies = limited.upsert(
            [gateway_pb2.CatalogueItem(id=i + 1, image=image, payload=payload) for i, image in enumerate(images[:6])]
        )
        assert [r.error.message for r in replies if not r.upserted] == []

        body = {
            "items": [
                {"id": 100 + i, "image_base64": base64.b64encode(image).decode(), "payload": {"gender": "Men"}}
                for i, image in enumerate(images[6:])
            ]
        }
        request = urllib.request.Request(
            f"http://{HOST}:{limited.gateway_settings.http_port}/v1/items",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            results = json.loads(response.read())["results"]
        assert [r.get("error") for r in results] == [None, None, None], results
        assert limited.stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=10).item_count == 9
    finally:
        limited.close()


def _http_head(port: int, method: str, path: str, length: int, body: bytes = b"") -> socket.socket:
    """A connection that has sent a request's headers (declaring `length` body bytes) and `body`, and waits."""
    conn = socket.create_connection((HOST, port), timeout=10)
    conn.sendall(
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
        + body
    )
    return conn


def _answer(conn: socket.socket) -> str:
    return conn.recv(4096).decode("latin-1")


def test_one_cap_on_requests_in_flight_for_grpc_and_http_answered_with_a_retry_hint(tmp_path):
    """GATEWAY_MAX_CONCURRENT_RPCS counts gRPC calls and HTTP requests together; beyond it, both protocols are
    answered at once (503 + Retry-After, RESOURCE_EXHAUSTED + retry trailers), HTTP before its body is read."""
    limited = start_stack(tmp_path, max_concurrent_rpcs=1, http_port=free_port())
    port = limited.gateway_settings.http_port
    try:
        # An HTTP upload in progress (half its body sent) holds the one place...
        upload = _http_head(port, "POST", "/v1/search", len(GOOD), GOOD[: len(GOOD) // 2])
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as refused:
            limited.stub.Search(gateway_pb2.SearchRequest(image=GOOD), timeout=10)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(refused.value.trailing_metadata())
        assert trailers["retry-after"] == "1" and trailers["grpc-retry-pushback-ms"] == "1000"
        assert "GATEWAY_MAX_CONCURRENT_RPCS" in refused.value.details()
        # ...and another HTTP request is refused from its headers: its body is never read.
        with _http_head(port, "POST", "/v1/search", 1_000_000) as other:
            head = _answer(other)
        assert head.startswith("HTTP/1.1 503") and "Retry-After: 1" in head, head
        # Health checks are not counted: an overloaded gateway still answers its probes.
        with _http_head(port, "GET", "/healthz", 0) as probe:
            assert _answer(probe).startswith("HTTP/1.1 200")
        upload.sendall(GOOD[len(GOOD) // 2 :])
        assert _answer(upload).startswith("HTTP/1.1 200")
        upload.close()
        still_serves(limited)  # the place is free again
    finally:
        limited.close()


def test_bytes_in_flight_are_capped_across_requests(tmp_path):
    limited = start_stack(tmp_path, max_bytes_in_flight=300_000, http_port=free_port())
    port = limited.gateway_settings.http_port
    try:
        upload = _http_head(port, "POST", "/v1/search", 200_000, b"\x89PNG")  # 200 KB declared, in flight
        time.sleep(0.5)
        with _http_head(port, "POST", "/v1/search", 150_000) as other:  # would make 350 KB
            assert _answer(other).startswith("HTTP/1.1 503")
        with pytest.raises(grpc.RpcError) as refused:  # a gRPC message counts its bytes too
            limited.stub.Search(gateway_pb2.SearchRequest(image=b"\xff" * 120_000), timeout=10)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        still_serves(limited)  # a catalogue-sized photo still fits
        upload.close()
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as invalid:  # admitted once the upload is gone (and then not an image)
            limited.stub.Search(gateway_pb2.SearchRequest(image=b"\xff" * 120_000), timeout=10)
        assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    finally:
        limited.close()


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The gateway's GET /metrics: sample (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _moved(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_refusals_at_the_cap_are_counted_as_refused_by_a_limit_not_as_errors(tmp_path):
    """The cap's 503 is "not now", not "a dependency is down": over HTTP (from the headers, or answering
    Expect: 100-continue) and gRPC alike it moves fashionsearch_requests_refused_total{reason="limit"}, never
    fashionsearch_errors_total{kind="unavailable"}. And /metrics itself is not counted: it answers while full."""
    port = free_port()
    limited = start_stack(tmp_path, max_concurrent_rpcs=1, http_port=port, metrics_port=port)
    try:
        before = _scrape(port)
        upload = _http_head(port, "POST", "/v1/search", len(GOOD), GOOD[: len(GOOD) // 2])  # holds the one place
        time.sleep(0.5)
        with _http_head(port, "POST", "/v1/search", 1_000_000) as other:
            assert _answer(other).startswith("HTTP/1.1 503")
        with socket.create_connection((HOST, port), timeout=10) as expecting:
            expecting.sendall(
                b"POST /v1/search HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
                b"Content-Length: 1000\r\nExpect: 100-continue\r\nx-request-id: expect-refused-1\r\n\r\n"
            )
            head = _answer(expecting)
        assert head.startswith("HTTP/1.1 503") and "Retry-After: 1" in head, head
        assert "x-request-id: expect-refused-1" in head.lower(), head
        with pytest.raises(grpc.RpcError) as refused:
            limited.stub.Search(gateway_pb2.SearchRequest(image=GOOD), timeout=10)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # An aborted call's status leaves before its interceptor counts it: give the count a moment.
        deadline = time.monotonic() + 5
        after = _scrape(port)
        while _moved(before, after, "fashionsearch_requests_refused_total", reason="limit") < 3:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
            after = _scrape(port)
        assert _moved(before, after, "fashionsearch_requests_refused_total", reason="limit") == 3
        assert _moved(before, after, "fashionsearch_errors_total", kind="unavailable") == 0
        assert _moved(before, after, "http_server_requests_total", method="POST", route="/v1/search", code="503") == 2
        assert (
            _moved(
                before,
                after,
                "grpc_server_handled_total",
                grpc_service="fashionsearch.v1.Gateway",
                grpc_method="Search",
                grpc_code="RESOURCE_EXHAUSTED",
            )
            == 1
        )
        upload.sendall(GOOD[len(GOOD) // 2 :])
        assert _answer(upload).startswith("HTTP/1.1 200")
        upload.close()
    finally:
        limited.close()
