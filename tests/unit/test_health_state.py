"""The health servicer tells its state to the process it runs in (the gateway's /healthz), as Check answers it."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2

from fashionsearch.serving import HealthServicer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


def test_status_follows_set_and_graceful_shutdown():
    async def scenario() -> list[int]:
        health = HealthServicer()
        seen = [health.status(), health.status("fashionsearch.v1.Gateway")]
        await health.set("fashionsearch.v1.Gateway", SERVING)
        await health.set("", NOT_SERVING)
        seen += [health.status("fashionsearch.v1.Gateway"), health.status()]
        await health.enter_graceful_shutdown()
        return [*seen, health.status("fashionsearch.v1.Gateway")]

    assert asyncio.run(scenario()) == [SERVING, UNKNOWN, SERVING, NOT_SERVING, NOT_SERVING]
