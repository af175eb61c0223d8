"""The event hub: every applied event, as public events, in log order, in a bounded buffer.

Ids are the same on every node, because they come from the log: `id = log index * 1000 + position of
the public event within that log entry`. A subscriber reads from the last id it saw (exclusive), on any
node; reconnecting with it gives every later event exactly once. A restarted node refills the buffer as
it replays its log; events older than the buffer (or than the node's snapshot) are gone, and a read from
before them raises `TooOld`, telling the client to resync from the current state.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from engine.jsontext import dump_json
from engine.public_events import describe
from engine.state import State

PER_ENTRY = 1000  # public ids per log entry (the bridge batches at most 512 commands per entry)
CAPACITY = 100_000


@dataclass(frozen=True, slots=True)
class PublicEvent:
    id: int
    type: str
    timestamp: float  # the command's time, seconds since the epoch
    data: dict
    wire: str = field(default="", compare=False, repr=False)  # to_dict() as compact JSON, made once

    @classmethod
    def made(cls, id: int, type: str, timestamp: float, data: dict) -> PublicEvent:  # noqa: A002 - the spec's names
        """The event with its JSON text, so that each stream sends it without encoding it again."""
        return cls(id, type, timestamp, data, dump_json(_message(id, type, timestamp, data)).decode())

    @property
    def index(self) -> int:
        """The log index of the entry the event belongs to."""
        return self.id // PER_ENTRY

    def to_dict(self) -> dict:
        """The spec's message shape: `id`, `type`, `timestamp` (RFC 3339, UTC), `data`."""
        return _message(self.id, self.type, self.timestamp, self.data)


def _message(id: int, type: str, timestamp: float, data: dict) -> dict:  # noqa: A002 - the spec's names
    when = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
    return {"id": id, "type": type, "timestamp": when.replace("+00:00", "Z"), "data": data}


class TooOld(Exception):
    """The requested id is older than what the hub keeps: resync from the current state."""

    def __init__(self, since: int, oldest: int) -> None:
        super().__init__(f"events after {since} are no longer kept (oldest kept after {oldest}); resync")
        self.since, self.oldest = since, oldest


class EventHub:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self._events: deque[PublicEvent] = deque()
        self._capacity = capacity
        self._lock = threading.Lock()
        self._staged: list[tuple[str, float, dict]] = []
        self.floor = 0  # every event with an id <= floor is gone (or was never seen by this node)

    # ---- the writer: the log's apply thread ----------------------------------------------
    def stage(self, event, before: State, ts: float) -> None:
        """Describe an internal event against the state just before it applies."""
        for type_, data in describe(event, before):
            self._staged.append((type_, ts, data))

    def publish(self, index: int) -> None:
        """Publish what was staged while applying log entry `index`."""
        staged, self._staged = self._staged, []
        if not staged:
            return
        with self._lock:
            if self._events and self._events[-1].id >= index * PER_ENTRY:
                return  # already published (an entry is applied once; defensive)
            for position, (type_, ts, data) in enumerate(staged[:PER_ENTRY]):
                self._events.append(PublicEvent.made(index * PER_ENTRY + position, type_, ts, data))
            while len(self._events) > self._capacity:
                self.floor = self._events.popleft().id

    def reset(self, snapshot_index: int) -> None:
        """The state was replaced by a snapshot covering entries up to `snapshot_index`."""
        with self._lock:
            self._events.clear()
            self._staged = []
            self.floor = snapshot_index * PER_ENTRY + PER_ENTRY - 1

    # ---- readers ------------------------------------------------------------------------------
    def read(self, since: int, limit: int) -> list[PublicEvent]:
        """Up to `limit` events with an id above `since`, oldest first. Raises TooOld."""
        with self._lock:
            if since < self.floor:
                raise TooOld(since, self.floor)
            events = self._events
            if not events or events[-1].id <= since:
                return []
            # ids increase: find the first one above `since` by bisection over the deque
            lo, hi = 0, len(events)
            while lo < hi:
                mid = (lo + hi) // 2
                if events[mid].id <= since:
                    lo = mid + 1
                else:
                    hi = mid
            return [events[i] for i in range(lo, min(len(events), lo + limit))]

    def last_id(self) -> int:
        with self._lock:
            return self._events[-1].id if self._events else self.floor
