"""Heavy images are decoded one at a time on their own thread; ordinary ones never wait behind them."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from fashionsearch import decode_threads
from testkit.png_bytes import png_declaring
from testkit.waiting import DEADLINE_S, until

HEAVY = png_declaring(3000, 3000)  # a header is all run_decoding reads to route the work
ORDINARY = png_declaring(100, 100)


def test_heavy_work_runs_one_at_a_time_and_ordinary_work_does_not_wait_for_it() -> None:
    running: list[int] = []
    overlap = 0
    release = threading.Event()
    lock = threading.Lock()

    def heavy_work() -> str:
        nonlocal overlap
        with lock:
            running.append(1)
            overlap = max(overlap, len(running))
        release.wait(DEADLINE_S)
        with lock:
            running.pop()
        return threading.current_thread().name

    async def scenario() -> None:
        heavy = [asyncio.ensure_future(decode_threads.run_decoding(heavy_work, [HEAVY])) for _ in range(4)]
        await until(lambda: running == [1], "the first heavy work running, the others queued behind it")
        started = time.monotonic()
        ordinary = await decode_threads.run_decoding(lambda: "ordinary", [ORDINARY, ORDINARY])
        assert ordinary == "ordinary"
        # Not queued behind the heavy ones: done while the first is still held, long before its hold ran out.
        assert running == [1] and time.monotonic() - started < DEADLINE_S / 2
        release.set()
        names = await asyncio.gather(*heavy)
        assert all(name.startswith("heavy-image") for name in names)

    asyncio.run(scenario())
    assert overlap == 1


def test_heavy_work_still_queued_when_its_caller_gives_up_never_runs() -> None:
    ran: list[int] = []
    started, release = threading.Event(), threading.Event()

    def held() -> bool:
        started.set()
        return release.wait(DEADLINE_S)

    async def scenario() -> None:
        first = asyncio.ensure_future(decode_threads.run_decoding(held, [HEAVY]))
        assert await asyncio.to_thread(started.wait, DEADLINE_S)  # the heavy-image thread is busy with it
        with pytest.raises(TimeoutError):  # e.g. the RPC's deadline passed while it waited
            await asyncio.wait_for(decode_threads.run_decoding(lambda: ran.append(1), [HEAVY]), 0.2)
        release.set()
        await first
        await decode_threads.run_decoding(lambda: None, [HEAVY])  # the queue has moved past it

    asyncio.run(scenario())
    assert ran == []


def test_freed_memory_goes_back_to_the_system_after_heavy_work(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(decode_threads, "release_free_memory", lambda: trims.append(1))

    async def scenario() -> None:
        await decode_threads.run_decoding(lambda: None, [ORDINARY])
        assert trims == []
        with pytest.raises(ValueError):
            await decode_threads.run_decoding(lambda: int("x"), [ORDINARY, HEAVY])
        assert trims == [1]

    asyncio.run(scenario())
    decode_threads.release_free_memory()  # the real one (glibc's malloc_trim here) runs without error
