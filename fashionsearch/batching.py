"""Dynamic batching of concurrent single-image requests, shared by the classifier and the embedder.

Served one at a time, each image pays a whole onnxruntime call and a thread hop of its own; on a small CPU that
overhead, not the model, sets the throughput. `DynamicBatcher` runs concurrent requests as one model call, the
way Triton's dynamic batcher does:

    batcher = DynamicBatcher(run_batch, BatchPolicy(max_size=32, max_delay_ms=2), name="classifier")
    result = await batcher.submit(prepare)     # prepare(): decode + preprocess one request, in a worker thread

Each request is prepared (decoded, preprocessed) on its own in a worker thread, then queued. A batch runs on a
dedicated inference thread (`in_flight` batches at once, each on its own thread: 1 by default, more where one
batch's work leaves cores idle, e.g. the gateway's batch calls to a model service that runs two of them at once): it
takes what is queued, up to `max_size`. Before starting it waits for the requests that are still being prepared,
but never longer than `max_delay_ms` after its first request was queued and never for requests that have not
arrived: a lone request starts at once, so batching costs a request at concurrency 1 nothing but a thread hop, and
under load the queue fills while the previous batch runs.

Per request: a request whose RPC is cancelled (a client cancel or its deadline; grpc.aio cancels the handler)
leaves the queue and never reaches the model; if its batch already runs, its row is computed and dropped. A
request that fails to prepare (a bad image) fails alone, before it joins a batch. A batch whose model call
fails fails only its own requests: a FashionSearchError reaches each of them as it is, anything else is logged
once and each request gets its own Internal error.

`max_delay_ms` 0 turns batching off: `submit` prepares and runs each request by itself in one worker-thread hop.

The other way round, `bounded_chunks` splits a batch a client has into requests that each fit what the receiving
service accepts, in items and in bytes (the indexer's and the gateway's calls to the model services and the
gateway).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from fashionsearch.decode_threads import run_off_loop
from fashionsearch.errors import FashionSearchError, Internal

logger = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")
T = TypeVar("T")

#: Room for a request's own fields and each item's protobuf framing (tag and length, a few bytes an item).
REQUEST_SLACK_BYTES = 16 * 1024


@dataclass(frozen=True)
class BatchPolicy:
    """How a model service batches single-image calls (*_BATCH_MAX_SIZE, *_BATCH_MAX_DELAY_MS)."""

    max_size: int = 32
    #: How long a batch may wait for requests still being prepared; 0 turns batching off.
    max_delay_ms: float = 0.0
    #: Batches running at once; the next batch forms from what is queued as soon as one of them is free.
    in_flight: int = 1

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {self.max_size}")
        if self.max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must not be negative, got {self.max_delay_ms}")
        if self.in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, got {self.in_flight}")

    @property
    def enabled(self) -> bool:
        return self.max_delay_ms > 0


@dataclass
class BatchStats:
    """What the batcher did, for logs, benchmarks and tests."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    #: Requests that left the queue before their batch ran (cancelled or past their deadline).
    left: int = 0
    #: batch size -> how many batches had it (at most max_size keys)
    sizes: Counter[int] = field(default_factory=Counter)

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.largest = max(self.largest, size)
        self.sizes[size] += 1

    def __str__(self) -> str:
        mean = self.items / self.batches if self.batches else 0.0
        return (
            f"{self.batches} batches, {self.items} requests (mean {mean:.1f}, largest {self.largest}), {self.left} left"
        )


