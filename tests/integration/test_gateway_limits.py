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
import select
import socket
import threading
import time
import urllib.request
from typing import Any

import grpc
import h2.config
import h2.connection
import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from fashionsearch.v1 import gateway_pb2
from services.embedder import server as embedder_server
from services.embedder.model import OnnxEmbedder
from services.gateway.bootstrap import max_message_bytes
from testkit.gated_model import Gated
from testkit.gateway_stack import Stack, jpeg, start_stack
from testkit.process_stack import free_port
from testkit.waiting import DEADLINE_S, wait_until

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
MAX_IMAGE = 64 * 1024
MAX_BODY = 128 * 1024
GOOD = jpeg((30, 150, 60))


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, Any]:
    return {"max_image_bytes": MAX_IMAGE, "http_port": free_port(), "http_max_body_bytes": MAX_BODY}


class GatedEmbeds(Gated):
    """Gated, also for the batch RPC: a search or upsert waits inside the embedder while the gate is closed."""

    def embed(self, images):  # type: ignore[no-untyped-def]
        return self.run(len(images), self.real.embed, images)


def gated_stack(tmp_path, **overrides) -> tuple[Stack, GatedEmbeds]:  # type: ignore[no-untyped-def]
    """A stack whose embedder holds every call at a gate while the test keeps it closed: a call in progress that
    holds its place in the gateway for as long as the test needs."""
    models: list[GatedEmbeds] = []

    async def start(settings):  # type: ignore[no-untyped-def]
        models.append(GatedEmbeds(OnnxEmbedder.from_dir(settings.model_dir)))
        return await embedder_server.start(settings, models[0])

    return start_stack(tmp_path, embedder_start=start, **overrides), models[0]


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
    limited, model = gated_stack(tmp_path, max_concurrent_rpcs=1)
    item = gateway_pb2.CatalogueItem(id=5, image=GOOD, payload=gateway_pb2.ItemPayload(sub_category="Topwear"))
    try:
        model.gate.clear()
        model.entered.clear()
        stream = limited.stub.UpsertItems(iter([gateway_pb2.UpsertItemsRequest(item=item)]), timeout=30)
        assert model.entered.wait(DEADLINE_S)  # the stream's item is inside the embedder: the one call in progress
        started, timeout_s = time.monotonic(), 20.0
        with pytest.raises(grpc.RpcError) as refused:
            limited.stub.Search(gateway_pb2.SearchRequest(image=GOOD), timeout=timeout_s)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < timeout_s / 2  # refused at once, not queued behind the held call
        model.gate.set()
        assert [r.upserted for r in stream] == [True]
        still_serves(limited)
    finally:
        model.gate.set()
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
    limited, model = gated_stack(tmp_path, max_concurrent_rpcs=1, http_port=free_port())
    port = limited.gateway_settings.http_port
    try:
        # An HTTP search being served (held inside the embedder) holds the one place...
        model.gate.clear()
        model.entered.clear()
        search = _http_head(port, "POST", "/v1/search", len(GOOD), GOOD)
        assert model.entered.wait(10)
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
        model.gate.set()
        assert _answer(search).startswith("HTTP/1.1 200")
        search.close()
        still_serves(limited)  # the place is free again
    finally:
        model.gate.set()
        limited.close()


