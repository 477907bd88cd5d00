"""Access control (API keys) and TLS for the gateway's public endpoints, gRPC and HTTP alike.

Policy (one function, `ApiKeys.authorize`, used by the gRPC interceptor and the HTTP middleware):

- Catalogue writes (UpsertItems, UpsertBatch, DeleteItems; HTTP POST/PUT/DELETE on /v1/items) need a write key.
  With no write keys configured, writes are refused (PERMISSION_DENIED) unless
  GATEWAY_ALLOW_UNAUTHENTICATED_WRITES=true, which is meant for local development only (`make run`, tests).
- Reads (Search, SearchOutfit, SearchById, SearchText, GetItem, ListItems, GetStats and their HTTP forms) are open
  while no read keys are configured; otherwise they need a read key or a write key.
- Health, reflection, the OpenAPI document, the web page and product images stay open.

A client sends its key as `authorization: Bearer <key>` (gRPC metadata or HTTP header) or as `x-api-key: <key>`.
A missing or unknown key is UNAUTHENTICATED (HTTP 401); a valid read key on a write is PERMISSION_DENIED (403).
Keys are compared in constant time, and a refusal is logged with the method and the peer, never the key. A request
that is not valid HTTP is logged as one short line without its bytes, at most once per interval
(`MalformedRequestLog`).
"""

from __future__ import annotations

import enum
import hmac
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from aiohttp import http_exceptions, web

from fashionsearch.config import ConfigError
from fashionsearch.errors import FashionSearchError, PermissionDenied, Unauthenticated
from fashionsearch.interceptors import handler_like
from fashionsearch.throttle import Throttle, left_out_note
from fashionsearch.v1 import gateway_pb2

logger = logging.getLogger(__name__)

#: Shortest key accepted: a key is a secret, not a password (`python -c "import secrets;
#: print(secrets.token_urlsafe(32))"` makes a good one).
MIN_KEY_CHARS = 16
#: Metadata / header names a client may carry its key in (gRPC metadata keys are lower case).
AUTHORIZATION = "authorization"
API_KEY_HEADER = "x-api-key"
_BEARER = "bearer "
_KEY_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class Access(enum.Enum):
    OPEN = "open"
    READ = "read"
    WRITE = "write"


GATEWAY_SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]
WRITE_METHODS = frozenset({"UpsertItems", "UpsertBatch", "DeleteItems"})
READ_METHODS = frozenset({"Search", "SearchOutfit", "SearchById", "SearchText", "GetItem", "ListItems", "GetStats"})


def grpc_method_access() -> dict[str, Access]:
    """Full gRPC method path -> access level, for every Gateway method. A method added to the proto and not yet
    classified here needs a write key (deny by default); health and reflection are not listed, so they stay open."""
    access = {}
    for method in GATEWAY_SERVICE.methods:
        level = Access.READ if method.name in READ_METHODS and method.name not in WRITE_METHODS else Access.WRITE
        access[f"/{GATEWAY_SERVICE.full_name}/{method.name}"] = level
    return access


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys and the one authorisation rule."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    allow_unauthenticated_writes: bool = False

    def __repr__(self) -> str:  # never print the keys
        return (
            f"ApiKeys(read={len(self.read)} keys, write={len(self.write)} keys, "
            f"allow_unauthenticated_writes={self.allow_unauthenticated_writes})"
        )

    @property
    def reads_open(self) -> bool:
        return not self.read

    def authorize(self, presented: str | None, access: Access) -> None:
        """Return when `presented` may make a call of `access`; raise Unauthenticated / PermissionDenied otherwise.

        Every configured key is compared (in constant time) whatever the outcome, so the time taken says nothing
        about which key or how much of it matched.
        """
        if access is Access.OPEN:
            return
        is_write_key = _matches(presented, self.write)
        is_read_key = _matches(presented, self.read)
        if access is Access.READ:
            if self.reads_open or is_read_key or is_write_key:
                return
            raise Unauthenticated(_missing_or_unknown(presented, "read"))
        if is_write_key:
            return
        if not self.write:
            if self.allow_unauthenticated_writes:
                return
            raise PermissionDenied(
                "catalogue writes are turned off: the gateway has no write API key configured (set"
                " GATEWAY_WRITE_API_KEYS, or GATEWAY_ALLOW_UNAUTHENTICATED_WRITES=true for local development)"
            )
        if is_read_key:
            raise PermissionDenied("this API key allows searches only, not writes")
        raise Unauthenticated(_missing_or_unknown(presented, "write"))


