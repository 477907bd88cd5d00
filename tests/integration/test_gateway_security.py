"""API keys and TLS on a real in-process gateway (tiny models, Qdrant Edge in tmp_path), over gRPC and HTTP."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fashionsearch.healthcheck import is_serving
from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc
from services.gateway.security import client_metadata
from testkit.gateway_stack import jpeg, start_stack
from testkit.process_stack import free_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
READ = "read-key-0123456789abcdef"
WRITE = "write-key-0123456789abcdef"
IMAGE = jpeg((200, 30, 30))


def item(item_id: int) -> gateway_pb2.CatalogueItem:
    return gateway_pb2.CatalogueItem(
        id=item_id,
        image=IMAGE,
        payload=gateway_pb2.ItemPayload(name=f"Red Shirt {item_id}", sub_category="Topwear", gender="Men"),
    )


def upsert(stub: gateway_pb2_grpc.GatewayStub, key: str | None, *ids: int) -> list[gateway_pb2.UpsertItemsResponse]:
    requests = (gateway_pb2.UpsertItemsRequest(item=item(i)) for i in ids)
    return list(stub.UpsertItems(requests, timeout=30, metadata=client_metadata(key)))


def http(port: int, method: str, path: str, key: str | None = None, body: bytes | None = None, **kw) -> tuple:
    headers = {"Content-Type": "image/jpeg"} if body is not None else {}
    if key is not None:
        headers["X-API-Key"] = key
    scheme = "https" if "context" in kw else "http"
    request = urllib.request.Request(f"{scheme}://localhost:{port}{path}", data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30, **kw) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, Any]:
    return {
        "read_api_keys": (READ,),
        "write_api_keys": (WRITE,),
        "allow_unauthenticated_writes": False,
        "http_port": free_port(),
    }


def test_grpc_writes_need_a_write_key(stack):
    with pytest.raises(grpc.RpcError) as missing:
        upsert(stack.stub, None, 1)
    assert missing.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in missing.value.details()
    with pytest.raises(grpc.RpcError) as wrong:
        upsert(stack.stub, "not-the-key-0123456789", 1)
    assert wrong.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as read_only:
        upsert(stack.stub, READ, 1)
    assert read_only.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as delete:
        stack.stub.DeleteItems(gateway_pb2.DeleteItemsRequest(ids=[1]), timeout=10, metadata=client_metadata(READ))
    assert delete.value.code() is grpc.StatusCode.PERMISSION_DENIED
    batch = gateway_pb2.UpsertBatchRequest(items=[item(1)])
    for key, code in ((None, grpc.StatusCode.UNAUTHENTICATED), (READ, grpc.StatusCode.PERMISSION_DENIED)):
        with pytest.raises(grpc.RpcError) as batch_refused:
            stack.stub.UpsertBatch(batch, timeout=10, metadata=client_metadata(key))
        assert batch_refused.value.code() is code
    assert stack.stub.GetStats(gateway_pb2.GetStatsRequest(), metadata=client_metadata(READ)).item_count == 0

    assert all(r.upserted for r in upsert(stack.stub, WRITE, 1, 2))
    batch_reply = stack.stub.UpsertBatch(
        gateway_pb2.UpsertBatchRequest(items=[item(3)]), timeout=30, metadata=client_metadata(WRITE)
    )
    assert [(r.id, r.upserted) for r in batch_reply.results] == [(3, True)]
    reply = stack.stub.DeleteItems(gateway_pb2.DeleteItemsRequest(ids=[3]), metadata=client_metadata(WRITE))
    assert reply.item_count == 2


def test_grpc_reads_need_a_read_or_write_key_and_health_stays_open(stack):
    request = gateway_pb2.SearchRequest(image=IMAGE, filter_mode=gateway_pb2.FILTER_MODE_NONE)
    with pytest.raises(grpc.RpcError) as missing:
        stack.stub.Search(request, timeout=10)
    assert missing.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as listing:
        list(stack.stub.ListItems(gateway_pb2.ListItemsRequest(), timeout=10))
    assert listing.value.code() is grpc.StatusCode.UNAUTHENTICATED
    for key in (READ, WRITE):
        stack.stub.Search(request, timeout=10, metadata=[("x-api-key", key)])
    health = health_pb2_grpc.HealthStub(stack.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_http_applies_the_same_rule(stack):
    port = stack.gateway_settings.http_port
    status, body = http(port, "POST", "/v1/search?filter_mode=none", body=IMAGE)
    assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED", body
    assert http(port, "POST", "/v1/search?filter_mode=none", READ, body=IMAGE)[0] == 200
    status, body = http(port, "DELETE", "/v1/items/2", READ)
    assert status == 403 and body["error"]["code"] == "PERMISSION_DENIED", body
    assert http(port, "DELETE", "/v1/items/2", WRITE) == (200, {"item_count": 1})
    assert http(port, "GET", "/healthz")[0] == 200


def test_writes_are_refused_when_no_write_key_is_configured(tmp_path):
    closed = start_stack(tmp_path, allow_unauthenticated_writes=False)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            upsert(closed.stub, WRITE, 1)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "GATEWAY_WRITE_API_KEYS" in refused.value.details()
        search = closed.stub.Search(gateway_pb2.SearchRequest(image=IMAGE), timeout=10)  # reads stay open
        assert list(search.hits) == []
    finally:
        closed.close()


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
    except FileNotFoundError:
        pytest.skip("the openssl command is not installed")
    return cert, key


def test_tls_on_grpc_and_http(tmp_path):
    cert, key = self_signed(tmp_path)
    secured = start_stack(
        tmp_path, write_api_keys=(WRITE,), allow_unauthenticated_writes=False, http_port=free_port(),
        tls_cert_file=cert, tls_key_file=key,
    )  # fmt: skip
    try:
        port = secured.gateway.port
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            assert all(r.upserted for r in upsert(stub, WRITE, 7))
            assert [
                h.id
                for h in stub.Search(
                    gateway_pb2.SearchRequest(image=IMAGE, filter_mode=gateway_pb2.FILTER_MODE_NONE), timeout=10
                ).hits
            ] == [7]
        with grpc.insecure_channel(f"{HOST}:{port}") as plain:
            with pytest.raises(grpc.RpcError) as refused:
                gateway_pb2_grpc.GatewayStub(plain).GetStats(gateway_pb2.GetStatsRequest(), timeout=5)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        # The health probe that compose and the launcher use speaks TLS too when told to.
        assert is_serving(f"localhost:{port}", tls_ca=cert.read_bytes())
        assert not is_serving(f"localhost:{port}", timeout_s=1)

        context = ssl.create_default_context(cafile=str(cert))
        http_port = secured.gateway_settings.http_port
        status, body = http(http_port, "GET", "/v1/stats", context=context)
        assert status == 200 and body["item_count"] == 1
        with pytest.raises(OSError):  # URLError or the connection dropped: plain HTTP is not served
            urllib.request.urlopen(f"http://localhost:{http_port}/v1/stats", timeout=5)
    finally:
        secured.close()


def test_http_refuses_an_unauthorised_upload_before_its_body_is_sent(stack):
    """With `Expect: 100-continue`, a write without a valid key is answered 401 before any of the body goes out."""
    port = stack.gateway_settings.http_port
    with socket.create_connection((HOST, port), timeout=10) as conn:
        conn.sendall(
            b"PUT /v1/items/5 HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            b"Content-Length: 5000000\r\nExpect: 100-continue\r\n\r\n"
        )
        head = conn.recv(4096).decode("latin-1")
    assert head.startswith("HTTP/1.1 401"), head
    assert "UNAUTHENTICATED" in head


def test_a_malformed_request_leaves_one_short_log_line_and_no_key(stack, caplog):
    """aiohttp logs a request it cannot parse with its raw bytes; the gateway logs one line without them."""
    caplog.set_level(logging.DEBUG)
    port = stack.gateway_settings.http_port
    key = READ.encode()
    malformed = (
        b"GET /v1/stats HTTP/1.1\r\nHost: localhost\r\nAuthorization : Bearer " + key + b"\r\n\r\n",
        b"GET /v1/stats HTTP/1.1\nHost: localhost\nAuthorization: Bearer " + key + b"\n\n",
        b"GET /v1/stats HTTP/1.1\r\nHost: localhost\r\nX-API-Key: " + key + b"\x01\r\n\r\n",
    )
    for raw in malformed:
        with socket.create_connection((HOST, port), timeout=10) as conn:
            conn.sendall(raw)
            assert conn.recv(4096).startswith(b"HTTP/1.0 400 "), raw
    assert http(port, "GET", "/v1/stats", READ)[0] == 200  # the gateway serves on
    assert READ not in caplog.text
    assert not any(READ in str(r.args) or r.exc_info for r in caplog.records)
    lines = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert lines == ["refused a malformed HTTP request from 127.0.0.1 with 400 (BadHttpMessage)"], lines


def test_refusals_are_logged_without_the_key_once_per_interval_not_once_per_call(tmp_path, caplog):
    """Refusals name the call and the reason, never the key. Any client can send a wrong key thousands of times a
    second: 20 refusals over each API leave one WARNING per API (the next one, an interval later, counts the ones
    left out), not 40. (A gateway of its own: its refusals are the first it logs.)"""
    secured = start_stack(
        tmp_path,
        read_api_keys=(READ,),
        write_api_keys=(WRITE,),
        allow_unauthenticated_writes=False,
        http_port=free_port(),
    )
    leaked = "leaked-secret-0123456789"
    try:
        with caplog.at_level(logging.WARNING, logger="services.gateway.security"):
            for _ in range(20):
                with pytest.raises(grpc.RpcError) as refused:
                    upsert(secured.stub, leaked, 9)
                assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
                status, _ = http(secured.gateway_settings.http_port, "POST", "/v1/search", leaked, IMAGE)
                assert status == 401
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
        assert len(lines) == 2 and all("UNAUTHENTICATED" in line for line in lines), lines
        assert "UpsertItems" in lines[0] and "/v1/search" in lines[1], lines
        assert "leaked-secret" not in caplog.text
    finally:
        secured.close()
