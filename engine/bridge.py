"""The one bridge between the node's trio loop and pysyncobj's tick thread.

Commands submitted by API requests are gathered into one log entry while earlier entries are in
flight (group commit); each result fans back out to its request. Lost callbacks, leader changes
and elections are retried with the same request id until a deadline, which is safe because a
repeated request id applies once. Without quorum, writes fail at once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import structlog
import trio
from pysyncobj import FAIL_REASON

from engine.codec import encode_record, join_encoded
from engine.commands import Command
from engine.errors import Rejection
from engine.replog import ReplicatedLog
from engine.wakeup import TrioWaker

log = structlog.get_logger("gpve.bridge")

NO_QUORUM = "cluster not ready - no quorum?"


class NoQuorum(Rejection):
    def __init__(self, message: str = NO_QUORUM) -> None:
        super().__init__(503, message)


@dataclass
class _Waiter:
    command: Command
    event: trio.Event
    result: dict | None = None
    failure: int | None = None


class LogBridge:
    def __init__(self, replog: ReplicatedLog, *, max_batch: int = 512, max_inflight: int = 4,
                 timeout: float = 4.0) -> None:
        self.replog = replog
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self.timeout = timeout
        self._pending: list[_Waiter] = []
        self._inflight: dict[int, float] = {}  # proposal number -> when proposed
        self._changed = trio.Event()
        self.waker = TrioWaker()
        self.entries_proposed = 0
        self.commands_proposed = 0
        self.batch_sizes: Counter[int] = Counter()  # commands per proposed entry -> entries (group commit)

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The batcher: one log entry for everything pending, at most `max_inflight` at a time."""
        self.waker.bind()
        task_status.started()
        while True:
            while not self._pending or self._busy():
                if self._inflight:
                    with trio.move_on_after(0.25):  # a lost callback must not hold its slot for ever
                        await self._changed.wait()
                else:
                    await self._changed.wait()
                self._changed = trio.Event()
            taken, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            batch, encoded = [], []
            for waiter in taken:
                record = self._encode(waiter)
                if record is not None:
                    batch.append(waiter)
                    encoded.append(record)
            if not batch:
                continue
            self.entries_proposed += 1
            number = self.entries_proposed
            self._inflight[number] = trio.current_time()
            self.commands_proposed += len(batch)
            self.batch_sizes[len(batch)] += 1
            payload = join_encoded(encoded)
            self.replog.propose(payload, callback=lambda res, err, n=number, b=batch:
                                self._from_thread(n, b, res, err))

    @staticmethod
    def _encode(waiter: _Waiter) -> bytes | None:
        """A command that cannot be encoded is answered at once; it must never stop the batcher."""
        try:
            return encode_record(waiter.command)
        except (TypeError, ValueError, OverflowError) as exc:
            waiter.result = {"error": {"status": 400, "message": f"command cannot be recorded: {exc}"}}
            waiter.event.set()
            return None

    def _busy(self) -> bool:
        horizon = trio.current_time() - self.timeout
        for number in [n for n, t in self._inflight.items() if t < horizon]:
            del self._inflight[number]
        return len(self._inflight) >= self.max_inflight

    def _from_thread(self, number: int, batch: list[_Waiter], results, err) -> None:
        self.waker.soon(self._resolve, number, batch, results, err)

    def _resolve(self, number: int, batch: list[_Waiter], results, err) -> None:
        self._inflight.pop(number, None)
        for i, waiter in enumerate(batch):
            if err == FAIL_REASON.SUCCESS:
                waiter.result = results[i]
            else:
                waiter.failure = err
            waiter.event.set()
        self._changed.set()

    async def submit(self, command: Command, timeout: float | None = None) -> dict:
        """Commit `command`; return its result payload or raise its Rejection (503 without quorum)."""
        deadline = trio.current_time() + (timeout or self.timeout)
        delay = 0.02
        while True:
            if not self.replog.writable():
                raise NoQuorum()
            waiter = _Waiter(command, trio.Event())
            self._pending.append(waiter)
            self._changed.set()
            with trio.move_on_at(deadline):
                await waiter.event.wait()
            if waiter.result is not None:
                if "error" in waiter.result:
                    raise Rejection.from_dict(waiter.result["error"])
                return waiter.result["ok"]
            if trio.current_time() >= deadline:
                log.warning("commit timeout", request_id=command.request_id)
                raise NoQuorum("cluster not ready - got timeout waiting for quorum")
            log.debug("retrying command", request_id=command.request_id, failure=waiter.failure)
            await trio.sleep(min(delay, max(0.0, deadline - trio.current_time())))
            delay = min(delay * 2, 0.5)
