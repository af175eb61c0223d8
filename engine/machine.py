"""The replicated state machine: runs each command of a log entry through decide and apply.

A retried request id returns its first result and changes nothing, so clients may retry freely.
"""

from __future__ import annotations

from collections.abc import Callable

from engine import (
    access,  # noqa: F401 - registers the access-control commands
    datacenter,  # noqa: F401 - registers the datacenter options' commands
    network,  # noqa: F401 - registers the network reload task
    storage,  # noqa: F401 - registers the storage definitions and node tasks
    vclusters,  # noqa: F401 - registers the vCluster commands and tasks
    webhooks,  # noqa: F401 - registers the webhook commands
)
from engine.codec import Record, decode_records
from engine.commands import Command
from engine.decide import decide
from engine.errors import Rejection
from engine.events import Event
from engine.state import State, apply

# What a node remembers of the requests it applied, to answer a retry (same request id) with the first result: the
# last REQUEST_MEMORY_SECONDS of command time, at most REQUEST_MEMORY_MAX requests. At the bound this is ~50 MiB per
# node (about 250 bytes a request: its id, time and result), and it is in every snapshot.
REQUEST_MEMORY_SECONDS = 3600.0
REQUEST_MEMORY_MAX = 200_000
# The result most writes have (a config update, a lock): remembered as None rather than one dict pair per request.
_OK_EMPTY = {"ok": {}}


def remembered(state: State, request_id: str) -> dict | None:
    """The result a request id got when it was applied, while the node remembers it (else None)."""
    seen = state.requests.get(request_id)
    if seen is None:
        return None
    return {"ok": {}} if seen[1] is None else seen[1]


class Machine:
    def __init__(self, state: State | None = None,
                 on_events: Callable[[Command, list[Event]], None] | None = None) -> None:
        self.state = state or State()
        self.on_events = on_events
        self.hub = None  # an engine.hub.EventHub: given each event with the state before it applies

    def execute(self, command: Command) -> dict:
        """Decide and apply one command; the result is `{"ok": ...}` or `{"error": ...}`."""
        s = self.state
        seen = remembered(s, command.request_id)
        if seen is not None:
            return seen
        try:
            events, payload = decide(command, s)
            result = {"ok": payload}
        except Rejection as rej:
            events, result = [], {"error": rej.to_dict()}
        except Exception as exc:  # a bug in decide: deterministic, so every replica rejects alike
            events, result = [], {"error": {"status": 500, "message": f"internal error: {type(exc).__name__}"}}
        for event in events:
            if self.hub is not None:
                self.hub.stage(event, s, command.ts)
            apply(event, s)
        s.applied += 1
        s.requests[command.request_id] = [command.ts, None if result == _OK_EMPTY else result]
        self._forget_old_requests(command.ts)
        if events and self.on_events is not None:
            try:
                self.on_events(command, events)
            except Exception:  # an observer must never stop the log
                pass
        return result

    def execute_entry(self, payload: bytes) -> list[dict]:
        records: list[Record] = decode_records(payload)
        return [self.execute(c) for c in records if isinstance(c, Command)]

    def _forget_old_requests(self, now: float) -> None:
        reqs = self.state.requests
        horizon = now - REQUEST_MEMORY_SECONDS
        while reqs:
            oldest = next(iter(reqs))
            if reqs[oldest][0] >= horizon and len(reqs) <= REQUEST_MEMORY_MAX:
                break
            del reqs[oldest]
