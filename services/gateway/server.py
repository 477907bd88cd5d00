"""The gateway's gRPC server: health, reflection and graceful shutdown from fashionsearch.serving."""

from __future__ import annotations

import logging

from fashionsearch import metrics
from fashionsearch.serving import RunningServer, service_name, start_server
from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc
from services.gateway.admission import Admission, AdmissionInterceptor
from services.gateway.bootstrap import Gateway, bootstrap, max_message_bytes
from services.gateway.http.app import start_http
from services.gateway.security import ApiKeyInterceptor, grpc_server_credentials
from services.gateway.settings import Settings

logger = logging.getLogger(__name__)

SERVICE_NAME = service_name(gateway_pb2, "Gateway")


async def start(settings: Settings, gateway: Gateway | None = None) -> RunningServer:
    """Start the gateway (wired by bootstrap() unless given) and mark it SERVING.

    The gateway has no model of its own to warm up: it is ready once its store is open. Its peers have their own
    health; a peer that is down makes the affected RPCs answer UNAVAILABLE rather than the gateway NOT_SERVING.
    """
    gateway = gateway or bootstrap(settings)
    admission = Admission(settings.max_concurrent_rpcs, settings.max_bytes_in_flight)
    metrics.count_catalogue(gateway.index.count)
    info = gateway.index.info()
    keys = settings.api_keys
    if not keys.write and keys.allow_unauthenticated_writes:
        logger.warning("catalogue writes need no API key (GATEWAY_ALLOW_UNAUTHENTICATED_WRITES): local use only")
    try:
        running = await start_server(
            lambda server: gateway_pb2_grpc.add_GatewayServicer_to_server(gateway.servicer, server),
            [SERVICE_NAME],
            host=settings.host,
            port=settings.port,
            max_message_bytes=max_message_bytes(settings),
            describe={
                "classifier_addr": str(settings.classifier_addr),
                "embedder_addr": str(settings.embedder_addr),
                "store": settings.qdrant_url or str(settings.data_dir),
                "collection": settings.collection,
                "stored_embedder": str(info.embedder) if info else None,
                "item_count": gateway.index.count(),
                "access": repr(keys),
                "tls": settings.tls_cert_file is not None,
            },
            closers=[gateway.close],
            interceptors=[ApiKeyInterceptor(keys), AdmissionInterceptor(admission, settings.stream_idle_timeout_s)],
            credentials=grpc_server_credentials(settings.tls_cert_file, settings.tls_key_file),
            # No grpc cap on calls in progress: grpc counts a call from its headers, so calls whose request never
            # arrives filled it and failed every other call. The admission counts a call once its request is there
            # (for gRPC and HTTP together, with a retry hint); a connection carries at most this many calls at once.
            max_streams_per_connection=settings.max_streams_per_connection,
        )
    except BaseException:
        await gateway.close()
        raise
    if settings.http_port is not None:
        try:
            http_server = await start_http(settings, gateway.service, running.health, admission)
        except BaseException:
            await running.stop(0)
            raise
        running.add_closer(http_server.close)
    if settings.metrics_port != settings.http_port:
        running.serve_metrics(settings.metrics_port)
    await running.set_serving()
    return running


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    running = await start(settings)
    await running.wait_for_signal(settings.grace_s)
