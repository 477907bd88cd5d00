"""DynamicBatcher (fashionsearch/batching.py) with a recording run_batch: who shares a batch, who leaves, who fails."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from fashionsearch.batching import BatchPolicy, DynamicBatcher
from fashionsearch.errors import Internal, InvalidArgument, Unavailable
from testkit.waiting import DEADLINE_S, until


class Model:
    """run_batch that records each batch; `gate` (when given) holds a batch inside the model until set; a batch
    holding the item 7 raises `error`."""

    def __init__(self, gate: threading.Event | None = None, error: BaseException | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate
        self.entered = threading.Event()
        self.error = error

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(DEADLINE_S)
        if self.error is not None and 7 in items:
            raise self.error
        return [item * 10 for item in items]


def batcher(model: Model, max_size: int = 32, max_delay_ms: float = 200) -> DynamicBatcher[int, int]:
    return DynamicBatcher(model, BatchPolicy(max_size=max_size, max_delay_ms=max_delay_ms), name="test")


async def busy(model: Model, runner: DynamicBatcher[int, int]) -> asyncio.Task[int]:
    """Occupy the model with request -1 (held at the gate), so the next requests queue up behind it."""
    task = asyncio.ensure_future(runner.submit(lambda: -1))
    assert await asyncio.to_thread(model.entered.wait, DEADLINE_S)
    return task


def test_concurrent_requests_share_one_model_call_and_get_their_own_rows() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        model = Model(gate)
        runner = batcher(model)
        first = await busy(model, runner)
        rest = [asyncio.ensure_future(runner.submit(lambda i=i: i)) for i in range(1, 9)]
        await until(lambda: runner.queued == 8, "all eight queued behind the running batch")
        gate.set()
        assert await first == -10
        assert await asyncio.gather(*rest) == [i * 10 for i in range(1, 9)]
        assert model.batches == [[-1], list(range(1, 9))]
        assert runner.stats.batches == 2 and runner.stats.largest == 8
        await runner.close()

    asyncio.run(scenario())


def test_batches_are_cut_at_max_size() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        model = Model(gate)
        runner = batcher(model, max_size=3)
        first = await busy(model, runner)
        rest = [asyncio.ensure_future(runner.submit(lambda i=i: i)) for i in range(7)]
        await until(lambda: runner.queued == 7, "all seven queued")
        gate.set()
        await first
        assert await asyncio.gather(*rest) == [i * 10 for i in range(7)]
        assert [len(b) for b in model.batches] == [1, 3, 3, 1]
        await runner.close()

    asyncio.run(scenario())


def test_a_lone_request_does_not_wait_for_the_delay() -> None:
    async def scenario() -> None:
        delay_s = 20.0
        runner = batcher(Model(), max_delay_ms=delay_s * 1000)
        started = time.monotonic()
        assert await runner.submit(lambda: 4) == 40
        # Nothing else was in the service, so no reason to wait: had it waited, it would have taken the whole delay.
        assert time.monotonic() - started < delay_s / 2
        await runner.close()

    asyncio.run(scenario())


def test_a_batch_waits_for_requests_being_prepared_but_at_most_the_delay() -> None:
    async def scenario() -> None:
        delay_s = 1.0
        model = Model()
        runner = batcher(model, max_delay_ms=delay_s * 1000)
        soon_ready, late_ready = threading.Event(), threading.Event()

        def held(value: int, ready: threading.Event) -> int:
            assert ready.wait(DEADLINE_S)
            return value

        started = time.monotonic()
        soon = asyncio.ensure_future(runner.submit(lambda: held(2, soon_ready)))
        late = asyncio.ensure_future(runner.submit(lambda: held(3, late_ready)))
        quick = asyncio.ensure_future(runner.submit(lambda: 1))
        await until(lambda: runner.queued == 1 and runner.preparing == 2, "the quick request queued, two preparing")
        soon_ready.set()  # prepared within the delay: joins the batch
        # The late one is still being prepared: the batch leaves without it once the delay is over, and not before.
        assert await quick == 10 and await soon == 20
        assert time.monotonic() - started >= delay_s
        late_ready.set()
        assert await late == 30
        assert model.batches == [[1, 2], [3]]
        await runner.close()

    asyncio.run(scenario())


def test_a_cancelled_request_leaves_the_queue_and_the_batch_runs_without_it() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        model = Model(gate)
        runner = batcher(model)
        first = await busy(model, runner)
        keep = [asyncio.ensure_future(runner.submit(lambda i=i: i)) for i in (1, 2)]
        leaving = asyncio.ensure_future(runner.submit(lambda: 99))
        more = asyncio.ensure_future(runner.submit(lambda: 3))
        await until(lambda: runner.queued == 4, "four queued behind the running batch")
        leaving.cancel()
        await until(lambda: runner.stats.left == 1, "the cancelled request leaving the queue")
        gate.set()
        await first
        assert await asyncio.gather(*keep, more) == [10, 20, 30]
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert model.batches[1] == [1, 2, 3]
        assert runner.stats.left == 1
        await runner.close()

    asyncio.run(scenario())


def test_a_request_cancelled_while_its_batch_runs_does_not_fail_the_others() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        model = Model(gate)
        runner = batcher(model)
        tasks = [asyncio.ensure_future(runner.submit(lambda i=i: i)) for i in range(4)]
        assert await asyncio.to_thread(model.entered.wait, DEADLINE_S)
        # The first batch is inside the model and the other requests queued behind it (or in it).
        await until(lambda: runner.queued + len(model.batches[0]) == 4, "all four in the model or queued")
        tasks[0].cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
        assert await asyncio.gather(*tasks[1:]) == [10, 20, 30]
        await runner.close()

    asyncio.run(scenario())


def test_a_request_that_fails_to_prepare_fails_alone() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        model = Model(gate)
        runner = batcher(model)
        first = await busy(model, runner)

        def bad() -> int:
            raise InvalidArgument("image bytes are not a JPEG, PNG or WebP image")

        good = [asyncio.ensure_future(runner.submit(lambda i=i: i)) for i in (1, 2)]
        broken = asyncio.ensure_future(runner.submit(bad))
        await until(lambda: runner.queued == 2 and runner.preparing == 0, "two queued and the bad one failed")
        gate.set()
        await first
        assert await asyncio.gather(*good) == [10, 20]
        with pytest.raises(InvalidArgument, match="not a JPEG"):
            await broken
        assert model.batches[1] == [1, 2]
        await runner.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("error", "expected", "message"),
    [
        (RuntimeError("boom: a bug"), Internal, "internal error"),
        (Unavailable("the model is reloading"), Unavailable, "reloading"),
    ],
)
def test_a_failed_batch_fails_only_its_own_requests_each_with_its_own_error(error, expected, message) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        gate = threading.Event()
        model = Model(gate, error)
        runner = batcher(model)
        first = await busy(model, runner)
        failing = [asyncio.ensure_future(runner.submit(lambda i=i: i)) for i in (7, 8)]  # one batch, which fails
        await until(lambda: runner.queued == 2, "both queued")
        gate.set()
        assert await first == -10
        errors = await asyncio.gather(*failing, return_exceptions=True)
        assert model.batches[1] == [7, 8]
        assert all(isinstance(e, expected) and message in str(e) and "boom" not in str(e) for e in errors), errors
        assert errors[0] is not errors[1]
        assert await asyncio.gather(*(runner.submit(lambda i=i: i) for i in (1, 2))) == [10, 20]
        await runner.close()

    asyncio.run(scenario())


def test_off_runs_each_request_alone_in_one_thread_hop() -> None:
    async def scenario() -> None:
        model = Model()
        runner = batcher(model, max_delay_ms=0)
        assert await asyncio.gather(*(runner.submit(lambda i=i: i) for i in range(5))) == [0, 10, 20, 30, 40]
        assert sorted(model.batches) == [[0], [1], [2], [3], [4]]
        await runner.close()
        await runner.close()  # idempotent

    asyncio.run(scenario())


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="max_size"):
        BatchPolicy(max_size=0)
    with pytest.raises(ValueError, match="max_delay_ms"):
        BatchPolicy(max_delay_ms=-1)
    assert not BatchPolicy(max_delay_ms=0).enabled and BatchPolicy(max_delay_ms=0.5).enabled


def test_a_cancelled_request_leaves_the_queue_when_the_items_are_arrays() -> None:
    """Leaving the queue finds the request itself; comparing queued NumPy rows would raise instead."""

    async def scenario() -> None:
        gate = threading.Event()
        seen: list[list[float]] = []

        def run(rows: list[np.ndarray]) -> list[float]:
            seen.append([float(r.sum()) for r in rows])
            assert gate.wait(DEADLINE_S)
            return [float(r.sum()) for r in rows]

        runner: DynamicBatcher[np.ndarray, float] = DynamicBatcher(run, BatchPolicy(8, 200), name="arrays")
        first = asyncio.ensure_future(runner.submit(lambda: np.ones(3)))
        await until(lambda: len(seen) == 1, "the first request inside the model")
        queued = [asyncio.ensure_future(runner.submit(lambda v=v: np.full(3, v))) for v in (2.0, 3.0, 4.0)]
        await until(lambda: runner.queued == 3, "three queued behind it")
        queued[2].cancel()
        await until(lambda: runner.stats.left == 1, "the cancelled request leaving the queue")
        gate.set()
        assert await first == 3.0
        assert await asyncio.gather(*queued[:2]) == [6.0, 9.0]
        assert seen == [[3.0], [6.0, 9.0]] and runner.stats.left == 1
        await runner.close()

    asyncio.run(scenario())


def test_a_coroutine_batch_call_takes_what_queued_while_it_ran_and_item_errors_fail_alone() -> None:
    """The gateway's use: run_batch is one batch RPC awaited on the loop; an item error fails its own call only."""

    async def scenario() -> None:
        release = asyncio.Event()
        batches: list[list[int]] = []

        async def call(items: list[int]) -> list[int | InvalidArgument]:
            batches.append(items)
            await release.wait()
            return [InvalidArgument(f"item {i} is bad") if i == 7 else i * 10 for i in items]

        runner: DynamicBatcher[int, int] = DynamicBatcher(call, BatchPolicy(8), name="rpc")
        first = asyncio.ensure_future(runner.submit_ready(1))
        await until(lambda: batches == [[1]], "a lone call going at once")
        queued = [asyncio.ensure_future(runner.submit_ready(i)) for i in (2, 7, 3)]
        await until(lambda: runner.queued == 3, "three queued while the first call runs")
        release.set()
        assert await first == 10
        outcomes = await asyncio.gather(*queued, return_exceptions=True)
        assert outcomes[0] == 20 and outcomes[2] == 30
        assert isinstance(outcomes[1], InvalidArgument) and "item 7" in str(outcomes[1])
        assert batches == [[1], [2, 7, 3]]
        await runner.close()

    asyncio.run(scenario())