def log_refusal(
    error: FashionSearchError, what: str, peer: str, presented: bool, throttle: Throttle | None = None
) -> None:
    """Log a refused call: what, from where, why; never the key. With a `throttle`, at most one line per its
    interval, counting the ones left out: any client can send a wrong key thousands of times a second."""
    left_out = throttle.allow() if throttle is not None else 0
    if left_out is None:
        return
    logger.warning(
        "refused %s from %s: %s%s",
        what,
        peer or "unknown peer",
        error.code.name,
        left_out_note(left_out),
        extra={"key_presented": presented, "left_out": left_out},
    )


def _missing_or_unknown(presented: str | None, kind: str) -> str:
    if presented is None:
        return (
            f"this call needs a {kind} API key: send it as 'authorization: Bearer <key>'"
            f" (or '{API_KEY_HEADER}: <key>') metadata/header"
        )
    return f"the API key is not valid for {kind}s"


def _matches(presented: str | None, keys: Sequence[str]) -> bool:
    if presented is None:
        return False
    candidate = presented.encode("utf-8", "surrogateescape")
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate, key.encode())
    return found


def key_from_headers(headers: Mapping[str, str] | Iterable[tuple[str, Any]]) -> str | None:
    """The key from `authorization: Bearer <key>` or `x-api-key`; None when neither is there."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        lowered = name.lower()
        if isinstance(value, bytes):  # binary metadata ("-bin" keys) carries no key
            continue
        if lowered == AUTHORIZATION and value[: len(_BEARER)].lower() == _BEARER:
            return value[len(_BEARER) :].strip()
        if lowered == API_KEY_HEADER:
            return value.strip()
    return None


def client_metadata(key: str | None) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata that carries `key` (empty when there is no key), for clients such as the indexer."""
    return ((AUTHORIZATION, f"Bearer {key}"),) if key else ()


# ---- configuration ----------------------------------------------------------------------------------------------


def parse_api_keys(variable: str, inline: str, file: str) -> tuple[str, ...]:
    """Keys from `<variable>` (comma-separated) or from the file named by `<variable>_FILE` (commas or one per
    line, `#` comments); errors name the variable, never a key."""
    if inline and file:
        raise ConfigError(f"set {variable} or {variable}_FILE, not both")
    text = inline
    if file:
        try:
            text = Path(file).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as bad:
            raise ConfigError(f"{variable}_FILE={file!r}: cannot read the keys: {bad}") from None
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    keys = [key.strip() for part in text.splitlines() for key in part.split(",")]
    keys = [key for key in keys if key]
    for position, key in enumerate(keys, 1):
        if len(key) < MIN_KEY_CHARS:
            raise ConfigError(
                f"{variable}: key {position} has {len(key)} characters; use at least {MIN_KEY_CHARS} (e.g. {_KEY_HINT})"
            )
        if not key.isascii() or not key.isprintable() or " " in key:
            raise ConfigError(f"{variable}: key {position} must be printable ASCII without spaces")
    return tuple(dict.fromkeys(keys))


def check_tls_files(cert_file: Path | None, key_file: Path | None) -> None:
    """Both or neither; and the pair must load, so a bad certificate fails before anything binds."""
    if (cert_file is None) != (key_file is None):
        raise ConfigError("set both GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE (PEM), or neither")
    if cert_file is None or key_file is None:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as bad:
        raise ConfigError(
            f"GATEWAY_TLS_CERT_FILE={str(cert_file)!r} / GATEWAY_TLS_KEY_FILE={str(key_file)!r}: cannot load the"
            f" certificate and key: {bad}"
        ) from None


def grpc_server_credentials(cert_file: Path | None, key_file: Path | None) -> grpc.ServerCredentials | None:
    if cert_file is None or key_file is None:
        return None
    return grpc.ssl_server_credentials([(key_file.read_bytes(), cert_file.read_bytes())])


