"""The node's write path as `engine.bridge.LogBridge` runs it, on the simulated clock.

LogBridge is a trio task; its policy is reproduced here step by step: commands wait in one queue,
go out as one log entry per batch with at most `max_inflight` entries in flight (a lost callback frees
its slot after `timeout`), failures are retried with the same command until a deadline, and without
quorum a write fails at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pysyncobj import FAIL_REASON

from engine.codec import encode_records
from engine.commands import Command

Done = Callable[[dict | None, str], None]  # (result or None, why it failed)


@dataclass
class _Waiter:
    command: Command
    done: Done
    deadline: float
    delay: float = 0.02
    finished: bool = False


class SimBridge:
    def __init__(self, node, max_batch: int = 512, max_inflight: int = 4, timeout: float = 4.0) -> None:
        self.node = node
        self.loop = node.world.loop
        self.max_batch, self.max_inflight, self.timeout = max_batch, max_inflight, timeout
        self.pending: list[_Waiter] = []
        self.inflight: dict[int, float] = {}
        self.proposals = 0
        self.commands = 0
        self._flush_scheduled = False

    def submit(self, command: Command, done: Done) -> None:
        waiter = _Waiter(command, done, self.loop.now + self.timeout)
        self.loop.at(waiter.deadline, self._expire, waiter)
        self._enqueue(waiter)

    def _enqueue(self, waiter: _Waiter) -> None:
        if waiter.finished:
            return
        if not self.node.writable():
            self._finish(waiter, None, "no quorum")
            return
        self.pending.append(waiter)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.soon(self._flush, self.node.incarnation)

    def _flush(self, incarnation: int) -> None:
        self._flush_scheduled = False
        if incarnation != self.node.incarnation or not self.node.up:
            return
        horizon = self.loop.now - self.timeout
        for number in [n for n, t in sorted(self.inflight.items()) if t < horizon]:
            del self.inflight[number]
        self.pending = [w for w in self.pending if not w.finished]
        while self.pending and len(self.inflight) < self.max_inflight:
            batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch:]
            self.proposals += 1
            self.commands += len(batch)
            number = self.proposals
            self.inflight[number] = self.loop.now
            payload = encode_records([w.command for w in batch])
            self.node.propose(payload, lambda res, err, n=number, b=batch: self._resolved(n, b, res, err))
        if self.pending:  # the batcher wakes every 0.25 s even without a callback
            self._flush_scheduled = True
            self.loop.after(0.25, self._flush, incarnation)

    def _resolved(self, number: int, batch: list[_Waiter], results, err) -> None:
        self.inflight.pop(number, None)
        for i, waiter in enumerate(batch):
            if err == FAIL_REASON.SUCCESS:
                self._finish(waiter, results[i], "")
            elif not waiter.finished:
                delay = min(waiter.delay, max(0.0, waiter.deadline - self.loop.now))
                waiter.delay = min(waiter.delay * 2, 0.5)
                self.loop.after(delay, self._enqueue, waiter)
        self._schedule_flush()

    def _expire(self, waiter: _Waiter) -> None:
        self._finish(waiter, None, "timeout")

    def _finish(self, waiter: _Waiter, result: dict | None, why: str) -> None:
        if not waiter.finished:
            waiter.finished = True
            self.loop.soon(waiter.done, result, why)

    def abandon(self) -> None:
        """The process died: nobody will answer these requests (their HTTP connections broke)."""
        for waiter in self.pending:
            self._finish(waiter, None, "connection reset")
        self.pending = []
