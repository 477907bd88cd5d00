"""The gRPC server wiring every service shares: health, reflection, limits, binding, signals, shutdown.

A service's `server.py` does, in this order:

    stop = StopSignal()                         # first, so no signal during start-up is lost
    running = await start_server(register, service_names, host=..., port=..., describe={...})
    await asyncio.to_thread(model.warm_up)      # health says NOT_SERVING until here
    await running.set_serving()
    await running.wait_for_signal(grace_s, stop)  # SIGTERM/SIGINT -> running.stop(grace_s)

`RunningServer.stop()` is idempotent: NOT_SERVING, `await server.stop(grace)`, then the closers, once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fashionsearch import metrics
from fashionsearch.interceptors import ObservingInterceptor

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_GRACE_S = 5.0
HEALTH_SERVICE_NAME = health.SERVICE_NAME

Closer = Callable[[], Awaitable[Any] | Any]


def service_name(module: Any, service: str) -> str:
    """Full name of a service of a generated `*_pb2` module, e.g. service_name(classifier_pb2, "Classifier")."""
    return str(module.DESCRIPTOR.services_by_name[service].full_name)


def server_options(
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_connection_age_s: float | None = None,
    max_streams_per_connection: int | None = None,
) -> list[tuple[str, Any]]:
    """Channel options of every server: message size limits (images are larger than gRPC's 4 MB default).

    With `max_connection_age_s`, clients are asked to reconnect after that long (in-flight calls get as long again
    to finish), so a round_robin client resolves the name again and finds the replicas added since it connected.
    `max_streams_per_connection` caps the calls one connection carries at once (HTTP/2 SETTINGS).
    """
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    if max_connection_age_s is not None:
        age_ms = int(max_connection_age_s * 1000)
        options += [("grpc.max_connection_age_ms", age_ms), ("grpc.max_connection_age_grace_ms", age_ms)]
    if max_streams_per_connection is not None:
        options.append(("grpc.max_concurrent_streams", max_streams_per_connection))
    return options


class HealthServicer(health.aio.HealthServicer):
    """grpc's health servicer, which also answers the process it runs in (the gateway's HTTP /healthz)."""

    def status(self, service: str = "") -> int:
        """What Check answers for `service` (a HealthCheckResponse.ServingStatus), SERVICE_UNKNOWN for a name never
        set; graceful shutdown included."""
        # grpc keeps the state in this mapping and has no public reader for it (unit test: test_health_state.py).
        return int(self._server_status.get(service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN))


class RunningServer:
    """A started grpc.aio server with its health service; stop it with `stop()` (idempotent)."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health_servicer: HealthServicer,
        service_names: Sequence[str],
        host: str,
        port: int,
        closers: Iterable[Closer] = (),
    ) -> None:
        self.server = server
        self.health = health_servicer
        self.service_names = tuple(service_names)
        self.host = host
        self.port = port
        self._closers = list(closers)
        self._stopping: asyncio.Task[None] | None = None
        #: Port of the /metrics listener started by `serve_metrics`, None when there is none.
        self.metrics_port: int | None = None

    @property
    def address(self) -> str:
        """`host:port` a client on this machine can dial (the wildcard hosts become localhost)."""
        if self.host in ("0.0.0.0", "::", "[::]", ""):
            return f"localhost:{self.port}"
        if ":" in self.host and not self.host.startswith("["):
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def serve_metrics(self, port: int | None) -> None:
        """Serve /metrics on its own port (0: a free one) until shutdown; None does nothing.

        A port that cannot be bound is logged as an error and the service goes on without metrics: metrics are
        never a reason to stop serving searches.
        """
        if port is None:
            return
        try:
            listener = metrics.start_listener(self.host, port)
        except OSError as error:
            logger.error("metrics not served: cannot listen on port %s: %s", port, error)
            return
        self.metrics_port = listener.port
        self.add_closer(listener.close)

    def add_closer(self, closer: Closer) -> None:
        """Run `closer` (sync or async) at shutdown, after the server stopped; last added runs first."""
        self._closers.append(closer)

    async def set_serving(self) -> None:
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)

    async def set_not_serving(self) -> None:
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def _set_all(self, status: int) -> None:
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def stop(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """NOT_SERVING, let in-flight RPCs finish for up to `grace_s`, close resources.

        A second call does nothing new: it waits for the first one to finish.
        """
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace_s))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace_s: float) -> None:
        logger.info("shutting down, grace %.1f s", grace_s)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        for closer in reversed(self._closers):
            try:
                result = closer()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("a resource failed to close during shutdown")
        logger.info("stopped")

    async def wait_for_signal(self, grace_s: float = DEFAULT_GRACE_S, stop: StopSignal | None = None) -> None:
        """Serve until SIGTERM or SIGINT (or until the server stops otherwise), then stop gracefully.

        Pass the `StopSignal` created at the very start of `serve()`, so a signal that arrives while the model
        loads or warms up is not lost.
        """
        stop = stop or StopSignal()
        try:
            terminated = asyncio.ensure_future(self.server.wait_for_termination())
            requested = asyncio.ensure_future(stop.event.wait())
            await asyncio.wait({terminated, requested}, return_when=asyncio.FIRST_COMPLETED)
            requested.cancel()
            if stop.event.is_set():
                logger.info("stop signal received")
            await self.stop(grace_s)
            terminated.cancel()
        finally:
            stop.close()