def test_with_two_in_flight_a_second_batch_starts_while_the_first_runs_and_a_third_waits() -> None:
    """in_flight 2 (the gateway's calls to a classifier that runs two batches at once): the second call goes out
    while the first is inside the model; further calls queue until one of the two returns, then go as one batch."""

    async def scenario() -> None:
        release = {1: asyncio.Event(), 2: asyncio.Event(), 3: asyncio.Event()}
        batches: list[list[int]] = []

        async def call(items: list[int]) -> list[int]:
            batches.append(items)
            await release[items[0]].wait()
            return [i * 10 for i in items]

        runner: DynamicBatcher[int, int] = DynamicBatcher(call, BatchPolicy(8, in_flight=2), name="rpc")
        first = asyncio.ensure_future(runner.submit_ready(1))
        await until(lambda: batches == [[1]], "the first call going at once")
        second = asyncio.ensure_future(runner.submit_ready(2))
        await until(lambda: batches == [[1], [2]], "the second call going while the first runs")
        assert runner.running == 2
        later = [asyncio.ensure_future(runner.submit_ready(i)) for i in (3, 4, 5)]
        await until(lambda: runner.queued == 3, "three queued while two batches run")
        assert batches == [[1], [2]]
        release[2].set()  # the second returns first: the queued three go together
        assert await second == 20
        await until(lambda: batches == [[1], [2], [3, 4, 5]], "the queued calls going as one batch")
        release[3].set()
        assert await asyncio.gather(*later) == [30, 40, 50]
        assert not first.done()
        release[1].set()
        assert await first == 10
        assert runner.stats.batches == 3
        await runner.close()

    asyncio.run(scenario())


