"""What every gRPC call goes through: a request id, metrics and one access log line.

`ObservingInterceptor` (server side, first in every service's interceptor list) gives each call the request id its
caller sent in the `x-request-id` metadata, or a new one; every log line written while serving the call carries it
(fashionsearch.logs), and the caller gets it back in the response's trailing metadata. It counts the call in
fashionsearch.metrics and writes one INFO line when the call ends (health checks and reflection: metrics only).
A service passes the id on to the services it calls with `fashionsearch.logs.request_metadata()`.
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
from fashionsearch.throttle import Throttle, left_out_note

logger = logging.getLogger(__name__)

#: Methods remembered (each service has a handful); past this, calls are still observed, only not cached.
MAX_METHODS = 256
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


def handler_like(
    handler: grpc.RpcMethodHandler,
    unary: Callable[..., Any],
    streaming: Callable[..., Any],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """A method handler of the same kind as `handler` (same (de)serializers, unless `request_deserializer` is given),
    running `unary` where its response is a single message and the async generator `streaming` where it is a
    stream; for server interceptors."""
    kwargs = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)


class Malformed:
    """What a request that is not a valid message (garbage bytes, invalid UTF-8 in a string field) parses to, so
    the call can be answered INVALID_ARGUMENT after the interceptors that refuse callers (an API key first)."""

    def __init__(self, error: Exception) -> None:
        self.reason = (str(error).strip().splitlines() or [type(error).__name__])[-1][:200]


def _tolerant(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse_or_mark(raw: bytes) -> Any:
        try:
            return parse(raw)
        except Exception as error:  # noqa: BLE001 - protobuf's DecodeError, or whatever a deserializer raises
            return Malformed(error)

    return parse_or_mark


class _Method:
    """One method's metric children and wrapped handler, made once and reused by every call."""

    def __init__(self, full_method: str) -> None:
        self.service, _, self.name = full_method.lstrip("/").rpartition("/")
        self.malformed = Throttle()
        self.quiet = self.service in QUIET_SERVICES
        self.in_flight = metrics.GRPC_IN_FLIGHT.labels(self.service, self.name)
        self.seconds = metrics.GRPC_SECONDS.labels(self.service, self.name)
        self._handled: dict[grpc.StatusCode, Any] = {}
        self.handler: grpc.RpcMethodHandler | None = None
        self.wrapped: grpc.RpcMethodHandler | None = None

    def begin(self, context: grpc.aio.ServicerContext) -> float:
        incoming = next((v for k, v in context.invocation_metadata() or () if k == REQUEST_ID_HEADER), None)
        current = accept_request_id(incoming if isinstance(incoming, str) else None)
        request_id.set(current)
        # In the trailers: no extra write on the wire (initial metadata sent apart costs one per call).
        context.set_trailing_metadata(((REQUEST_ID_HEADER, current),))
        self.in_flight.inc()
        return time.perf_counter()

    def end(self, context: grpc.aio.ServicerContext, started: float, failure: BaseException | None) -> None:
        elapsed = time.perf_counter() - started
        self.in_flight.dec()
        code = _code(context, failure)
        handled = self._handled.get(code)
        if handled is None:
            handled = self._handled[code] = metrics.GRPC_HANDLED.labels(self.service, self.name, code.name)
        handled.inc()
        self.seconds.observe(elapsed)
        if self.quiet:
            return
        metrics.count_outcome(code)
        logger.info(
            "%s %s %.1f ms",
            self.name,
            code.name,
            elapsed * 1000,
            extra={
                "grpc_service": self.service,
                "grpc_method": self.name,
                "grpc_code": code.name,
                "duration_ms": round(elapsed * 1000, 2),
                "peer": context.peer(),
            },
        )

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        unary = handler.unary_unary or handler.stream_unary
        streaming = handler.unary_stream or handler.stream_stream
        parse = handler.request_deserializer
        return handler_like(
            handler,
            self._observed(unary, handler.request_streaming) if unary else unary,
            self._observed(streaming, handler.request_streaming) if streaming else streaming,
            request_deserializer=_tolerant(parse) if parse is not None else None,
        )

    async def _refuse_malformed(self, request: Malformed, context: grpc.aio.ServicerContext) -> None:
        """INVALID_ARGUMENT for a request that is not a valid message, with a WARNING per interval, no traceback
        (grpc's own answer was UNKNOWN and an ERROR with a traceback per call: any client could flood the log)."""
        left_out = self.malformed.allow()
        if left_out is not None:
            logger.warning(
                "refused a malformed %s request from %s: %s%s",
                self.name,
                context.peer(),
                request.reason,
                left_out_note(left_out),
                extra={"grpc_method": self.name, "left_out": left_out},
            )
        message = f"the request is not a valid {self.name} request message: {request.reason}"
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

    def _checked(self, request: Any, context: grpc.aio.ServicerContext, streaming: bool) -> Any:
        """A request stream whose malformed messages end the call, as a malformed single request does."""
        if not streaming:
            return request

        async def messages() -> AsyncIterator[Any]:
            async for message in request:
                if isinstance(message, Malformed):
                    await self._refuse_malformed(message, context)
                yield message

        return messages()

    def _observed(self, behaviour: Callable[..., Any], request_streaming: bool) -> Callable[..., Any]:
        """`behaviour` (a handler's coroutine or async generator function) between begin() and end()."""
        if inspect.isasyncgenfunction(behaviour):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                started = self.begin(context)
                failure: BaseException | None = None
                try:
                    if isinstance(request, Malformed):
                        await self._refuse_malformed(request, context)
                    async for response in behaviour(self._checked(request, context, request_streaming), context):
                        yield response
                except BaseException as error:
                    failure = error
                    raise
                finally:
                    self.end(context, started, failure)

            return stream

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = self.begin(context)
            failure: BaseException | None = None
            try:
                if isinstance(request, Malformed):
                    await self._refuse_malformed(request, context)
                return await behaviour(self._checked(request, context, request_streaming), context)
            except BaseException as error:
                failure = error
                raise
            finally:
                self.end(context, started, failure)

        return unary


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    """Request id, metrics and access log for every call; put it first, so it sees what the others refuse."""

    def __init__(self) -> None:
        self._methods: dict[str, _Method] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = self._methods.get(details.method)
        if method is None:
            if len(self._methods) >= MAX_METHODS:  # unknown method names are not registered handlers: bounded
                return _Method(details.method).wrap(handler)
            method = self._methods[details.method] = _Method(details.method)
        # The registered handler is the same object every call: wrap it once. (A refusal handler, made for one
        # call by the API-key interceptor, is wrapped for that call alone.)
        if method.handler is not handler:
            wrapped = method.wrap(handler)
            if method.handler is None:
                method.handler, method.wrapped = handler, wrapped
            return wrapped
        assert method.wrapped is not None
        return method.wrapped
