"""GET /metrics of the gateway: open without an API key, beside the API or on a port of its own; refusals counted."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fashionsearch.v1 import gateway_pb2
from testkit.gateway_stack import jpeg, start_stack
from testkit.process_stack import free_port

pytestmark = pytest.mark.integration

READ = "read-key-0123456789abcdef"


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def refused(port: int, reason: str) -> float:
    status, text = get(port, "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == "fashionsearch_requests_refused_total" and sample.labels == {"reason": reason}:
                return sample.value
    return 0.0


@pytest.mark.parametrize("apart", [True, False], ids=["own port", "http port"])
def test_metrics_are_open_while_the_api_needs_a_key(tmp_path, apart):
    http_port = free_port()
    metrics_port = free_port() if apart else http_port
    stack = start_stack(tmp_path, read_api_keys=(READ,), http_port=http_port, metrics_port=metrics_port)
    try:
        before = refused(metrics_port, "api_key")
        with pytest.raises(grpc.RpcError) as missing:
            stack.stub.Search(gateway_pb2.SearchRequest(image=jpeg((200, 0, 0))), timeout=10)
        assert missing.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert get(http_port, "/v1/stats")[0] == 401
        # An aborted call's status leaves before its interceptor counts it: give the count a moment.
        deadline = time.monotonic() + 5
        while refused(metrics_port, "api_key") < before + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert refused(metrics_port, "api_key") == before + 2
        # Apart, the API's port has no /metrics: only the metrics port answers it.
        assert get(http_port, "/metrics")[0] == (404 if apart else 200)
    finally:
        stack.close()