def test_two_batches_in_flight_run_on_two_threads_and_close_cancels_both() -> None:
    async def scenario() -> None:
        both_inside = threading.Barrier(2, timeout=DEADLINE_S)
        gate = threading.Event()
        threads: set[str] = set()

        def run(items: list[int]) -> list[int]:
            threads.add(threading.current_thread().name)
            both_inside.wait()  # only returns when two batches are inside the model at once
            assert gate.wait(DEADLINE_S)
            return [i * 10 for i in items]

        runner: DynamicBatcher[int, int] = DynamicBatcher(run, BatchPolicy(8, 200, in_flight=2), name="two")
        calls = [asyncio.ensure_future(runner.submit(lambda: 1))]
        await until(lambda: len(threads) == 1, "the first batch inside the model")
        calls.append(asyncio.ensure_future(runner.submit(lambda: 2)))
        await until(lambda: len(threads) == 2, "a second batch inside the model at once, on a second thread")
        gate.set()
        assert sorted(await asyncio.gather(*calls)) == [10, 20]
        held = asyncio.Event()

        async def hold(items: list[int]) -> list[int]:
            await held.wait()
            return items

        pending: DynamicBatcher[int, int] = DynamicBatcher(hold, BatchPolicy(8, in_flight=2), name="held")
        waiting = [asyncio.ensure_future(pending.submit_ready(1))]
        await until(lambda: pending.running == 1, "a batch running")
        waiting.append(asyncio.ensure_future(pending.submit_ready(2)))
        await until(lambda: pending.running == 2, "two batches running")
        await pending.close()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes) and pending.running == 0
        await runner.close()

    asyncio.run(scenario())


def test_in_flight_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="in_flight"):
        BatchPolicy(in_flight=0)
