"""Metrics and request ids, seen from outside: the three services as processes, scraped and read like ops would."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc
from testkit.catalogue_items import catalogue_items
from testkit.process_stack import HOST, REPO_ROOT, ProcessStack, free_port

pytestmark = pytest.mark.e2e

SAMPLE = REPO_ROOT / "sample_catalogue"
ITEMS = 12
MAX_BODY = 64 * 1024
GATEWAY, CLASSIFIER, EMBEDDER = "fashionsearch.v1.Gateway", "fashionsearch.v1.Classifier", "fashionsearch.v1.Embedder"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessStack]:
    if not (SAMPLE / "styles.csv").is_file():
        pytest.skip(f"{SAMPLE} is missing")
    stack = ProcessStack(
        tmp_path_factory.mktemp("observability"),
        gateway_env={
            "GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true",
            "GATEWAY_HTTP_MAX_BODY_BYTES": str(MAX_BODY),
            "GATEWAY_LOG_LEVEL": "INFO",
        },
        classifier_env={"CLASSIFIER_LOG_LEVEL": "INFO"},
        embedder_env={"EMBEDDER_LOG_LEVEL": "INFO"},
        # The gateway serves /metrics beside its API, on the HTTP port (the default); the model services on their own.
        http_port=free_port(),
    )
    stack.start()
    try:
        with grpc.insecure_channel(stack.address("gateway")) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            requests = (gateway_pb2.UpsertItemsRequest(item=item) for item in catalogue_items(SAMPLE, ITEMS))
            replies = list(stub.UpsertItems(requests, timeout=60))
            assert all(reply.upserted for reply in replies), [reply.error.message for reply in replies]
        yield stack
    finally:
        codes = stack.stop()
    for name, code in codes.items():
        assert code == 0, f"{name}: exit {code} after SIGTERM:\n{stack.log(name).read_text()[-3000:]}"


def http(stack: ProcessStack, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, body) of a request to the gateway's HTTP port; errors are answers too."""
    request = urllib.request.Request(
        f"http://{HOST}:{stack.metrics_ports['gateway']}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def scrape(stack: ProcessStack, service: str) -> Samples:
    """Every sample /metrics of `service` answers, by (name, labels)."""
    with urllib.request.urlopen(f"http://{HOST}:{stack.metrics_ports[service]}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def search_image() -> bytes:
    return (SAMPLE / "images" / f"{catalogue_items(SAMPLE, 1)[0].id}.jpg").read_bytes()


def multipart(image: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = "observability-test"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_counters_and_histograms_move_by_what_was_asked(stack: ProcessStack) -> None:
    before = {service: scrape(stack, service) for service in ("gateway", "classifier", "embedder")}
    image = search_image()
    with grpc.insecure_channel(stack.address("gateway")) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for _ in range(3):
            assert stub.Search(
                gateway_pb2.SearchRequest(image=image, filter_mode=gateway_pb2.FILTER_MODE_NONE), timeout=20
            ).hits
    for _ in range(2):
        status, _, _ = http(stack, "POST", "/v1/search", *multipart(image))
        assert status == 200
    assert http(stack, "POST", "/v1/search", *multipart(b"not an image at all" * 10))[0] == 400
    assert http(stack, "POST", "/v1/search", *multipart(b"x" * (MAX_BODY + 1)))[0] == 413
    assert http(stack, "GET", "/v1/items/424242424")[0] == 404
    after = {service: scrape(stack, service) for service in ("gateway", "classifier", "embedder")}
    gw_before, gw = before["gateway"], after["gateway"]

    # gRPC: calls by method and code, and their latency histogram.
    assert (
        moved(gw_before, gw, "grpc_server_handled_total", grpc_service=GATEWAY, grpc_method="Search", grpc_code="OK")
        == 3
    )
    assert moved(gw_before, gw, "grpc_server_handling_seconds_count", grpc_service=GATEWAY, grpc_method="Search") == 3
    assert moved(gw_before, gw, "grpc_server_handling_seconds_sum", grpc_service=GATEWAY, grpc_method="Search") > 0
    buckets = {
        le: moved(
            gw_before, gw, "grpc_server_handling_seconds_bucket", grpc_service=GATEWAY, grpc_method="Search", le=le
        )
        for le in ("0.001", "10.0", "+Inf")
    }
    assert buckets["10.0"] == buckets["+Inf"] == 3 and buckets["0.001"] <= 3
    assert value(gw, "grpc_server_requests_in_flight", grpc_service=GATEWAY, grpc_method="Search") == 0

    # HTTP: by route template and status; errors by kind, refusals by reason.
    assert moved(gw_before, gw, "http_server_requests_total", method="POST", route="/v1/search", code="200") == 2
    assert moved(gw_before, gw, "http_server_requests_total", method="POST", route="/v1/search", code="400") == 1
    assert moved(gw_before, gw, "http_server_requests_total", method="POST", route="/v1/search", code="413") == 1
    assert moved(gw_before, gw, "http_server_requests_total", method="GET", route="/v1/items/{id}", code="404") == 1
    assert moved(gw_before, gw, "http_server_request_duration_seconds_count", method="POST", route="/v1/search") == 4
    assert moved(gw_before, gw, "fashionsearch_errors_total", kind="invalid_argument") == 1
    assert moved(gw_before, gw, "fashionsearch_errors_total", kind="not_found") == 1
    assert moved(gw_before, gw, "fashionsearch_requests_refused_total", reason="limit") == 1
    assert not [key for key in gw if key[0] == "http_server_requests_total" and "424242424" in str(key)]

    # The store: one search per successful search; the catalogue size.
    assert moved(gw_before, gw, "fashionsearch_store_duration_seconds_count", operation="search") == 5
    assert value(gw, "fashionsearch_catalogue_items") == ITEMS

    # Each model service: every good search reached it once (as a single call or, when the gateway batches concurrent
    # searches, a batch call), with its inference (exactly five), batch and decode.
    for service, grpc_service, methods in (
        ("classifier", CLASSIFIER, ("Classify", "ClassifyBatch")),
        ("embedder", EMBEDDER, ("Embed", "EmbedBatch")),
    ):
        was, now = before[service], after[service]
        calls = sum(
            moved(was, now, "grpc_server_handled_total", grpc_service=grpc_service, grpc_method=method, grpc_code=code)
            for method in methods
            for code in ("OK", "INVALID_ARGUMENT")
        )
        # The bad image may reach a model service or not: the gateway drops a search's other call once one failed.
        assert calls in (5, 6), service
        assert moved(was, now, "fashionsearch_inference_seconds_count", service=service) == 5, service
        assert moved(was, now, "fashionsearch_inference_batch_size_sum", service=service) == 5, service
        # The bad image may still be decoding in a worker thread (its search already answered): counted or not yet.
        decoded = moved(was, now, "fashionsearch_image_decode_seconds_count")
        assert 5 <= decoded <= moved(was, now, "fashionsearch_image_bytes_count") <= 6, service
        assert moved(was, now, "fashionsearch_image_bytes_sum") >= 5 * len(image)
        info = [labels for (name, labels) in now if name == "fashionsearch_model_info"]
        assert len(info) == 1 and ("service", service) in info[0] and ("version", "tiny-1") in info[0], info


def log_lines(stack: ProcessStack, service: str) -> list[dict]:
    lines = stack.log(service).read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def with_id(stack: ProcessStack, request_id: str) -> dict[str, list[dict]]:
    return {
        service: [entry for entry in log_lines(stack, service) if request_id in entry.get("request_id", "").split(",")]
        for service in ("gateway", "classifier", "embedder")
    }


def test_one_request_id_follows_a_search_through_the_three_services(stack: ProcessStack) -> None:
    image = search_image()
    body, headers = multipart(image)
    status, answer_headers, _ = http(stack, "POST", "/v1/search", body, {**headers, "X-Request-Id": "http-trace-1"})
    assert status == 200 and answer_headers["X-Request-Id"] == "http-trace-1"

    with grpc.insecure_channel(stack.address("gateway")) as channel:
        call = gateway_pb2_grpc.GatewayStub(channel).Search.with_call(
            gateway_pb2.SearchRequest(image=image, filter_mode=gateway_pb2.FILTER_MODE_NONE),
            metadata=(("x-request-id", "grpc-trace-2"),),
            timeout=20,
        )[1]
        assert ("x-request-id", "grpc-trace-2") in tuple(call.trailing_metadata())
        # No id sent, or one that is not acceptable: the gateway makes one and answers it.
        made = dict(
            gateway_pb2_grpc.GatewayStub(channel)
            .Search.with_call(
                gateway_pb2.SearchRequest(image=image, filter_mode=gateway_pb2.FILTER_MODE_NONE),
                metadata=(("x-request-id", "no spaces please"),),
                timeout=20,
            )[1]
            .trailing_metadata()
        )["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)

    for request_id, method in (("http-trace-1", "POST"), ("grpc-trace-2", "Search"), (made, "Search")):
        found = with_id(stack, request_id)
        assert all(found.values()), f"{request_id} is missing from {[s for s, lines in found.items() if not lines]}"
        gateway_access = [entry for entry in found["gateway"] if entry["message"].startswith(method)]
        assert gateway_access, found["gateway"]
        assert [entry["grpc_method"] for entry in found["classifier"]] in (["Classify"], ["ClassifyBatch"])
        assert [entry["grpc_method"] for entry in found["embedder"]] in (["Embed"], ["EmbedBatch"])
    assert not with_id(stack, "no spaces please")["gateway"]


def test_request_ids_and_raw_paths_are_never_labels(stack: ProcessStack) -> None:
    status, _, text = http(stack, "GET", "/metrics")
    assert status == 200 and b"grpc_server_handled_total" in text
    assert b"http-trace-1" not in text and b"424242424" not in text
