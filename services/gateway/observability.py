"""The HTTP side of fashionsearch.interceptors: a request id, metrics and one access log line per request, and
GET /metrics.

The middleware goes first in the app's list, so it sees every response, the errors and refusals included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import grpc
from aiohttp import web

from fashionsearch import metrics
from fashionsearch.errors import FashionSearchError
from fashionsearch.logs import REQUEST_ID_HEADER, accept_request_id, request_id

logger = logging.getLogger(__name__)

#: Where the request id is kept on the request, for the response header.
REQUEST_ID_KEY = web.RequestKey("request_id", str)
#: The gRPC code an HTTP error response stands for where its status alone would say another: the admission cap's
#: 503 is a refusal by a limit (RESOURCE_EXHAUSTED, as over gRPC), not a dependency down (UNAVAILABLE).
GRPC_CODE_KEY = web.ResponseKey("grpc_code", grpc.StatusCode)
#: Probes: counted, not logged.
QUIET_PATHS = frozenset({"/healthz", "/metrics"})
#: The status nginx logs for a client that went away before the answer; aiohttp cancels the handler then.
CLIENT_CLOSED = 499
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_of(request: web.Request) -> str:
    """The route template that matched ("/v1/items/{id}"), never the raw path; "unmatched" for unknown paths."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def http_status_codes() -> dict[int, grpc.StatusCode]:
    """Each HTTP error status -> the gRPC code of the error class that answers with it (fashionsearch.errors)."""
    codes: dict[int, grpc.StatusCode] = {}
    pending = [FashionSearchError]
    while pending:
        cls = pending.pop()
        codes.setdefault(cls.http_status, cls.code)
        pending.extend(cls.__subclasses__())
    return codes


def observing_middleware(codes: Mapping[int, grpc.StatusCode]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Request id, metrics and access log; `codes` maps an HTTP error status to the gRPC code it stands for (the
    inverse of the API's error mapping), so errors and refusals are counted by the same kinds as over gRPC. A
    response that carries GRPC_CODE_KEY is counted by that code instead."""

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        current = accept_request_id(request.headers.get(REQUEST_ID_HEADER))
        request[REQUEST_ID_KEY] = current
        token = request_id.set(current)
        metrics.HTTP_IN_FLIGHT.inc()
        started = time.perf_counter()
        status, code = 500, None
        try:
            response = await handler(request)
            status, code = response.status, response.get(GRPC_CODE_KEY)
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        except asyncio.CancelledError:
            status, code = CLIENT_CLOSED, grpc.StatusCode.CANCELLED
            raise
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            _record(request, status, code or codes.get(status), time.perf_counter() - started)
            request_id.reset(token)

    return observe


def observe_early_answer(request: web.Request, response: web.StreamResponse, code: grpc.StatusCode) -> None:
    """Count and log an answer given before the middlewares run (aiohttp's Expect: 100-continue handler), by
    `code`, the gRPC code it stands for; it gets a request id like any other."""
    current = accept_request_id(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID_KEY] = current
    token = request_id.set(current)
    try:
        _record(request, response.status, code, 0.0)
    finally:
        request_id.reset(token)


def _record(request: web.Request, status: int, code: grpc.StatusCode | None, elapsed: float) -> None:
    """Metrics and the access log line of one answered request; `code` is the gRPC code an error stands for."""
    method = request.method if request.method in _METHODS else "OTHER"
    route = route_of(request)
    metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
    metrics.HTTP_SECONDS.labels(method, route).observe(elapsed)
    if status >= 400:
        metrics.count_outcome(code or (grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.UNKNOWN))
    if request.path not in QUIET_PATHS:
        logger.info(
            "%s %s %s %.1f ms",
            request.method,
            route,
            status,
            elapsed * 1000,
            extra={
                "http_method": request.method,
                "http_route": route,
                "http_status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "remote": request.remote,
            },
        )


async def send_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, streamed ones too, tells the caller its request id."""
    current = request.get(REQUEST_ID_KEY)
    if current is not None:
        response.headers[REQUEST_ID_HEADER] = current


async def metrics_endpoint(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus's text format; open (no API key), like /healthz.

    In a worker thread: the catalogue size is read from the store while the registry is collected."""
    body, content_type = await asyncio.to_thread(metrics.exposition)
    return web.Response(body=body, headers={"Content-Type": content_type})
