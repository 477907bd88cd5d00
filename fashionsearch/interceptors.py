"""What every gRPC call goes through: a request id, metrics and one access log line.

`ObservingInterceptor` (server side, first in every service's interceptor list) gives each call the request id its
caller sent in the `x-request-id` metadata, or a new one; every log line written while serving the call carries it
(fashionsearch.logs), and the caller gets it back in the response's initial metadata. It counts the call in
fashionsearch.metrics and writes one INFO line when the call ends (health checks and reflection: metrics only).
`RequestIdClientInterceptor` passes the current request id on to the services a service calls.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from fashionsearch import metrics
from fashionsearch.logs import REQUEST_ID_HEADER, accept_request_id, request_id

logger = logging.getLogger(__name__)

#: Services whose calls are counted but not logged: probes call them every few seconds.
QUIET_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})


def _code(context: grpc.aio.ServicerContext, failure: BaseException | None) -> grpc.StatusCode:
    """The status the call ended with: what abort() or set_code() set, OK, or UNKNOWN for an uncaught exception."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(failure, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    if failure is not None and not isinstance(failure, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.OK


class _Call:
    """One call's bookkeeping: its request id, in-flight gauge, and what is recorded when it ends."""

    def __init__(self, full_method: str, metadata: Any) -> None:
        service, _, self.method = full_method.lstrip("/").rpartition("/")
        self.service = service
        self.quiet = service in QUIET_SERVICES
        incoming = next((value for key, value in metadata or () if key == REQUEST_ID_HEADER), None)
        self.request_id = accept_request_id(incoming if isinstance(incoming, str) else None)
        self.in_flight = metrics.GRPC_IN_FLIGHT.labels(service, self.method)

    async def begin(self, context: grpc.aio.ServicerContext) -> float:
        request_id.set(self.request_id)
        self.in_flight.inc()
        await context.send_initial_metadata(((REQUEST_ID_HEADER, self.request_id),))
        return time.perf_counter()

    def end(self, context: grpc.aio.ServicerContext, started: float, failure: BaseException | None) -> None:
        elapsed = time.perf_counter() - started
        self.in_flight.dec()
        code = _code(context, failure)
        metrics.GRPC_HANDLED.labels(self.service, self.method, code.name).inc()
        metrics.GRPC_SECONDS.labels(self.service, self.method).observe(elapsed)
        if self.quiet:
            return
        metrics.count_outcome(code)
        logger.info(
            "%s %s %.1f ms",
            self.method,
            code.name,
            elapsed * 1000,
            extra={
                "grpc_service": self.service,
                "grpc_method": self.method,
                "grpc_code": code.name,
                "duration_ms": round(elapsed * 1000, 2),
                "peer": context.peer(),
            },
        )


def _observed(behaviour: Callable[..., Any], call_of: Callable[[], _Call]) -> Callable[..., Any]:
    """`behaviour` (a handler's function, coroutine or async generator) wrapped in a _Call."""
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = call_of()
            started = await call.begin(context)
            failure: BaseException | None = None
            try:
                async for response in behaviour(request, context):
                    yield response
            except BaseException as error:
                failure = error
                raise
            finally:
                call.end(context, started, failure)

        return stream

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = call_of()
        started = await call.begin(context)
        failure: BaseException | None = None
        try:
            return await behaviour(request, context)
        except BaseException as error:
            failure = error
            raise
        finally:
            call.end(context, started, failure)

    return unary


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    """Request id, metrics and access log for every call; put it first, so it sees what the others refuse."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler

        def call_of() -> _Call:
            return _Call(details.method, details.invocation_metadata)

        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(_observed(handler.stream_stream, call_of), **kwargs)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(_observed(handler.stream_unary, call_of), **kwargs)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(_observed(handler.unary_stream, call_of), **kwargs)
        return grpc.unary_unary_rpc_method_handler(_observed(handler.unary_unary, call_of), **kwargs)


class RequestIdClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Sends the request id of the call being served (if any) with every call made on this channel."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        current = request_id.get()
        if current is not None:
            metadata = grpc.aio.Metadata(*(details.metadata or ()), (REQUEST_ID_HEADER, current))
            details = grpc.aio.ClientCallDetails(
                details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
            )
        return await continuation(details, request)
