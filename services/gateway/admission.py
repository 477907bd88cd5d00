"""One cap on the work in flight in the gateway, shared by its gRPC and HTTP APIs: requests, and request bytes.

gRPC had a cap of its own (grpc's maximum_concurrent_rpcs) and HTTP none: 40 concurrent 15 MB bodies added 773 MB
to the gateway. Now every API call takes a ticket from one Admission before its handler runs.

A ticket holds what the caller has actually sent, never what it promised: a request's bytes are reserved as they
arrive, and its place among the requests in flight once all of it is there. Reserving a declared Content-Length and
a place before the body came let 19 connections that sent only headers fail every photo search for a minute, and
32 that trickled a byte at a time block every call. So an HTTP body is read here, chunk by chunk, each chunk
reserved as it comes, with GATEWAY_HTTP_BODY_TIMEOUT_S for the next chunk to come (nginx's client_body_timeout:
408 and the connection closed), and GATEWAY_HTTP_BODY_MIN_RATE_BPS for the whole body after that (Apache's
MinRate: a byte sent just before each timeout would hold a connection for hours); the handler then gets the body
read. Headers must arrive within
GATEWAY_HTTP_HEADER_TIMEOUT_S (aiohttp's keep-alive timer: an idle connection, or one whose headers are not all
there, is closed). A gRPC unary request arrives whole before its handler runs and reserves its size; a request
stream (UpsertItems) reserves each message from its arrival until its answer is sent (a message that does not fit
waits up to GATEWAY_STREAM_IDLE_TIMEOUT_S for room: the stream is slowed, not failed), holds a place only while it
has a message in hand, and is ended (DEADLINE_EXCEEDED) when no message comes for that long.

A call that does not fit is answered at once, never queued: HTTP 503 with ``Retry-After``, gRPC RESOURCE_EXHAUSTED
with ``retry-after`` and ``grpc-retry-pushback-ms`` trailing metadata (the latter is what gRPC's own retry policy
honours). Both are counted as refusals by a limit (fashionsearch_requests_refused_total{reason="limit"}), not as
errors: the 503 says "not now", not "a dependency is down". Health checks and metrics scrapes are not counted, so
an overloaded gateway still answers its probes and can be watched.

Both APIs run on one event loop, so the counters need no lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from aiohttp import web

from fashionsearch.interceptors import handler_like
from services.gateway.http.responses import error_body
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
        self._freed = asyncio.Event()  # set whenever a call gives back what it held (request streams wait on it)

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
        self._freed.set()

    def take_bytes(self, nbytes: int, held: int) -> bool:
        """Reserve `nbytes` more for a call that already holds `held`; False (nothing taken) when they do not fit.
        A call whose bytes are the only ones in flight may go over the cap alone, as in has_room()."""
        if self.bytes != held and self.bytes + nbytes > self.max_bytes:
            return False
        self.bytes += nbytes
        return True

    def take_place(self) -> bool:
        if self.requests >= self.max_requests:
            return False
        self.requests += 1
        return True

    def give_back(self, nbytes: int, place: bool) -> None:
        self.bytes -= nbytes
        if place:
            self.requests -= 1
        self._freed.set()

    async def room_freed(self, timeout_s: float) -> bool:
        """Wait until some call gives back what it held (True), or `timeout_s` passes (False)."""
        self._freed.clear()
        try:
            await asyncio.wait_for(self._freed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

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
    """Runs every Gateway call under a ticket of `admission`. A request stream's ticket follows its messages
    (_StreamTicket); a stream with none in hand for `idle_timeout_s` is ended."""

    def __init__(self, admission: Admission, idle_timeout_s: float) -> None:
        self._admission = admission
        self._idle_timeout_s = idle_timeout_s

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

    async def _messages(
        self, requests: AsyncIterator[Any], ticket: _StreamTicket, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """The request stream's messages, each reserved as it arrives; the stream is ended when it sends nothing
        for the idle timeout while the gateway has nothing of it in hand (a client waiting for answers is not
        idle)."""
        iterator = aiter(requests)
        while True:
            try:
                if ticket.pending:
                    message = await anext(iterator)
                else:
                    message = await asyncio.wait_for(anext(iterator), self._idle_timeout_s)
            except StopAsyncIteration:
                return
            except TimeoutError:
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"no message came for {self._idle_timeout_s:g} s (GATEWAY_STREAM_IDLE_TIMEOUT_S): the stream is"
                    " ended; send the next message within it, or close the stream when done",
                )
            nbytes = int(message.ByteSize())
            # The gateway reads a stream ahead of its answers, so a stream that only sends faster than it is served
            # waits for room (gRPC's flow control then slows the client; the stream holds nothing more meanwhile)
            # rather than fail halfway; refused when none comes within the idle timeout.
            while not ticket.receive(nbytes):
                if not await self._admission.room_freed(self._idle_timeout_s):
                    await self._refuse(context)
            yield message

    def _counted(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        admission = self._admission

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if handler.request_streaming:
                ticket = _StreamTicket(admission)
                try:
                    return await handler.stream_unary(self._messages(request, ticket, context), context)
                finally:
                    ticket.close()
            nbytes = int(request.ByteSize())
            if not admission.enter(nbytes):
                await self._refuse(context)
            try:
                return await handler.unary_unary(request, context)
            finally:
                admission.leave(nbytes)

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if handler.request_streaming:
                # One answer per message (UpsertItems): a message's bytes are held until its answer is sent.
                ticket = _StreamTicket(admission)
                try:
                    async for response in handler.stream_stream(self._messages(request, ticket, context), context):
                        ticket.answered()
                        yield response
                finally:
                    ticket.close()
                return
            nbytes = int(request.ByteSize())
            if not admission.enter(nbytes):
                await self._refuse(context)
            try:
                async for response in handler.unary_stream(request, context):
                    yield response
            finally:
                admission.leave(nbytes)

        return handler_like(handler, unary, streaming)


class _StreamTicket:
    """What a request stream holds: the bytes of the messages it received and has not answered yet, and a place
    among the requests in flight while it holds any."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.pending: deque[int] = deque()
        self._bytes = 0
        self._place = False

    def receive(self, nbytes: int) -> bool:
        """Reserve a message that arrived; False (nothing more held) when it does not fit."""
        if not self._place:
            if not self._admission.take_place():
                return False
            self._place = True
        if not self._admission.take_bytes(nbytes, self._bytes):
            self._release_place_if_idle()
            return False
        self.pending.append(nbytes)
        self._bytes += nbytes
        return True

    def answered(self) -> None:
        if self.pending:
            nbytes = self.pending.popleft()
            self._bytes -= nbytes
            self._admission.give_back(nbytes, False)
        self._release_place_if_idle()

    def _release_place_if_idle(self) -> None:
        if self._place and not self.pending:
            self._admission.give_back(0, True)
            self._place = False

    def close(self) -> None:
        self._admission.give_back(self._bytes, self._place)
        self.pending.clear()
        self._bytes, self._place = 0, False