class StopSignal:
    """SIGTERM and SIGINT set `event` instead of killing the process; create it first thing in `serve()`."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            self._loop.add_signal_handler(sig, self.event.set)

    def close(self) -> None:
        for sig in self.SIGNALS:
            self._loop.remove_signal_handler(sig)


async def start_server(
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    *,
    host: str,
    port: int,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    describe: Mapping[str, Any] | None = None,
    closers: Iterable[Closer] = (),
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
    maximum_concurrent_rpcs: int | None = None,
    max_connection_age_s: float | None = None,
    max_streams_per_connection: int | None = None,
) -> RunningServer:
    """Create, wire and start a grpc.aio server; health says NOT_SERVING until `set_serving()`.

    `register` adds the service's servicers; `service_names` are their full names (for health and reflection);
    `describe` (e.g. the model identity) is logged with the listen address. Port 0 picks a free port, which
    `RunningServer.port` reports. With `credentials` (grpc.ssl_server_credentials) the port speaks TLS only.
    Beyond `maximum_concurrent_rpcs` calls in progress, new calls end at once with RESOURCE_EXHAUSTED, which bounds
    the memory that in-flight requests hold (grpc counts a call from its headers, before its request has arrived).
    `max_connection_age_s`, `max_streams_per_connection`: see `server_options`. Every call gets a request
    id, metrics and an access log line (fashionsearch.interceptors) before `interceptors` see it.
    """
    server = grpc.aio.server(
        options=server_options(max_message_bytes, max_connection_age_s, max_streams_per_connection),
        # First, so that request ids, metrics and access logs also cover what the other interceptors refuse.
        interceptors=[ObservingInterceptor(), *interceptors],
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
    )
    register(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME),
        server,
    )
    target = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(target) if credentials is None else server.add_secure_port(target, credentials)
    except RuntimeError as bad:
        raise OSError(f"cannot listen on {target}: {bad}") from None
    if bound == 0:
        raise OSError(f"cannot listen on {target} (address in use or not available)")
    running = RunningServer(server, health_servicer, service_names, host, bound, closers)
    await running.set_not_serving()
    await server.start()
    logger.info(
        "listening on %s:%s%s for %s",
        host,
        bound,
        " (TLS)" if credentials is not None else "",
        ", ".join(service_names),
        extra={"listen_host": host, "listen_port": bound, **(describe or {})},
    )
    return running
