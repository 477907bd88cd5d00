"""Search load against a gateway over gRPC, in the foreground or from a background thread, recording every call."""

from __future__ import annotations

import asyncio
import collections
import io
import threading
import time
from dataclasses import dataclass, field

import grpc
import grpc.aio
from PIL import Image

from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc

CONCURRENCY = 32


def photo(seed: int, size: tuple[int, int] = (60, 80)) -> bytes:
    """A catalogue-sized JPEG that differs per seed."""
    picture = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    picture.paste((255 - (seed * 37) % 256, 20, 20), (0, size[1] // 3, size[0], size[1] // 2))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


QUERIES = [photo(1000 + i) for i in range(16)]


@dataclass
class LoadResult:
    codes: collections.Counter = field(default_factory=collections.Counter)
    #: (start time, seconds, status code) of every call
    calls: list[tuple[float, float, grpc.StatusCode]] = field(default_factory=list)

    @property
    def errors(self) -> dict[str, int]:
        return {code.name: n for code, n in self.codes.items() if code is not grpc.StatusCode.OK}


async def _load(address: str, duration_s: float, concurrency: int, stop: threading.Event | None = None) -> LoadResult:
    result = LoadResult()
    deadline = time.monotonic() + duration_s
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def worker(n: int) -> None:
            i = n
            while time.monotonic() < deadline and not (stop and stop.is_set()):
                request = gateway_pb2.SearchRequest(image=QUERIES[i % len(QUERIES)])
                i += concurrency
                started = time.monotonic()
                try:
                    await stub.Search(request, timeout=5)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                result.codes[code] += 1
                result.calls.append((started, time.monotonic() - started, code))

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return result


def load(address: str, duration_s: float, concurrency: int = CONCURRENCY) -> LoadResult:
    return asyncio.run(_load(address, duration_s, concurrency))


class BackgroundLoad:
    """Load from a thread until stopped."""

    def __init__(self, address: str, concurrency: int) -> None:
        self._stop = threading.Event()
        self.result: LoadResult | None = None
        self._thread = threading.Thread(
            target=lambda: setattr(self, "result", asyncio.run(_load(address, 600, concurrency, self._stop))),
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join(30)
        assert self.result is not None, "the load thread did not finish"
        return self.result
