"""The exception hierarchy and its mapping to gRPC status codes."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from fashionsearch import errors


class FakeContext:
    """Just enough of grpc.aio.ServicerContext: abort() records the status and raises like grpc does."""

    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        raise grpc.aio.AbortError()


@pytest.mark.parametrize(
    ("error", "code", "http_status"),
    [
        (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, 400),
        (errors.NotFound, grpc.StatusCode.NOT_FOUND, 404),
        (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, 409),
        (errors.Unavailable, grpc.StatusCode.UNAVAILABLE, 503),
        (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
        (errors.Internal, grpc.StatusCode.INTERNAL, 500),
        (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401),
        (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, 403),
        # The vector store's errors are part of the tree, so nothing translates them.
        (errors.StoreError, grpc.StatusCode.INTERNAL, 500),
        (errors.StoreUnavailableError, grpc.StatusCode.UNAVAILABLE, 503),
        (errors.CollectionMismatchError, grpc.StatusCode.FAILED_PRECONDITION, 409),
        (errors.UnknownFilterFieldError, grpc.StatusCode.INVALID_ARGUMENT, 400),
        (errors.StoreFullError, grpc.StatusCode.RESOURCE_EXHAUSTED, 507),
    ],
)
def test_each_error_has_its_status(
    error: type[errors.FashionSearchError], code: grpc.StatusCode, http_status: int
) -> None:
    instance = error("what went wrong")
    assert isinstance(instance, errors.FashionSearchError)
    assert instance.code == code and instance.http_status == http_status and instance.message == "what went wrong"
    assert errors.item_error_fields(instance) == {"code": code.value[0], "message": "what went wrong"}


class Servicer:
    @errors.rpc_errors
    async def Unary(self, request: str, context: FakeContext) -> str:
        if request == "bad":
            raise errors.NotFound("no product with id 7")
        if request == "bug":
            raise KeyError("secret internals")
        return "ok"

    @errors.rpc_errors
    async def Stream(self, request: str, context: FakeContext):  # type: ignore[no-untyped-def]
        yield 1
        raise errors.InvalidArgument("item 2 is bad")


def test_rpc_errors_turns_exceptions_into_statuses(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        servicer = Servicer()
        assert await servicer.Unary("fine", FakeContext()) == "ok"

        context = FakeContext()
        with pytest.raises(grpc.aio.AbortError):
            await servicer.Unary("bad", context)
        assert context.status == (grpc.StatusCode.NOT_FOUND, "no product with id 7")

        context = FakeContext()
        with pytest.raises(grpc.aio.AbortError):
            await servicer.Unary("bug", context)
        assert context.status is not None and context.status[0] == grpc.StatusCode.INTERNAL
        assert "secret" not in context.status[1]

        context = FakeContext()
        received = []
        with pytest.raises(grpc.aio.AbortError):
            async for item in servicer.Stream("x", context):
                received.append(item)
        assert received == [1]
        assert context.status == (grpc.StatusCode.INVALID_ARGUMENT, "item 2 is bad")

    asyncio.run(scenario())
    assert "unexpected error in Servicer.Unary" in caplog.text


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_from_rpc_error_names_the_dependency() -> None:
    slow = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, ""), "the embedder")
    assert isinstance(slow, errors.DeadlineExceeded) and "the embedder did not answer in time" in slow.message
    down = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused"), "the classifier")
    assert isinstance(down, errors.Unavailable) and "the classifier is unavailable" in down.message
    bad = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "image is empty"), "the embedder")
    assert isinstance(bad, errors.InvalidArgument) and bad.message == "image is empty"
    odd = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.INTERNAL, "bug"), "the classifier")
    assert isinstance(odd, errors.Unavailable)
