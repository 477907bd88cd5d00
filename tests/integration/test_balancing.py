"""The gateway's channels spread calls over every address of a peer, as behind a Kubernetes headless Service."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc.aio
import pytest

from fashionsearch.channels import channel_options
from services.embedder.server import start
from services.embedder.settings import Settings
from services.gateway.clients import GrpcEmbedder
from testkit.service_helpers import GOOD
from testkit.tiny_models import write_tiny_embedder
from testkit.waiting import repeat_until

pytestmark = pytest.mark.integration


def test_calls_are_balanced_over_every_replica(tmp_path):
    async def scenario() -> Counter[str]:
        replicas = [
            await start(Settings(port=0, host="127.0.0.1", model_dir=write_tiny_embedder(tmp_path / v, version=v)))
            for v in ("replica-a", "replica-b")
        ]
        try:
            # One name, two addresses: what DNS answers for a headless Service with two ready pods.
            target = "ipv4:" + ",".join(f"127.0.0.1:{running.port}" for running in replicas)
            async with grpc.aio.insecure_channel(target, options=channel_options(1 << 20, "round_robin")) as channel:
                embedder = GrpcEmbedder(channel, timeout_s=5)
                await channel.channel_ready()
                # Round robin spreads calls over the subchannels that are connected: call until both answered.
                seen: set[str] = set()

                async def call() -> None:
                    seen.add((await embedder.embed(GOOD)).model.version)

                await repeat_until(call, lambda: len(seen) == 2, "both replicas connected and answering")
                return Counter([(await embedder.embed(GOOD)).model.version for _ in range(10)])
        finally:
            for running in replicas:
                await running.stop(0)

    served = asyncio.run(scenario())
    assert set(served) == {"replica-a", "replica-b"}, served
    assert min(served.values()) >= 4, f"calls were not spread per call: {served}"
