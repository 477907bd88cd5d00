"""Where the model services decode images: ordinary ones in the default thread pool, heavy ones on one thread.

A heavy image (a large PNG or WebP, see fashionsearch.images.is_heavy) is decoded at full size: up to 160 MB and
about a second at the 40-megapixel limit. Run concurrently, sixteen of them took a model service from 110 MB to
2 GB and occupied every worker thread, so ordinary searches missed their deadlines. Work that holds a heavy image
therefore runs on a single dedicated thread: at most one full-size decode is in memory per process, and requests
with ordinary images never queue behind it. Work still queued when its caller gives up (the RPC's deadline passed,
the client went away) is dropped without running. After heavy work the freed memory is handed back to the
operating system (glibc keeps it in its per-thread arenas otherwise, and the process would stay at its peak).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from fashionsearch.images import is_heavy

logger = logging.getLogger(__name__)

T = TypeVar("T")

_heavy_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heavy-image")


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to trim
        return None


_malloc_trim = _load_malloc_trim()


def release_free_memory() -> None:
    """Return the allocator's free memory to the operating system (glibc's malloc_trim; elsewhere nothing)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _heavy(work: Callable[[], T]) -> T:
    try:
        return work()
    finally:
        release_free_memory()


async def run_off_loop(work: Callable[[], T], *, heavy: bool) -> T:
    """Run `work` in a worker thread: the heavy-image thread when it decodes a heavy image, else the default pool."""
    loop = asyncio.get_running_loop()
    if heavy:
        return await loop.run_in_executor(_heavy_pool, _heavy, work)
    return await loop.run_in_executor(None, work)


async def run_decoding(work: Callable[[], T], images: Sequence[bytes]) -> T:
    """Run `work`, which decodes `images`, off the event loop: on the heavy-image thread when any image is heavy."""
    return await run_off_loop(work, heavy=any(is_heavy(data) for data in images))


class BatchSlots:
    """At most `limit` batch calls (ClassifyBatch, EmbedBatch, DetectBatch) decode and run their model at once.

    Each holds a whole batch's decoded photos and activations (about 190 MB for 64 photos with models/embedder) and
    onnxruntime's arena keeps the peak afterwards, so unbounded, a model service's memory grew with its callers
    (8 concurrent batches of 64: 1.3 GB against a 1 GiB limit). Callers beyond the limit wait holding only their
    request (bench/batch_memory.py).
    """

    def __init__(self, limit: int) -> None:
        self._slots = asyncio.Semaphore(limit)

    async def run(self, work: Callable[[], T], images: Sequence[bytes]) -> T:
        """run_decoding(work, images) once a slot is free."""
        async with self._slots:
            return await run_decoding(work, images)
