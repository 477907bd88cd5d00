"""The three services as separate processes, configured only by environment variables, like ops run them."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fashionsearch.healthcheck import is_serving
from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc
from tests.tiny_models import write_tiny_classifier, write_tiny_embedder

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "sample_catalogue"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(module: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module], cwd=REPO_ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )


def _wait_serving(process: subprocess.Popen, address: str, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{address} exited with {process.returncode}:\n{log.read_text()}")
        if is_serving(address, timeout_s=1):
            return
        time.sleep(0.2)
    pytest.fail(f"{address} not SERVING after {timeout_s} s:\n{log.read_text()}")


def _stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


@pytest.fixture(scope="module")
def gateway_address(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("e2e")
    ports = {name: _free_port() for name in ("classifier", "embedder", "gateway")}
    envs = {
        "services.classifier": {
            "CLASSIFIER_PORT": str(ports["classifier"]),
            "CLASSIFIER_HOST": "127.0.0.1",
            "CLASSIFIER_MODEL_DIR": str(write_tiny_classifier(root / "classifier")),
            "CLASSIFIER_INTRA_OP_THREADS": "1",
        },
        "services.embedder": {
            "EMBEDDER_PORT": str(ports["embedder"]),
            "EMBEDDER_HOST": "127.0.0.1",
            "EMBEDDER_MODEL_DIR": str(write_tiny_embedder(root / "embedder")),
            "EMBEDDER_INTRA_OP_THREADS": "1",
        },
        "services.gateway": {
            "GATEWAY_PORT": str(ports["gateway"]),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_CLASSIFIER_ADDR": f"127.0.0.1:{ports['classifier']}",
            "GATEWAY_EMBEDDER_ADDR": f"127.0.0.1:{ports['embedder']}",
            "GATEWAY_DATA_DIR": str(root / "store"),
            "GATEWAY_HTTP_ENABLED": "false",
            "GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true",
        },
    }
    processes = []
    try:
        for module, env in envs.items():
            name = module.split(".")[-1]
            log = root / f"{name}.log"
            process = _start(module, env, log)
            processes.append((process, log))
            _wait_serving(process, f"127.0.0.1:{ports[name]}", log)
        yield f"127.0.0.1:{ports['gateway']}"
    finally:
        codes = [(_stop(process), log) for process, log in reversed(processes)]
    for code, log in codes:
        assert code == 0, f"{log.name}: exit {code} after SIGTERM:\n{log.read_text()}"


def _sample_items(limit: int) -> list[gateway_pb2.CatalogueItem]:
    if not (SAMPLE / "styles.csv").is_file():
        pytest.skip(f"{SAMPLE} is missing")
    items = []
    with (SAMPLE / "styles.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            image = SAMPLE / "images" / f"{row['id']}.jpg"
            if not image.is_file():
                continue
            items.append(
                gateway_pb2.CatalogueItem(
                    id=int(row["id"]),
                    image=image.read_bytes(),
                    payload=gateway_pb2.ItemPayload(
                        name=row["productDisplayName"],
                        gender=row["gender"],
                        master_category=row["masterCategory"],
                        sub_category=row["subCategory"],
                        article_type=row["articleType"],
                        base_colour=row["baseColour"],
                        season=row["season"],
                        year=int(row["year"] or 0),
                        usage=row["usage"],
                        image_ref=f"images/{row['id']}.jpg",
                    ),
                )
            )
            if len(items) == limit:
                break
    return items


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
