"""The three services as separate processes, configured only by environment variables, like ops run them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc
from testkit.catalogue_items import catalogue_items
from testkit.process_stack import REPO_ROOT, ProcessStack

pytestmark = pytest.mark.e2e

SAMPLE = REPO_ROOT / "sample_catalogue"


@pytest.fixture(scope="module")
def gateway_address(tmp_path_factory) -> Iterator[str]:
    stack = ProcessStack(
        tmp_path_factory.mktemp("e2e"), gateway_env={"GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true"}
    ).start()
    try:
        yield stack.address("gateway")
    finally:
        codes = stack.stop()
    for name, code in codes.items():
        assert code == 0, f"{name}: exit {code} after SIGTERM:\n{stack.log(name).read_text()}"


def _sample_items(limit: int) -> list[gateway_pb2.CatalogueItem]:
    if not (SAMPLE / "styles.csv").is_file():
        pytest.skip(f"{SAMPLE} is missing")
    return catalogue_items(SAMPLE, limit)


def test_upsert_then_search_finds_the_same_product(gateway_address):
    items = _sample_items(24)
    with grpc.insecure_channel(gateway_address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        replies = list(stub.UpsertItems((gateway_pb2.UpsertItemsRequest(item=i) for i in items), timeout=60))
        assert all(r.upserted for r in replies), [r.error.message for r in replies if not r.upserted]
        assert stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=10).item_count == len(items)

        query = items[7]
        reply = stub.Search(
            gateway_pb2.SearchRequest(image=query.image, filter_mode=gateway_pb2.FILTER_MODE_NONE), timeout=10
        )
        assert reply.hits[0].id == query.id
        assert reply.hits[0].distance == pytest.approx(0.0, abs=1e-3)
        assert reply.hits[0].payload.name == query.payload.name
        assert reply.suggested_name and reply.keywords and len(reply.hits) == 5


def test_bad_configuration_exits_before_binding(tmp_path):
    env = {**os.environ, "GATEWAY_PORT": "not-a-port", "GATEWAY_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "services.gateway"], cwd=REPO_ROOT, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 2
    assert b"GATEWAY_PORT" in done.stdout + done.stderr