@dataclass(eq=False)  # identity: leaving the queue must find this request, never compare its arrays
class _Queued(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    queued_at: float


class DynamicBatcher(Generic[In, Out]):
    """Concurrent `submit()` calls -> one `run_batch(items)` call per batch, results fanned back out in order.

    `run_batch` takes a list of prepared items and returns one output per item, in order; it runs in a thread.
    When `run_batch` is a coroutine function (e.g. one batch RPC to another service), batches are awaited on the
    event loop instead, and `submit_ready()` queues items that need no preparing. An output that is a
    FashionSearchError fails its own request only.
    """

    def __init__(
        self,
        run_batch: Callable[[list[In]], Sequence[Out | FashionSearchError]]
        | Callable[[list[In]], Awaitable[Sequence[Out | FashionSearchError]]],
        policy: BatchPolicy,
        *,
        name: str,
    ) -> None:
        self._run_batch = run_batch
        self._on_loop = inspect.iscoroutinefunction(run_batch)
        self.policy = policy
        self.max_size = policy.max_size
        self.max_delay_s = policy.max_delay_ms / 1000
        self.name = name
        self.stats = BatchStats()
        self._queue: deque[_Queued[In, Out]] = deque()
        self._preparing = 0
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        # Threads of their own run the model (one per batch in flight): batches never wait behind decodes in the
        # default executor.
        self._executor: ThreadPoolExecutor | None = None

    @property
    def queued(self) -> int:
        """Requests prepared and waiting for a batch (what a test waits on instead of sleeping)."""
        return len(self._queue)

    @property
    def preparing(self) -> int:
        """Requests inside `submit` still being prepared in a worker thread."""
        return self._preparing

    async def submit(self, prepare: Callable[[], In], *, heavy: bool = False) -> Out:
        """Prepare one request in a worker thread (the heavy-image thread when `heavy`, see
        fashionsearch.decode_threads), then run it in a batch; returns its output or raises its error."""
        if not self.policy.enabled:
            return await run_off_loop(functools.partial(self._run_alone, prepare), heavy=heavy)
        self._preparing += 1
        try:
            item = await run_off_loop(prepare, heavy=heavy)
        finally:
            self._preparing -= 1
            self._wake.set()  # a batch may be waiting for this request (or, if it failed, no longer needs to)
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        return await self._join(_Queued(item, future, time.monotonic()))

    async def _join(self, queued: _Queued[In, Out]) -> Out:
        self._queue.append(queued)
        self._ensure_worker()
        self._wake.set()
        try:
            return await queued.future
        except asyncio.CancelledError:
            # Cancelled RPC (client cancel or deadline): leave the queue if the batch has not started.
            try:
                self._queue.remove(queued)
                self.stats.left += 1
            except ValueError:
                pass  # already in a running batch: its row is computed and dropped
            raise

    async def submit_ready(self, item: In) -> Out:
        """Queue an item that needs no preparing (no thread hop) and run it in a batch."""
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        return await self._join(_Queued(item, future, time.monotonic()))

    def _run_alone(self, prepare: Callable[[], In]) -> Out:
        output = self._run_batch([prepare()])[0]  # type: ignore[index]
        if isinstance(output, FashionSearchError):
            raise output
        return output

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            if self._executor is None and not self._on_loop:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.policy.in_flight, thread_name_prefix=f"{self.name}-batch"
                )
            self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"{self.name} batcher")

    @property
    def running(self) -> int:
        """Batches running now (at most `policy.in_flight`)."""
        return len(self._running)

    async def _work(self) -> None:
        while True:
            if len(self._running) >= self.policy.in_flight:
                await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
                continue
            batch = await self._next_batch()
            if batch:
                task = asyncio.get_running_loop().create_task(self._run(batch), name=f"{self.name} batch")
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> list[_Queued[In, Out]]:
        """Wait until a batch should start, then take it from the queue (cancelled requests are left out)."""
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        start_by = self._queue[0].queued_at + self.max_delay_s
        # Wait only for requests already inside the service (being prepared), never for ones that may come.
        while len(self._queue) < self.max_size and self._preparing > 0:
            remaining = start_by - time.monotonic()
            if remaining <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                break
        batch: list[_Queued[In, Out]] = []
        while self._queue and len(batch) < self.max_size:
            queued = self._queue.popleft()
            if not queued.future.done():
                batch.append(queued)
        return batch

    async def _run(self, batch: list[_Queued[In, Out]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            items = [q.item for q in batch]
            if self._on_loop:
                outputs = await self._run_batch(items)  # type: ignore[misc]
            else:
                outputs = await loop.run_in_executor(self._executor, self._run_batch, items)
            if len(outputs) != len(batch):
                raise RuntimeError(f"run_batch returned {len(outputs)} outputs for {len(batch)} items")
        except asyncio.CancelledError:  # close() while the batch ran
            for queued in batch:
                queued.future.cancel()
            raise
        except FashionSearchError as error:
            for queued in batch:
                _settle(queued.future, error=type(error)(error.message))
            return
        except Exception:
            logger.exception("%s: a batch of %d failed", self.name, len(batch))
            for queued in batch:
                _settle(queued.future, error=Internal("internal error; the server log has the details"))
            return
        self.stats.record(len(batch))
        for queued, output in zip(batch, outputs, strict=True):
            if isinstance(output, FashionSearchError):
                _settle(queued.future, error=output)
            else:
                _settle(queued.future, result=output)

    async def close(self) -> None:
        """Stop the worker, its batches and their threads (after the server stopped: nothing is queued then).
        Idempotent."""
        tasks = [task for task in (self._worker, *self._running) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._worker = None
        for queued in self._queue:
            queued.future.cancel()
        self._queue.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        if self.stats.batches:
            logger.info("%s batching: %s", self.name, self.stats)


def _settle(future: asyncio.Future[Out], *, result: Out | None = None, error: BaseException | None = None) -> None:
    """Complete a request's future unless it already left (cancelled)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def bounded_chunks(items: Sequence[T], sizes: Sequence[int], max_items: int, max_bytes: int) -> Iterator[list[T]]:
    """Consecutive runs of `items` holding at most `max_items` items and `max_bytes` bytes (by `sizes`); an item
    larger than `max_bytes` goes alone (the service then refuses it, and says why)."""
    chunk: list[T] = []
    used = 0
    for item, size in zip(items, sizes, strict=True):
        if chunk and (len(chunk) >= max_items or used + size > max_bytes):
            yield chunk
            chunk, used = [], 0
        chunk.append(item)
        used += size
    if chunk:
        yield chunk
