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
from testkit.waiting import wait_until

CONCURRENCY = 32


def photo(seed: int, size: tuple[int, int] = (60, 80)) -> bytes:
    """A catalogue-sized JPEG that differs per seed."""
    picture = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    picture.paste((255 - (seed * 37) % 256, 20, 20), (0, size[1] // 3, size[0], size[1] // 2))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


QUERIES = [photo(1000 + i) for i in range(16)]
#: (start time, seconds, status code) of one call
Call = tuple[float, float, grpc.StatusCode]


@dataclass
class LoadResult:
    codes: collections.Counter = field(default_factory=collections.Counter)
    calls: list[Call] = field(default_factory=list)

    @property
    def errors(self) -> dict[str, int]:
        return {code.name: n for code, n in self.codes.items() if code is not grpc.StatusCode.OK}


async def _load(
    address: str,
    duration_s: float,
    concurrency: int,
    stop: threading.Event | None = None,
    result: LoadResult | None = None,
) -> LoadResult:
    """Searches at `concurrency` for `duration_s` (or until `stop`), each call recorded in `result` as it ends."""
    result = result if result is not None else LoadResult()
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
    """Load from a thread until stopped; `wait_for_calls` waits for calls that ended while it runs."""

    def __init__(self, address: str, concurrency: int) -> None:
        self._stop = threading.Event()
        self._live = LoadResult()
        self.result: LoadResult | None = None
        self._thread = threading.Thread(
            target=lambda: setattr(
                self, "result", asyncio.run(_load(address, 600, concurrency, self._stop, self._live))
            ),
            daemon=True,
        )
        self._thread.start()

    def calls(self, started_after: float, code: grpc.StatusCode | None = None) -> list[Call]:
        """The calls that started after `started_after` (time.monotonic()) and have ended, with `code` if given."""
        return [call for call in list(self._live.calls) if call[0] > started_after and code in (None, call[2])]

    def wait_for_calls(
        self, count: int, started_after: float, what: str, code: grpc.StatusCode | None = None
    ) -> list[Call]:
        """Wait until `count` calls that started after `started_after` have ended (with `code`, if given)."""
        wait_until(lambda: len(self.calls(started_after, code)) >= count, what)
        return self.calls(started_after, code)

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join(30)
        assert self.result is not None, "the load thread did not finish"
        return self.result
