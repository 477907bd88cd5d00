"""The Grafana dashboard's queries, run by a real Prometheus against the three services as processes.

No Grafana here: what the dashboard would draw is checked one level down, each panel's PromQL evaluated by the
Prometheus server that scrapes the services, after some searches. Needs the `prometheus` binary (Debian's
prometheus package, which `.ci/run` installs for promtool).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
import yaml

from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc
from testkit.catalogue_items import catalogue_items
from testkit.process_stack import HOST, REPO_ROOT, ProcessStack, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DASHBOARD = REPO_ROOT / "deploy" / "monitoring" / "grafana" / "dashboards" / "fashionsearch.json"
SAMPLE = REPO_ROOT / "sample_catalogue"
#: Panels that show nothing unless an indexer runs or a request is refused; every other one must show data.
MAY_BE_EMPTY = {"Refused/s by reason", "Indexer: items/s by outcome", "Indexer: done"}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "the prometheus server is not installed (Debian: apt-get install --no-install-recommends prometheus)"
        )
    if not (SAMPLE / "styles.csv").is_file():
        pytest.skip(f"{SAMPLE} is missing")
    root = tmp_path_factory.mktemp("dashboard")
    stack = ProcessStack(root, gateway_env={"GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true"}, http_port=free_port())
    stack.start()
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": [f"{HOST}:{stack.metrics_ports[name]}"]}]}
            for name in ("gateway", "classifier", "embedder")
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"{HOST}:{free_port()}"
    log = (root / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'tsdb'}",
            f"--web.listen-address={address}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        traffic(stack)
        yield address
    finally:
        server.terminate()
        server.wait(20)
        log.close()
        stack.stop()


def traffic(stack: ProcessStack) -> None:
    """Some items, then searches over gRPC and HTTP (and a bad image) for several scrapes."""
    items = catalogue_items(SAMPLE, 12)
    with grpc.insecure_channel(stack.address("gateway")) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        assert all(r.upserted for r in stub.UpsertItems(gateway_pb2.UpsertItemsRequest(item=i) for i in items))
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            stub.Search(gateway_pb2.SearchRequest(image=items[0].image), timeout=10)
            with pytest.raises(grpc.RpcError):
                stub.Search(gateway_pb2.SearchRequest(image=b"not an image" * 20), timeout=10)
            request = urllib.request.Request(
                f"http://{HOST}:{stack.metrics_ports['gateway']}/v1/search",
                data=items[1].image,
                headers={"Content-Type": "image/jpeg"},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 200
            time.sleep(0.1)
    time.sleep(3)  # the last requests scraped


def query(address: str, expr: str) -> list[dict]:
    url = f"http://{address}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as answer:
        reply = json.load(answer)
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


@pytest.mark.parametrize("panel", panels(), ids=lambda panel: panel["title"])
def test_each_panel_shows_data_from_the_services(prometheus: str, panel: dict) -> None:
    for target in panel["targets"]:
        # Grafana's $__rate_interval is at least four scrape intervals; 30s covers the traffic above.
        result = query(prometheus, target["expr"].replace("$__rate_interval", "30s"))
        if panel["title"] in MAY_BE_EMPTY:
            continue
        values = [float(series["value"][1]) for series in result]
        assert values, f"{panel['title']!r}: {target['expr']} returned nothing"
        assert any(math.isfinite(v) for v in values), f"{panel['title']!r}: {target['expr']} -> {values}"


def test_the_numbers_are_the_ones_that_happened(prometheus: str) -> None:
    (catalogue,) = query(prometheus, "max(fashionsearch_catalogue_items)")
    assert float(catalogue["value"][1]) == 12
    kinds = {series["metric"]["kind"] for series in query(prometheus, "sum by (kind) (fashionsearch_errors_total)")}
    assert "invalid_argument" in kinds
    models = query(prometheus, "max by (service, name, version) (fashionsearch_model_info)")
    assert {(m["metric"]["service"], m["metric"]["name"]) for m in models} == {
        ("classifier", "tiny-classifier"),
        ("embedder", "tiny-embedder"),
    }
    (p99,) = query(
        prometheus,
        'histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket{grpc_method="Search"}[30s])))',
    )
    assert 0 < float(p99["value"][1]) < 10


def test_prometheus_saw_every_target_up(prometheus: str) -> None:
    up = {series["metric"]["job"]: series["value"][1] for series in query(prometheus, "up")}
    assert up == {"gateway": "1", "classifier": "1", "embedder": "1"}
