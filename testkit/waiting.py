"""Waiting for an observable condition (a queue length, a health state, a log line) instead of sleeping.

A test that sleeps to let something happen fails on the day the machine is busy; one that polls a condition waits
as long as that takes, up to a deadline that only a real fault reaches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

#: Long enough that only a fault reaches it, however busy the machine; pytest-timeout stops a test long before a
#: series of these could add up.
DEADLINE_S = 30.0
POLL_S = 0.005


async def until(condition: Callable[[], object], what: str, timeout_s: float = DEADLINE_S) -> None:
    """Return once `condition()` is true, polling on the running event loop (so the code under test runs)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(POLL_S)


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = DEADLINE_S) -> None:
    """The blocking form of `until`, for a test whose code under test runs in other threads or processes."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(POLL_S)


async def repeat_until(
    action: Callable[[], Awaitable[object]], condition: Callable[[], object], what: str, timeout_s: float = DEADLINE_S
) -> None:
    """Await `action()` again and again until `condition()` is true (e.g. calls until every replica answered)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await action()
