"""Prometheus metrics: every metric a service exports is defined here, once, with its labels and buckets.

Names follow Prometheus's conventions: base units in the name (`_seconds`, `_bytes`), `_total` on counters (the
client library adds it), an application prefix (`fashionsearch_`) except on the generic gRPC and HTTP server
metrics, and labels with a small, fixed set of values (a method, a route template, a status code, an error kind;
never an id or a raw path). Each service registers them in the process-wide registry and serves it at /metrics:
the classifier and embedder on their own small listener (`start_listener`), the gateway on its HTTP port or its own.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import start_http_server

logger = logging.getLogger(__name__)

#: Latency buckets from 1 ms to 10 s (a search takes about 10 ms; a deadline is a few seconds).
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Image sizes from 1 KiB (a thumbnail) to 64 MiB (the largest message a service accepts), by factors of 4.
BYTES_BUCKETS = tuple(1024 * 4**power for power in range(9))
#: Images per inference run, up to the default batch limit and beyond.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# ---- requests, in every service ------------------------------------------------------------------------------
GRPC_HANDLED = Counter(
    "grpc_server_handled",
    "gRPC calls completed, by method and status code",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from a gRPC call's arrival to its status",
    ["grpc_service", "grpc_method"],
    buckets=SECONDS_BUCKETS,
)
GRPC_IN_FLIGHT = Gauge("grpc_server_requests_in_flight", "gRPC calls in progress", ["grpc_service", "grpc_method"])
HTTP_REQUESTS = Counter(
    "http_server_requests", "HTTP requests completed, by route and status", ["method", "route", "code"]
)
HTTP_SECONDS = Histogram(
    "http_server_request_duration_seconds",
    "Time from an HTTP request's arrival to the end of its response",
    ["method", "route"],
    buckets=SECONDS_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge("http_server_requests_in_flight", "HTTP requests in progress")
ERRORS = Counter(
    "fashionsearch_errors",
    "Requests that ended in an error, by kind: the gRPC status name in lower case (invalid_argument for a bad image "
    "or parameter, unavailable for a dependency down, deadline_exceeded for one too slow, ...)",
    ["kind"],
)
REFUSED = Counter(
    "fashionsearch_requests_refused",
    "Requests turned away before any work: api_key (missing or wrong key), limit (too large, or too many in flight: "
    "the gateway's HTTP 503 and gRPC RESOURCE_EXHAUSTED with a retry hint)",
    ["reason"],
)

# ---- the model services ---------------------------------------------------------------------------------------
MODEL = Info("fashionsearch_model", "The model a service runs", ["service"])
INFERENCE_SECONDS = Histogram(
    "fashionsearch_inference_seconds", "onnxruntime time per inference run", ["service"], buckets=SECONDS_BUCKETS
)
INFERENCE_BATCH_SIZE = Histogram(
    "fashionsearch_inference_batch_size", "Images per inference run", ["service"], buckets=BATCH_BUCKETS
)
IMAGE_DECODE_SECONDS = Histogram(
    "fashionsearch_image_decode_seconds", "Time to decode one image into the model's pixels", buckets=SECONDS_BUCKETS
)
IMAGE_BYTES = Histogram("fashionsearch_image_bytes", "Size of each image received", buckets=BYTES_BUCKETS)

# ---- the gateway ---------------------------------------------------------------------------------------------
STORE_SECONDS = Histogram(
    "fashionsearch_store_duration_seconds", "Vector store calls, by operation", ["operation"], buckets=SECONDS_BUCKETS
)
PHOTOS_ANALYSED = Counter(
    "fashionsearch_photos_analysed",
    "Photos the gateway read for attributes and a vector (searches, each cut-out of an outfit, catalogue writes), by "
    "path: one_pass (the classifier's answer carried the running embedder's vector: one trunk pass) or two_calls "
    "(the classifier and the embedder each asked)",
    ["path"],
)
OUTFIT_BOXES = Counter(
    "fashionsearch_outfit_boxes",
    "Outfit search's detections read under the detector's box verification, by outcome: kept, dropped (the rule "
    "says it is not a product) or unverified (the rule was fitted on another classifier: the detector's own "
    "threshold decided)",
    ["outcome"],
)
SEARCH_CROPS = Counter(
    "fashionsearch_search_crops",
    "Photo searches with crop=auto (the default), by what was read: cut (the detector's main product cut out), "
    "cut_and_whole (a larger one, or one with a close rival, cut out and read beside the whole photo), whole (a "
    "packshot, no product found, or one filling the photo), no_detector (none configured: the whole photo) or "
    "detector_failed (the detector down or slow: the whole photo)",
    ["read"],
)
CATALOGUE_ITEMS = Gauge("fashionsearch_catalogue_items", "Items in the catalogue collection")

# ---- the indexer ---------------------------------------------------------------------------------------------
INDEXER_ITEMS = Counter(
    "fashionsearch_indexer_items",
    "Manifest items handled by the indexer: added and updated were embedded, unchanged skipped, rejected failed, "
    "deleted pruned",
    ["outcome"],
)
INDEXER_ITEMS_EXPECTED = Gauge("fashionsearch_indexer_items_expected", "Rows the indexer's manifest (shard) holds")

#: gRPC codes that mean "refused before any work", with their REFUSED reason; every other non-OK code is an error.
REFUSAL_REASONS = {
    grpc.StatusCode.UNAUTHENTICATED: "api_key",
    grpc.StatusCode.PERMISSION_DENIED: "api_key",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "limit",
}


def count_outcome(code: grpc.StatusCode) -> None:
    """Count a request's end in ERRORS or REFUSED (nothing for OK)."""
    if code == grpc.StatusCode.OK:
        return
    reason = REFUSAL_REASONS.get(code)
    if reason is not None:
        REFUSED.labels(reason).inc()
    else:
        ERRORS.labels(code.name.lower()).inc()


