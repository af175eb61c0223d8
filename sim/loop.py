"""The simulated clock and event queue.

Time only moves when nothing is runnable: the loop jumps to the next timer or delivery, so hours of
cluster life take seconds. Equal times run in scheduling order (a sequence number breaks ties), never
in an order that depends on hashing or object identity.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any


def stream(seed: int, name: str) -> random.Random:
    """An independent random stream per subsystem: one more draw in one place reshuffles nothing else."""
    return random.Random(f"gpve-sim/{seed}/{name}")


class Loop:
    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[..., Any], tuple]] = []
        self._seq = 0
        self.steps = 0

    def at(self, when: float, fn: Callable[..., Any], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (max(when, self.now), self._seq, fn, args))

    def after(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.at(self.now, fn, *args)

    def run_until(self, end: float, after_step: Callable[[], None],
                  checkpoint: tuple[float, Callable[[], None]] | None = None) -> None:
        """Run every event due by `end`; `checkpoint` = (t, fn) runs fn once before the first event at or after t."""
        while self._queue and self._queue[0][0] <= end:
            if checkpoint is not None and self._queue[0][0] >= checkpoint[0]:
                checkpoint[1]()
                checkpoint = None
            when, _, fn, args = heapq.heappop(self._queue)
            self.now = when
            fn(*args)
            self.steps += 1
            after_step()
        self.now = max(self.now, end)