def http_ssl_context(cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext | None:
    if cert_file is None or key_file is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


# ---- gRPC -------------------------------------------------------------------------------------------------------


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Refuses Gateway calls without the key their access level needs, before the servicer (or the request
    stream) is touched."""

    def __init__(self, keys: ApiKeys, method_access: Mapping[str, Access] | None = None) -> None:
        self._keys = keys
        self._access = dict(method_access if method_access is not None else grpc_method_access())
        self._throttle = Throttle()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        access = self._access.get(details.method, Access.OPEN)
        handler = await continuation(details)
        if access is Access.OPEN or handler is None:
            return handler
        presented = key_from_headers(details.invocation_metadata or ())
        try:
            self._keys.authorize(presented, access)
        except FashionSearchError as error:
            return _refusing_handler(handler, error, details.method, presented is not None, self._throttle)
        return handler


def _refusing_handler(
    handler: grpc.RpcMethodHandler, error: FashionSearchError, what: str, presented: bool, throttle: Throttle
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that ends the call with `error` without reading the request."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        log_refusal(error, what, context.peer(), presented, throttle)
        await context.abort(error.code, error.message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
        log_refusal(error, what, context.peer(), presented, throttle)
        await context.abort(error.code, error.message)
        yield  # pragma: no cover - abort raises; the yield makes this an async generator

    # The request is never parsed: a refused caller learns nothing from sending a malformed one.
    return handler_like(handler, unary, streaming, request_deserializer=_unread)


def _unread(raw: bytes) -> None:
    return None


# ---- HTTP -------------------------------------------------------------------------------------------------------

_HTTP_WRITE_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})
_HTTP_READ_POSTS = frozenset({"/v1/search", "/v1/search/by-id", "/v1/search/text", "/v1/search/outfit"})


def http_access(method: str, path: str) -> Access:
    """Access level of an HTTP request: /v1/ is the API (searches read, item changes write); the rest is open."""
    if not path.startswith("/v1/"):
        return Access.OPEN
    if method in _HTTP_WRITE_METHODS and path not in _HTTP_READ_POSTS:
        return Access.WRITE
    return Access.READ


def http_refusal(keys: ApiKeys, request: web.Request, throttle: Throttle) -> FashionSearchError | None:
    """The error refusing `request` (logged through `throttle`), or None when its key allows it."""
    access = http_access(request.method, request.path)
    if access is Access.OPEN:
        return None
    presented = key_from_headers(request.headers)
    try:
        keys.authorize(presented, access)
    except FashionSearchError as error:
        log_refusal(error, f"{request.method} {request.path}", request.remote or "", presented is not None, throttle)
        return error
    return None


def http_middleware(keys: ApiKeys, throttle: Throttle) -> Callable[..., Awaitable[web.StreamResponse]]:
    """aiohttp middleware applying `keys`; place it inside the middleware that turns FashionSearchError into a
    JSON error, so refusals look like every other error (401 / 403)."""

    @web.middleware
    async def api_keys(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        error = http_refusal(keys, request, throttle)
        if error is not None:
            raise error
        return await handler(request)

    return api_keys


class MalformedRequestLog(logging.LoggerAdapter[logging.Logger]):
    """The logger given to the gateway's aiohttp server, so a request that is not valid HTTP does not reach the log.

    aiohttp reports such a request (`Authorization : Bearer <key>`, bare-LF line endings, a bad header byte) with
    an ERROR, a traceback and the raw request bytes, API keys included, and any client can send one per
    connection. Here it becomes one WARNING naming the peer and the kind of error, never the bytes, at most one
    per `interval_s` (the next one says how many were left out). Everything else aiohttp logs goes on to
    aiohttp.server unchanged.
    """

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self._throttle = Throttle(interval_s, clock)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, http_exceptions.HttpProcessingError):
            self._malformed(str(args[0]) if args else "", error)
            return
        if isinstance(error, web.RequestPayloadError):
            # A body that breaks its encoding: the handler already answered 400; aiohttp meets the error again
            # while it drains the rest of the body, and has no peer to name then.
            self._malformed("", error)
            return
        super().log(level, msg, *args, **kwargs)

    def _malformed(self, peer: str, error: Exception) -> None:
        left_out = self._throttle.allow()
        if left_out is None:
            return
        logger.warning(
            "refused a malformed HTTP request from %s with 400 (%s)%s",
            peer or "an unnamed peer",
            type(error).__name__,
            left_out_note(left_out),
            extra={"left_out": left_out},
        )
