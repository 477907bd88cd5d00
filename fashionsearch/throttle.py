"""Warnings a client can cause at will (malformed requests, refused keys) are logged at most once per interval.

Any client can send thousands of such requests a second; logging each would let it flood the log (and the disk)
and hide everything else. `Throttle` lets one line through per interval and counts the rest, and the next line
says how many were left out, so nothing goes unseen and the volume stays bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_INTERVAL_S = 10.0


class Throttle:
    """`allow()` is None for an event that is not to be logged, else how many were left out since the last one."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last: float | None = None
        self._left_out = 0

    def allow(self) -> int | None:
        now = self._clock()
        if self._last is not None and now - self._last < self._interval_s:
            self._left_out += 1
            return None
        left_out, self._left_out, self._last = self._left_out, 0, now
        return left_out


def left_out_note(left_out: int) -> str:
    """What a throttled line adds about the lines left out before it ('' when none were)."""
    return f"; {left_out} more not logged since the last such line" if left_out else ""