def describe_model(
    service: str, name: str, version: str, sha256: str, precision: str = "float", vectors_of: str = ""
) -> None:
    """`precision`: float or int8, the file the service chose; `vectors_of`: the embedder whose vectors a one-pass
    classifier computes too ("" when none)."""
    MODEL.labels(service).info(
        {"name": name, "version": version, "onnx_sha256": sha256, "precision": precision, "vectors_of": vectors_of}
    )


@contextmanager
def timed(histogram: Histogram) -> Iterator[None]:
    """Observe the time the block takes (also when it raises)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        histogram.observe(time.perf_counter() - started)


P = ParamSpec("P")
T = TypeVar("T")


def observe_decode(decode: Callable[P, T]) -> Callable[P, T]:
    """Decorate an image decoder taking the image bytes first: their size and the decode time are observed."""

    @functools.wraps(decode)
    def decode_observed(*args: P.args, **kwargs: P.kwargs) -> T:
        data = args[0] if args else kwargs.get("data", b"")
        IMAGE_BYTES.observe(len(data) if isinstance(data, bytes | bytearray | memoryview) else 0)
        with timed(IMAGE_DECODE_SECONDS):
            return decode(*args, **kwargs)

    return decode_observed


def count_catalogue(count: Callable[[], int]) -> None:
    """Report `count()` as the catalogue size at each scrape; NaN when the store cannot say (the scrape still works)."""

    def current() -> float:
        try:
            return float(count())
        except Exception as error:  # noqa: BLE001 - a scrape must not fail because the store is down
            logger.debug("catalogue size unknown: %s", error)
            return math.nan

    CATALOGUE_ITEMS.set_function(current)


def exposition() -> tuple[bytes, str]:
    """The registry in Prometheus's text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class Listener:
    """A small HTTP server answering GET /metrics from its own thread; `close()` stops it (idempotent)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port = int(server.server_port)

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)


def start_listener(host: str, port: int) -> Listener:
    """Serve the registry on host:port (port 0: a free one, see `Listener.port`); OSError when it cannot bind."""
    bind = host.strip("[]") or "::"
    server, thread = start_http_server(port, addr=bind)
    listener = Listener(server, thread)
    logger.info("metrics on http://%s:%s/metrics", host, listener.port, extra={"metrics_port": listener.port})
    return listener