# ---- HTTP -------------------------------------------------------------------------------------------------------


def refused_response(admission: Admission) -> web.Response:
    """503 with Retry-After, counted in the metrics as what it is over gRPC: RESOURCE_EXHAUSTED, a refusal."""
    response = error_body(503, "OVERLOADED", admission.refusal())
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    response[GRPC_CODE_KEY] = grpc.StatusCode.RESOURCE_EXHAUSTED
    return response


def request_bytes(request: web.Request, body_limit: int) -> int:
    """What an HTTP request reserves: its declared length, or the body limit when it streams one of unknown size."""
    if request.content_length is not None:
        return request.content_length
    return body_limit if request.body_exists else 0


#: Where the admission middleware leaves the body it read, for the handler (services.gateway.http.parsing.body_of).
BODY_KEY = web.RequestKey("fashionsearch_body", bytes)


class BodyTooLarge(Exception):
    """The body grew past the body limit while it was read (chunked, or longer than its Content-Length said)."""


class _BodyRefused(Exception):
    """The body's next chunk does not fit in the bytes in flight."""


class _BodyTooSlow(Exception):
    """The body came slower than the minimum rate allows."""


def body_timeout_response(message: str) -> web.Response:
    response = error_body(408, "REQUEST_TIMEOUT", message)
    response[GRPC_CODE_KEY] = grpc.StatusCode.DEADLINE_EXCEEDED
    response.force_close()
    return response


def http_admission(
    admission: Admission, body_limit: int, body_timeout_s: float, body_min_rate_bps: int = 0
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """aiohttp middleware running each request (but health checks and scrapes) under a ticket: the body is read
    here, its bytes reserved as they arrive, then the request takes its place and the handler runs."""
    stopped = f"the request body stopped arriving: nothing came for {body_timeout_s:g} s (GATEWAY_HTTP_BODY_TIMEOUT_S)"

    async def read_body(request: web.Request, held: list[int]) -> bytes:
        body = bytearray()
        started = last = time.monotonic()
        while True:
            # the next chunk's deadline, and the whole body's: the body timeout, then a second more for each
            # MIN_RATE bytes come; whichever is sooner says why the body is refused
            next_by = last + body_timeout_s
            whole_by = started + body_timeout_s + len(body) / body_min_rate_bps if body_min_rate_bps else next_by
            try:
                chunk = await asyncio.wait_for(request.content.readany(), min(next_by, whole_by) - time.monotonic())
            except TimeoutError:
                if whole_by < next_by:
                    raise _BodyTooSlow(
                        f"the request body came too slowly: {len(body)} bytes in {time.monotonic() - started:.1f} s"
                        f" (at least {body_min_rate_bps} bytes a second after the first {body_timeout_s:g} s,"
                        " GATEWAY_HTTP_BODY_MIN_RATE_BPS)"
                    ) from None
                raise
            last = time.monotonic()
            if not chunk:
                return bytes(body)
            if len(body) + len(chunk) > body_limit:
                raise BodyTooLarge()
            if not admission.take_bytes(len(chunk), held[0]):
                raise _BodyRefused()
            held[0] += len(chunk)
            body.extend(chunk)

    @web.middleware
    async def admit(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in _UNCOUNTED_HTTP_PATHS:
            return await handler(request)
        # Refused from its headers when it could not fit now (nothing is reserved until the bytes come).
        if not admission.has_room(request_bytes(request, body_limit)):
            admission.note_refusal(request.remote)
            return refused_response(admission)
        held = [0]
        try:
            if request.body_exists:
                try:
                    request[BODY_KEY] = await read_body(request, held)
                except TimeoutError:
                    logger.info("%s %s: %s", request.method, request.path, "the body stopped arriving")
                    return body_timeout_response(stopped)
                except _BodyTooSlow as slow:
                    logger.info("%s %s: %s", request.method, request.path, slow)
                    return body_timeout_response(str(slow))
                except _BodyRefused:
                    admission.note_refusal(request.remote)
                    refused = refused_response(admission)
                    refused.force_close()  # the rest of the body is not read
                    return refused
            if not admission.take_place():
                admission.note_refusal(request.remote)
                return refused_response(admission)
            try:
                return await handler(request)
            finally:
                admission.give_back(0, True)
        finally:
            admission.give_back(held[0], False)

    return admit
