"""The one exception hierarchy of fashionsearch: each class carries the gRPC status code and the HTTP status it
produces.

Domain code raises these; servicers turn them into a gRPC status with `abort()` (or into a per-item
`ItemError` in batch and stream RPCs with `item_error_fields()`), and the gateway's HTTP API into the error's
`http_status`, so every service and both APIs answer with the same codes. The vector store's errors (StoreError and
its subclasses) and the gateway's access errors (Unauthenticated, PermissionDenied) are part of the tree.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypedDict

import grpc
import grpc.aio


class FashionSearchError(Exception):
    """Base class: a failure with a message a person understands and the gRPC status it maps to."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(FashionSearchError):
    """The request is bad: undecodable or oversized image, out-of-range number, unknown filter field."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400


class NotFound(FashionSearchError):
    """The request names something that does not exist, e.g. an unknown product id."""

    code = grpc.StatusCode.NOT_FOUND
    http_status = 404


class FailedPrecondition(FashionSearchError):
    """The system is not in a state to answer, e.g. stored vectors made by another embedder version."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class Unavailable(FashionSearchError):
    """A dependency is down or not ready; retrying later may work."""

    code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class DeadlineExceeded(FashionSearchError):
    """A dependency did not answer within the deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504


class ResourceExhausted(FashionSearchError):
    """A limit was hit, e.g. a batch larger than the server accepts."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 413


class Internal(FashionSearchError):
    """A bug or an unexpected failure inside the service."""

    code = grpc.StatusCode.INTERNAL
    http_status = 500


class Unauthenticated(FashionSearchError):
    """No API key, or a key the gateway does not know."""

    code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401


class PermissionDenied(FashionSearchError):
    """A known key that does not allow this call (a read key on a write), or writes turned off."""

    code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403


# The vector store's errors: a plain StoreError is an internal failure; the subclasses say more. The store adapters
# raise them, fashionsearch.store exports them, and they reach the APIs with the codes below.


class StoreError(FashionSearchError):
    """A vector store operation failed."""


class StoreUnavailableError(StoreError, Unavailable):
    """The store could not be reached or did not answer (a Qdrant server down, a network error)."""


class CollectionMismatchError(StoreError, FailedPrecondition):
    """The collection holds vectors from another embedder (model, version or dimension) than the one asked for."""


class StoreFullError(StoreError, ResourceExhausted):
    """The disk under the store has less free space than the reserve kept for it, so a write is refused (HTTP 507
    Insufficient Storage) before the store's memory-mapped files could meet a full disk."""

    http_status = 507


class UnknownFilterFieldError(StoreError, InvalidArgument, ValueError):
    """A filter names a payload field that is not one of the filter fields."""


def code_number(code: grpc.StatusCode) -> int:
    """The numeric value of a status code, as carried in `ItemError.code`."""
    return int(code.value[0])


async def abort(context: grpc.aio.ServicerContext, error: FashionSearchError) -> NoReturn:
    """End the RPC with the error's status code and message."""
    await context.abort(error.code, error.message)
    raise AssertionError("context.abort() returned")  # pragma: no cover - abort always raises


def from_rpc_error(error: grpc.aio.AioRpcError | grpc.RpcError, what: str) -> FashionSearchError:
    """Translate a failed call to another service into our hierarchy, naming the dependency in the message.

    INVALID_ARGUMENT and NOT_FOUND pass through (the caller's input was bad); a deadline stays a deadline; every
    other failure of a dependency is UNAVAILABLE for our own caller.
    """
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    passthrough: dict[grpc.StatusCode, type[FashionSearchError]] = {
        grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
        grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
        grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    }
    if code in passthrough:
        return passthrough[code](details or f"{what} refused the request")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{what} did not answer in time")
    return Unavailable(f"{what} is unavailable ({code.name if code else 'UNKNOWN'}: {details})")


class ItemErrorFields(TypedDict):
    code: int
    message: str


def item_error_fields(error: FashionSearchError) -> ItemErrorFields:
    """Keyword arguments for a `fashionsearch.v1.ItemError` describing `error` (one failed item of a batch)."""
    return {"code": code_number(error.code), "message": error.message}


def rpc_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate an async servicer method (unary or server-streaming) so that our errors become statuses.

    A FashionSearchError ends the RPC with its code and message; any other exception is logged with its traceback
    and ends the RPC as INTERNAL with a generic message, so a bug never leaks internals or kills the server.
    """
    log = logging.getLogger(method.__module__)

    async def _fail(context: grpc.aio.ServicerContext, exc: Exception) -> NoReturn:
        if isinstance(exc, FashionSearchError):
            await abort(context, exc)
        log.exception("unexpected error in %s", method.__qualname__)
        await abort(context, Internal("internal error; the server log has the details"))

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in method(self, request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - turned into a status by _fail
                await _fail(context, exc)

        return stream_wrapper

    @functools.wraps(method)
    async def unary_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - turned into a status by _fail
            await _fail(context, exc)

    return unary_wrapper
