"""Calling another service: the gRPC channel options every client uses, and the probe image that tells which model
a model service is running (the gateway's clients and the indexer's)."""

from __future__ import annotations

import io
from functools import cache

from PIL import Image

#: gRPC load-balancing policies a peer channel may use (GATEWAY_PEER_LB_POLICY).
LB_POLICIES = ("pick_first", "round_robin")


def channel_options(max_message_bytes: int, lb_policy: str = "pick_first") -> list[tuple[str, int | str]]:
    """`round_robin` spreads calls over every address the peer's name resolves to (a Kubernetes headless Service
    answers one per pod); `pick_first`, gRPC's default, keeps one connection to one of them."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.lb_policy_name", lb_policy),
        # Reconnect quickly after a peer restarts, so UNAVAILABLE does not outlast the peer's outage by much.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


@cache
def probe_image() -> bytes:
    """A small plain PNG that any image model accepts; used only to learn which model is running."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 200, 200)).save(buffer, format="PNG")
    return buffer.getvalue()
