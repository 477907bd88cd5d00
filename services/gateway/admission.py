"""One cap on the work in flight in the gateway, shared by its gRPC and HTTP APIs: requests, and request bytes.

gRPC had a cap of its own (grpc's maximum_concurrent_rpcs) and HTTP none: 40 concurrent 15 MB bodies added 773 MB
to the gateway. Now every API call takes a ticket from one Admission before its handler runs. It reserves the
request's bytes: for HTTP its Content-Length (the body limit when the length is not given), before the body is
read; for gRPC the request message's size (one message's limit for a request stream). A call that does not fit is
answered at once, never queued: HTTP 503 with ``Retry-After``, gRPC RESOURCE_EXHAUSTED with ``retry-after`` and
``grpc-retry-pushback-ms`` trailing metadata (the latter is what gRPC's own retry policy honours). Both are counted
as refusals by a limit (fashionsearch_requests_refused_total{reason="limit"}), not as errors: the 503 says "not
now", not "a dependency is down". Health checks and metrics scrapes are not counted, so an overloaded gateway still
answers its probes and can be watched.

Both APIs run on one event loop, so the counters need no lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from aiohttp import web

from fashionsearch.interceptors import handler_like
from services.gateway.observability import GRPC_CODE_KEY

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1
#: Refusals are logged once per this many seconds, with their count: an overload must not also flood the log.
_LOG_EVERY_S = 10.0
_GATEWAY_METHODS = "/fashionsearch.v1.Gateway/"
_UNCOUNTED_HTTP_PATHS = frozenset({"/healthz", "/metrics"})


class Admission:
    """At most `max_requests` calls and `max_bytes` request bytes in flight (a single larger request is let in
    alone, so that any request the gateway accepts can be served)."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        if max_requests < 1 or max_bytes < 1:
            raise ValueError(f"admission limits must be positive, got {max_requests} requests, {max_bytes} bytes")
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0
        self.refused = 0
        self._logged_at = -_LOG_EVERY_S
        self._logged_count = 0

    def has_room(self, nbytes: int) -> bool:
        if self.requests >= self.max_requests:
            return False
        return self.bytes == 0 or self.bytes + nbytes <= self.max_bytes

    def enter(self, nbytes: int) -> bool:
        """Take a ticket for a call of `nbytes`; False (and nothing taken) when it does not fit now."""
        if not self.has_room(nbytes):
            return False
        self.requests += 1
        self.bytes += nbytes
        return True

    def leave(self, nbytes: int) -> None:
        self.requests -= 1
        self.bytes -= nbytes

    def note_refusal(self, peer: object) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_S:
            logger.warning(
                "refused %s call(s) (the last from %s): %s",
                self.refused - self._logged_count,
                peer,
                self.refusal(),
            )
            self._logged_at, self._logged_count = now, self.refused

    def refusal(self) -> str:
        return (
            f"the gateway is at its limit of {self.max_requests} requests or {self.max_bytes} bytes in flight"
            f" (GATEWAY_MAX_CONCURRENT_RPCS, GATEWAY_MAX_BYTES_IN_FLIGHT); retry in {RETRY_AFTER_S} s"
        )


# ---- gRPC -------------------------------------------------------------------------------------------------------


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Runs every Gateway call under a ticket of `admission`; `stream_bytes` is what a request stream reserves."""

    def __init__(self, admission: Admission, stream_bytes: int) -> None:
        self._admission = admission
        self._stream_bytes = stream_bytes

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(_GATEWAY_METHODS):
            return handler
        return self._counted(handler)

    async def _refuse(self, context: grpc.aio.ServicerContext) -> None:
        self._admission.note_refusal(context.peer())
        trailers = (("retry-after", str(RETRY_AFTER_S)), ("grpc-retry-pushback-ms", str(RETRY_AFTER_S * 1000)))
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._admission.refusal(), trailers)

    def _counted(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        admission = self._admission

        def size(request: Any) -> int:
            return self._stream_bytes if handler.request_streaming else int(request.ByteSize())

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            nbytes = size(request)
            if not admission.enter(nbytes):
                await self._refuse(context)
            try:
                inner = handler.stream_unary if handler.request_streaming else handler.unary_unary
                return await inner(request, context)
            finally:
                admission.leave(nbytes)

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
            nbytes = size(request)
            if not admission.enter(nbytes):
                await self._refuse(context)
            try:
                inner = handler.stream_stream if handler.request_streaming else handler.unary_stream
                async for response in inner(request, context):
                    yield response
            finally:
                admission.leave(nbytes)

        return handler_like(handler, unary, streaming)


# ---- HTTP -------------------------------------------------------------------------------------------------------


def refused_response(admission: Admission) -> web.Response:
    """503 with Retry-After, counted in the metrics as what it is over gRPC: RESOURCE_EXHAUSTED, a refusal."""
    response = web.json_response(
        {"error": {"status": 503, "code": "OVERLOADED", "message": admission.refusal()}},
        status=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
    response[GRPC_CODE_KEY] = grpc.StatusCode.RESOURCE_EXHAUSTED
    return response


def request_bytes(request: web.Request, body_limit: int) -> int:
    """What an HTTP request reserves: its declared length, or the body limit when it streams one of unknown size."""
    if request.content_length is not None:
        return request.content_length
    return body_limit if request.body_exists else 0


def http_admission(admission: Admission, body_limit: int) -> Callable[..., Awaitable[web.StreamResponse]]:
    """aiohttp middleware running each request (but health checks) under a ticket, taken before the body is read."""

    @web.middleware
    async def admit(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in _UNCOUNTED_HTTP_PATHS:
            return await handler(request)
        nbytes = request_bytes(request, body_limit)
        if not admission.enter(nbytes):
            admission.note_refusal(request.remote)
            return refused_response(admission)
        try:
            return await handler(request)
        finally:
            admission.leave(nbytes)

    return admit
