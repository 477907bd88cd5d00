"""The HTTP application and its server: error handling for every route, the routes, and the aiohttp site beside the
gRPC server (same event loop)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc
from aiohttp import hdrs, web

from fashionsearch.errors import FashionSearchError
from fashionsearch.serving import HealthServicer
from fashionsearch.throttle import Throttle
from services.gateway.admission import Admission, BodyTooLarge, http_admission, refused_response, request_bytes
from services.gateway.http.handlers import WEB_DIR, HttpApi
from services.gateway.http.parsing import check_query_text
from services.gateway.http.responses import CATALOGUE_PREFIX, check_length, error_body, too_large
from services.gateway.observability import (
    http_status_codes,
    metrics_endpoint,
    observe_early_answer,
    observing_middleware,
    send_request_id,
)
from services.gateway.security import MalformedRequestLog, http_middleware, http_refusal, http_ssl_context
from services.gateway.service import GatewayService
from services.gateway.settings import Settings

logger = logging.getLogger(__name__)

SERVER_HEADER = "fashionsearch"


def errors_middleware(max_body_bytes: int) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        refused = check_length(request, max_body_bytes)
        if refused is not None:
            return refused
        try:
            check_query_text(request)
            return await handler(request)
        except FashionSearchError as error:
            status = error.http_status
            return error_body(status, error.code.name, error.message)
        except (BodyTooLarge, web.HTTPRequestEntityTooLarge):
            return too_large(max_body_bytes)
        except (web.RequestPayloadError, ConnectionResetError) as error:
            # The body breaks its Content-Encoding or chunked framing, or the client left in the middle of it: the
            # client's doing, not a server error. Closing the connection stops aiohttp reading (and reporting) the
            # rest; a client that left gets nothing, and only a debug line is logged, as nginx does.
            if isinstance(error, ConnectionResetError):
                logger.debug("%s %s: the client closed the connection during the body", request.method, request.path)
                detail = "the connection closed before the whole body arrived"
            else:
                detail = str(error).strip().splitlines()[-1].strip()[:200]
            response = error_body(400, "INVALID_ARGUMENT", f"the request body could not be read: {detail}")
            response.force_close()
            return response
        except web.HTTPException as error:
            if error.status < 400:
                raise
            code = error.reason.upper().replace(" ", "_").replace("-", "_")
            message = error.text if error.text and not error.text.startswith(f"{error.status}:") else error.reason
            if error.status == 404:
                message = f"no such endpoint: {request.method} {request.path} (the API is listed at /openapi.json)"
            elif isinstance(error, web.HTTPMethodNotAllowed):
                allowed = ", ".join(sorted(error.allowed_methods))
                message = f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
            return error_body(error.status, code, message)
        except Exception:
            logger.exception("unexpected error on %s %s", request.method, request.path)
            return error_body(500, "INTERNAL", "internal error; the server log has the details")

    return errors


async def server_header(request: web.Request, response: web.StreamResponse) -> None:
    """Name the product, not aiohttp and its version (RFC 9110 leaves the detail to the server; nginx's
    server_tokens off is the usual practice), and have browsers take each response as its declared type.
    aiohttp's own 400 for a request it cannot parse is sent before the application sees it, and keeps aiohttp's
    header (aio-libs/aiohttp#6463)."""
    response.headers[hdrs.SERVER] = SERVER_HEADER
    response.headers["X-Content-Type-Options"] = "nosniff"


def create_app(
    service: GatewayService,
    settings: Settings,
    health_servicer: HealthServicer | None = None,
    admission: Admission | None = None,
) -> web.Application:
    """The aiohttp application: JSON API under /v1, health, OpenAPI, images and the web page. `admission` is the
    cap on work in flight it shares with the gRPC server (its own one when not given)."""
    limit = settings.http_body_limit
    admission = admission or Admission(settings.max_concurrent_rpcs, settings.max_bytes_in_flight)
    api = HttpApi(service, settings, health_servicer)
    refusals = Throttle()  # refused keys: one log line per interval

    def early_refusal(request: web.Request) -> tuple[web.Response, grpc.StatusCode] | None:
        """The answer refusing a request from its headers alone, with the gRPC code it stands for, or None."""
        too_large = check_length(request, limit)
        if too_large is not None:
            return too_large, grpc.StatusCode.RESOURCE_EXHAUSTED
        denied = http_refusal(settings.api_keys, request, refusals)
        if denied is not None:
            return error_body(denied.http_status, denied.code.name, denied.message), denied.code
        if not admission.has_room(request_bytes(request, limit)):
            admission.note_refusal(request.remote)
            return refused_response(admission), grpc.StatusCode.RESOURCE_EXHAUSTED
        return None

    async def expect(request: web.Request) -> web.Response | None:
        """Answer `Expect: 100-continue` with 413 when Content-Length is over the limit, 401/403 when the API key
        does not allow the call, or 503 when the gateway is at its cap on work in flight, before the body is sent."""
        answer = early_refusal(request)
        if answer is not None:  # aiohttp sends it without running the middlewares: counted and logged here
            observe_early_answer(request, *answer)
            return answer[0]
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
        return None

    # HTTP status -> the gRPC code of the error that answers with it, so errors are counted by the same kinds.
    observe = observing_middleware(http_status_codes())
    middlewares = [
        observe,
        errors_middleware(limit),
        http_middleware(settings.api_keys, refusals),
        http_admission(admission, limit, settings.http_body_timeout_s, settings.http_body_min_rate_bps),
    ]
    app = web.Application(client_max_size=limit, middlewares=middlewares)
    app.on_response_prepare.append(server_header)
    app.on_response_prepare.append(send_request_id)
    app.router.add_post("/v1/search", api.search, expect_handler=expect)
    app.router.add_post("/v1/search/by-id", api.search_by_id, expect_handler=expect)
    app.router.add_post("/v1/search/text", api.search_text, expect_handler=expect)
    app.router.add_post("/v1/search/outfit", api.search_outfit, expect_handler=expect)
    app.router.add_get("/v1/items", api.list_items)
    app.router.add_post("/v1/items", api.post_items, expect_handler=expect)
    app.router.add_post("/v1/items/delete", api.delete_items, expect_handler=expect)
    app.router.add_get("/v1/items/{id}", api.get_item)
    app.router.add_put("/v1/items/{id}", api.put_item, expect_handler=expect)
    app.router.add_delete("/v1/items/{id}", api.delete_item)
    app.router.add_get("/v1/items/{id}/similar", api.similar)
    app.router.add_get("/v1/items/{id}/image", api.item_image)
    app.router.add_get("/v1/stats", api.stats)
    app.router.add_post("/v1/admin/backup", api.backup)
    app.router.add_post("/v1/admin/compact", api.compact)
    app.router.add_get("/v1/categories", api.categories)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/openapi.json", api.openapi)
    if settings.metrics_on_http_port:
        app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get(CATALOGUE_PREFIX + "{path:.+}", api.images)
    app.router.add_get("/images/{path:.+}", api.images)  # the 0.1 prefix, kept for one version (deprecated)
    app.router.add_get("/", api.index_page)
    app.router.add_static("/static/", WEB_DIR, append_version=False)
    return app


class HttpServer:
    """The running HTTP site; close() is idempotent."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port
        self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._runner.cleanup()


async def start_http(
    settings: Settings,
    service: GatewayService,
    health_servicer: HealthServicer | None = None,
    admission: Admission | None = None,
) -> HttpServer:
    """Serve the HTTP API and page on settings.host:settings.http_port (0 picks a free port) in this event loop."""
    if settings.http_port is None:
        raise ValueError("HTTP is disabled (http_port is None)")
    host = settings.host.strip("[]") or "0.0.0.0"
    runner = web.AppRunner(
        create_app(service, settings, health_servicer, admission),
        access_log=None,
        shutdown_timeout=settings.grace_s,
        # aiohttp closes a connection that is idle, or whose request headers are not all there, this long after it
        # opened or its last answer: the header deadline (nginx's client_header_timeout), keep-alive included.
        keepalive_timeout=settings.http_header_timeout_s,
        # After an answer that left a body unread (408, 413, 503), aiohttp reads and drops the rest so the client
        # gets the answer, for at most this long: no longer than the body timeout gives a body that stopped.
        lingering_time=settings.http_body_timeout_s,
        logger=MalformedRequestLog(),
    )
    await runner.setup()
    site = web.TCPSite(
        runner, host, settings.http_port, ssl_context=http_ssl_context(settings.tls_cert_file, settings.tls_key_file)
    )
    try:
        await site.start()
    except OSError as bad:
        await runner.cleanup()
        raise OSError(f"cannot listen for HTTP on {host}:{settings.http_port}: {bad.strerror or bad}") from None
    port = int(runner.addresses[0][1])
    logger.info(
        "HTTP API and web page on %s:%s", host, port, extra={"http_port": port, "image_root": str(settings.image_root)}
    )
    return HttpServer(runner, host, port)