def _search_code(stack: Stack, image: bytes) -> grpc.StatusCode:
    try:
        stack.stub.Search(gateway_pb2.SearchRequest(image=image), timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _refused_from_headers(port: int, length: int) -> bool:
    """Whether a request declaring `length` body bytes is refused from its headers now. It sends no body, so it
    reserves nothing: a request that is let in waits for its body, and is closed here after a while. The while is
    seconds, not a fraction of one: a refusal that took longer to arrive on a busy machine read as "let in", and
    every poll of wait_until missed it."""
    with _http_head(port, "POST", "/v1/search", length) as probe:
        probe.settimeout(3)
        try:
            return _answer(probe).startswith("HTTP/1.1 503")
        except TimeoutError:
            return False


def test_bytes_in_flight_are_capped_across_requests(tmp_path):
    """A body's bytes count as they arrive: 199,999 of an upload's 200,000 bytes in, a request declaring 150 KB
    more is refused from its headers and a 120 KB gRPC message at once; a small photo still fits."""
    # A body timeout far above the waits below: the held upload must not be timed out by a slow machine.
    limited = start_stack(tmp_path, max_bytes_in_flight=300_000, http_port=free_port(), http_body_timeout_s=120)
    port = limited.gateway_settings.http_port
    try:
        upload = _http_head(port, "POST", "/v1/search", 200_000, b"\x89PNG" + b"\0" * 199_995)
        # Polled with requests that reserve nothing: a poll that took bytes could make the upload the one refused.
        wait_until(lambda: _refused_from_headers(port, 150_000), "the upload's bytes to be counted")
        assert _search_code(limited, b"\xff" * 120_000) is grpc.StatusCode.RESOURCE_EXHAUSTED
        still_serves(limited)  # a catalogue-sized photo still fits
        upload.close()
        # Admitted once the upload is gone (and then not an image).
        wait_until(lambda: _search_code(limited, b"\xff" * 120_000) is grpc.StatusCode.INVALID_ARGUMENT, "the release")
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
    limited, model = gated_stack(tmp_path, max_concurrent_rpcs=1, http_port=port, metrics_port=port)
    try:
        before = _scrape(port)
        model.gate.clear()
        model.entered.clear()
        upload = _http_head(port, "POST", "/v1/search", len(GOOD), GOOD)  # held in the embedder: the one place
        assert model.entered.wait(10)
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
        grpc_refused = {
            "grpc_service": "fashionsearch.v1.Gateway",
            "grpc_method": "Search",
            "grpc_code": "RESOURCE_EXHAUSTED",
        }

        def counted(after: dict[Any, float]) -> bool:
            return (
                _moved(before, after, "fashionsearch_requests_refused_total", reason="limit") >= 3
                and _moved(before, after, "grpc_server_handled_total", **grpc_refused) >= 1
            )

        # An aborted call's status leaves before its interceptors count it: wait for both counts.
        deadline = time.monotonic() + 5
        after = _scrape(port)
        while not counted(after) and time.monotonic() < deadline:
            time.sleep(0.05)
            after = _scrape(port)
        assert _moved(before, after, "fashionsearch_requests_refused_total", reason="limit") == 3
        assert _moved(before, after, "fashionsearch_errors_total", kind="unavailable") == 0
        assert _moved(before, after, "http_server_requests_total", method="POST", route="/v1/search", code="503") == 2
        assert _moved(before, after, "grpc_server_handled_total", **grpc_refused) == 1
        model.gate.set()
        assert _answer(upload).startswith("HTTP/1.1 200")
        upload.close()
    finally:
        model.gate.set()
        limited.close()


def _gauge(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _read_until_closed(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's own timeout bounds the wait)."""
    received = b""
    while chunk := conn.recv(4096):
        received += chunk
    return received


def test_bodies_that_never_arrive_hold_no_place_and_no_bytes_and_are_timed_out(tmp_path):
    """Connections that send only headers declaring a large body (or one byte of it), then nothing: the gateway
    goes on serving everyone else at once, over gRPC and HTTP, and answers each of them 408 once nothing came for
    GATEWAY_HTTP_BODY_TIMEOUT_S (nginx's client_body_timeout). Before, each held a place and its declared bytes
    until the client went away: 19 such connections made every photo search fail for 60 s."""
    # Small, so the test sees them act; the header timeout less so, since it also closes a slow machine's own
    # idle keep-alive connections.
    body_timeout_s, header_timeout_s = 0.3, 2.0
    limited = start_stack(
        tmp_path,
        max_concurrent_rpcs=3,
        max_bytes_in_flight=2_800_000,  # the three declared bodies would leave no room for 200 KB more
        http_port=free_port(),
        http_body_timeout_s=body_timeout_s,
        http_header_timeout_s=header_timeout_s,
    )
    port = limited.gateway_settings.http_port
    silent: list[socket.socket] = []
    try:
        in_flight = _gauge("http_server_requests_in_flight")
        for first_bytes in (b"", b"\x89", b""):
            silent.append(_http_head(port, "POST", "/v1/search", 900_000, first_bytes))
        started = time.monotonic()
        wait_until(lambda: _gauge("http_server_requests_in_flight") >= in_flight + 3, "the three requests to arrive")
        still_serves(limited)  # a place and the bytes of a photo are free
        with pytest.raises(grpc.RpcError) as invalid:  # 200 KB are admitted (and then not an image)
            limited.stub.Search(gateway_pb2.SearchRequest(image=b"\xff" * 200_000), timeout=10)
        assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        with urllib.request.urlopen(f"http://{HOST}:{port}/v1/stats", timeout=10) as answer:
            assert answer.status == 200
        for conn in silent:
            conn.settimeout(30 * body_timeout_s + 10)
            answer = _read_until_closed(conn).decode("latin-1")
            assert answer.startswith("HTTP/1.1 408"), answer[:300]
            assert "GATEWAY_HTTP_BODY_TIMEOUT_S" in answer
        assert time.monotonic() - started >= body_timeout_s
        # Headers that never end are cut off too, after the header timeout (aiohttp's keep-alive timer).
        with socket.create_connection((HOST, port), timeout=30 * header_timeout_s + 10) as slow:
            slow.sendall(b"POST /v1/search HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n")
            assert _read_until_closed(slow) == b""
        wait_until(lambda: _gauge("http_server_requests_in_flight") == in_flight, "the requests to end")
        still_serves(limited)
    finally:
        for conn in silent:
            conn.close()
        limited.close()


def test_a_body_trickled_just_under_the_body_timeout_is_cut_off_by_the_minimum_rate(tmp_path):
    """A client that sends a few bytes before each body timeout would hold its connection and its bytes for as long
    as it liked (at 20 bytes a 9 s, a 10 MB body for two months). After the body timeout the whole body must come
    at GATEWAY_HTTP_BODY_MIN_RATE_BPS: answered 408, with the rule named, long before it is all sent."""
    body_timeout_s, min_rate = 0.3, 1000
    limited = start_stack(
        tmp_path, http_port=free_port(), http_body_timeout_s=body_timeout_s, http_body_min_rate_bps=min_rate
    )
    port = limited.gateway_settings.http_port
    try:
        with _http_head(port, "POST", "/v1/search", 100_000) as trickle:
            sent, answered = 0, False
            while not answered and sent < 20_000:  # at most 20 s of trickling
                trickle.sendall(b"\x89" * 20)  # 20 bytes each 0.05 s: 400 bytes a second, gaps far under 0.3 s
                sent += 20
                answered = bool(select.select([trickle], [], [], 0.05)[0])
            assert answered, f"no answer after {sent} of 100000 bytes"
            trickle.settimeout(10)
            answer = _read_until_closed(trickle).decode("latin-1")
        assert answer.startswith("HTTP/1.1 408"), answer[:300]
        assert "GATEWAY_HTTP_BODY_MIN_RATE_BPS" in answer and "too slowly" in answer
        assert sent < 100_000
        still_serves(limited)
    finally:
        limited.close()


def test_idle_upsert_streams_hold_no_place_and_are_ended(tmp_path):
    """UpsertItems streams that send nothing: a search goes through at once, and each stream ends with
    DEADLINE_EXCEEDED once it sent nothing for GATEWAY_STREAM_IDLE_TIMEOUT_S. Before, each held a place and one
    message's worth of the bytes in flight for as long as it stayed open (25 reserved 98% of the bytes)."""
    # Long enough that the test sees both streams open (and searches past them) before they are ended, however busy
    # the machine; 0.3 s was not, under load.
    idle_timeout_s = 3.0
    limited = start_stack(tmp_path, max_concurrent_rpcs=2, stream_idle_timeout_s=idle_timeout_s)
    release = threading.Event()

    def nothing_yet():
        release.wait(60)
        yield from ()

    try:
        labels = {"grpc_service": "fashionsearch.v1.Gateway", "grpc_method": "UpsertItems"}
        in_flight = _gauge("grpc_server_requests_in_flight", **labels)
        started = time.monotonic()
        streams = [limited.stub.UpsertItems(nothing_yet(), timeout=60) for _ in range(2)]
        wait_until(
            lambda: _gauge("grpc_server_requests_in_flight", **labels) >= in_flight + 2, "the two streams to start"
        )
        still_serves(limited)
        for stream in streams:
            with pytest.raises(grpc.RpcError) as ended:
                list(stream)
            assert ended.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED, ended.value.details()
            assert "GATEWAY_STREAM_IDLE_TIMEOUT_S" in ended.value.details()
        assert time.monotonic() - started >= idle_timeout_s
        # A stream that keeps sending is served as before.
        replies = limited.upsert([gateway_pb2.CatalogueItem(id=7, image=GOOD, payload=gateway_pb2.ItemPayload())])
        assert [r.upserted for r in replies] == [True]
    finally:
        release.set()
        limited.close()


def test_upsert_streams_larger_than_the_bytes_in_flight_wait_for_their_answers_instead_of_failing(tmp_path):
    """A stream's messages are held until answered, and the gateway reads ahead of its answers: two clients
    streaming more image bytes together than GATEWAY_MAX_BYTES_IN_FLIGHT are slowed down (a stream's next message
    is taken once one of its own is answered), not refused halfway."""
    limited = start_stack(tmp_path, max_bytes_in_flight=300_000)
    try:
        images = [_noise_png(180, seed) for seed in range(12)]
        assert all(90_000 < len(image) < 300_000 for image in images)
        payload = gateway_pb2.ItemPayload(sub_category="Topwear", gender="Men", master_category="Apparel")
        items = [gateway_pb2.CatalogueItem(id=i + 1, image=image, payload=payload) for i, image in enumerate(images)]
        results: dict[int, object] = {}

        def stream(number: int) -> None:
            try:
                results[number] = [(r.id, r.upserted) for r in limited.upsert(items[number * 6 : number * 6 + 6])]
            except grpc.RpcError as error:
                results[number] = error.code()

        threads = [threading.Thread(target=stream, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert results == {n: [(n * 6 + i + 1, True) for i in range(6)] for n in range(2)}
        still_serves(limited)  # and nothing is left held
    finally:
        limited.close()


def _stalled_grpc_calls(port: int, calls: int) -> tuple[socket.socket, h2.connection.H2Connection]:
    """One HTTP/2 connection carrying `calls` Search calls that each sent headers and the first 5 bytes of a 1 MB
    message, then nothing: a gRPC client whose requests never arrive."""
    conn = socket.create_connection((HOST, port), timeout=10)
    http2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    http2.initiate_connection()
    for _ in range(calls):
        stream = http2.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", "/fashionsearch.v1.Gateway/Search")]
        headers += [(":authority", HOST), ("content-type", "application/grpc"), ("te", "trailers")]
        http2.send_headers(stream, headers)
        http2.send_data(stream, b"\x00" + (1_000_000).to_bytes(4, "big"))
    conn.sendall(http2.data_to_send())
    return conn, http2


def test_grpc_calls_whose_requests_never_arrive_hold_no_place(tmp_path):
    """gRPC's own cap on calls in progress counted calls still waiting for their request: 16 stalled calls on one
    connection (twice GATEWAY_MAX_CONCURRENT_RPCS) made every other gRPC call fail. The gateway's admission counts a
    call once its request is all there, and a connection carries at most GATEWAY_MAX_STREAMS_PER_CONNECTION calls."""
    limited = start_stack(tmp_path, max_concurrent_rpcs=8, max_streams_per_connection=20)
    stalled, http2 = _stalled_grpc_calls(limited.gateway.port, 20)
    try:
        # The stalled calls went out first on their connection; the server has them once it answered its settings.
        http2.receive_data(stalled.recv(65536))
        assert http2.remote_settings.max_concurrent_streams == 20  # what one connection may carry at once
        still_serves(limited)
        still_serves(limited)
    finally:
        stalled.close()
        limited.close()
