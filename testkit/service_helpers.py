"""Images (good and bad) and small helpers shared by the classifier and embedder service tests."""

from __future__ import annotations

import io
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from fashionsearch.batching import DynamicBatcher
from fashionsearch.serving import RunningServer
from testkit.png_bytes import png_declaring


def jpeg(colour: tuple[int, int, int] | str, size: tuple[int, int] = (60, 80), stripe: bool = True) -> bytes:
    """A product-sized JPEG of one colour, with a dark stripe so it is not flat."""
    image = Image.new("RGB", size, colour)
    if stripe:
        image.paste((20, 20, 20), (0, size[1] // 2, size[0], size[1] // 2 + 8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


GOOD = jpeg("red")
#: Every bad input of issue 2 that a single image can be, with a fragment of the message it must produce.
BAD_IMAGES: dict[str, tuple[bytes, str]] = {
    "zero bytes": (b"", "empty"),
    "non-image bytes": (b"%PDF-1.7 definitely not a photo" * 4, "not a JPEG, PNG or WebP"),
    "truncated JPEG": (jpeg("blue", (300, 400))[:700], "truncated or corrupt"),
    "1x1 image": (png(Image.new("RGB", (1, 1), "white")), "both sides must be at least"),
    "PNG declaring 20000x20000": (png_declaring(20000, 20000), "pixels"),
}


async def health_status(channel: grpc.aio.Channel, service: str = "") -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    return reply.status


def batcher_of(running: RunningServer) -> DynamicBatcher[Any, Any]:
    """The DynamicBatcher of a started classifier or embedder, whose queue a test waits on instead of sleeping.

    The server holds it only as the closer it registers (`running.add_closer(servicer.batcher.close)`).
    """
    for closer in running._closers:
        owner = getattr(closer, "__self__", None)
        if isinstance(owner, DynamicBatcher):
            return owner
    raise AssertionError("this server has no DynamicBatcher")


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
