"""The simulated clock and event queue, and the trio run they drive.

Time only moves when nothing is runnable: the loop jumps to the next timer or delivery, so hours of
cluster life take seconds. Equal times run in scheduling order (a sequence number breaks ties), never
in an order that depends on hashing or object identity.

The nodes' trio code (`engine.bridge.LogBridge`, `engine.reconciler.Reconciler`, `engine.node.Node`)
runs in one `trio.run` whose clock is this loop's: the driver runs the loop's events one at a time and,
whenever trio has a deadline due before the next event, or has had work (a runnable task, a callback from
pysyncobj) for `TRIO_LATENCY`, lets trio run until every task is blocked again: the loop's thread and the
trio thread of a real node do not take turns after every step either. Trio's scheduler is made
deterministic (its batch order comes from the seed).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import trio
import trio._core._run as trio_run
import trio.testing

TRIO_LATENCY = 0.001  # work for trio (a callback, a woken task) waits at most this long for trio's turn


def stream(seed: int, name: str) -> random.Random:
    """An independent random stream per subsystem: one more draw in one place reshuffles nothing else."""
    return random.Random(f"gpve-sim/{seed}/{name}")


class SimClock(trio.abc.Clock):
    """Trio's clock is the loop's: only the driver moves it."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self.loop.now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        if deadline <= self.loop.now:
            return 0.0
        if self.loop.stopped and deadline < math.inf:
            # The run is over and its tasks are cancelled; the driver turns no more. A cleanup that shields itself
            # from the cancellation (an aborted migration's undo, bounded by its own timeout) would wait forever on
            # a clock nothing moves: its timers expire at once instead.
            self.loop.now = deadline
            return 0.0
        return 86400.0  # the driver never lets trio block


@contextmanager
def deterministic_trio(seed: int) -> Iterator[None]:
    """Trio shuffles each batch of runnable tasks; under the simulator the shuffle follows the seed
    (the switch trio itself offers its Hypothesis integration)."""
    saved = trio_run._ALLOW_DETERMINISTIC_SCHEDULING, trio_run._r.getstate()
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True
    trio_run._r.seed(f"gpve-sim/{seed}/trio")
    try:
        yield
    finally:
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = saved[0]
        trio_run._r.setstate(saved[1])


class Loop:
    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[..., Any], tuple]] = []
        self._seq = 0
        self.steps = 0
        self.trio_rounds = 0
        self.stopped = False  # the driver is done: only trio's own timers move the clock (SimClock)

    def at(self, when: float, fn: Callable[..., Any], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (max(when, self.now), self._seq, fn, args))

    def after(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.at(self.now, fn, *args)

    async def run_until(self, end: float, marks: Sequence[float] = (),
                        at_mark: Callable[[float], bool] | None = None) -> None:
        """Run every event (and every trio task) due by `end`. `marks` (ascending): `at_mark(t)` runs once before
        the first event or trio timer at or after t (or at the end, for t <= `end`); when it returns True the run
        stops there. A run stopped at a mark and one that goes on have done exactly the same before it (the
        determinism self-check compares them). Must run as a task of the trio run whose clock is `SimClock(self)`."""
        runner = trio_run.GLOBAL_RUN_CONTEXT.runner  # its run queue, callback queue and deadlines, read directly
        trio_due = math.inf  # when trio, having work, gets its turn at the latest
        pending = list(marks)
        next_mark = pending[0] if pending else math.inf
        while True:
            next_event = self._queue[0][0] if self._queue else math.inf
            if trio_due == math.inf and (runner.runq or runner.entry_queue.size()):
                trio_due = self.now + TRIO_LATENCY
            if next_event > trio_due and trio_due <= end:
                trio_due = math.inf
                self.trio_rounds += 1
                await trio.testing.wait_all_tasks_blocked()  # trio's turn: every task runs until blocked
                continue
            next_timer = runner.deadlines.next_deadline()
            due = next_event if next_event <= next_timer else next_timer
            if due >= next_mark:
                limit = min(due, end)
                while pending and pending[0] <= limit:
                    mark = pending.pop(0)
                    if at_mark is not None and at_mark(mark):
                        return
                next_mark = pending[0] if pending else math.inf
            if due > end:
                break
            if next_timer < next_event:
                self.now = max(self.now, next_timer)
                self.trio_rounds += 1
                trio_due = math.inf
                await trio.testing.wait_all_tasks_blocked()  # the timer expires: its task runs
                continue
            when, _, fn, args = heapq.heappop(self._queue)
            self.now = when
            fn(*args)
            self.steps += 1
        self.now = max(self.now, end)
