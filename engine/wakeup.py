"""The one way other threads reach a node's trio loop (pysyncobj's tick thread, the asyncio thread of the
QMP driver and of gRPC): `TrioWaker.soon(fn, *args)` runs `fn(*args)` in the trio loop, and
`until_called(start)` awaits a callback another thread makes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio


class TrioWaker:
    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None

    def bind(self) -> None:
        """Call from inside the trio loop that callbacks go to."""
        self._token = trio.lowlevel.current_trio_token()

    def soon(self, fn: Callable[..., Any], *args: Any) -> bool:
        """From any thread: run `fn(*args)` in the trio loop soon. False (dropped) if the loop is gone or
        not bound yet."""
        token = self._token
        if token is None:
            return False
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            return False
        return True


async def until_called(start: Callable[[Callable[..., None]], Any]) -> tuple:
    """Call `start(callback)` and wait until some thread calls `callback(*args)`; returns those args.
    Cancelling the wait leaves the callback harmless."""
    waker = TrioWaker()
    waker.bind()
    done, outcome = trio.Event(), []

    def callback(*args: Any) -> None:
        outcome.extend(args)
        waker.soon(done.set)

    start(callback)
    await done.wait()
    return tuple(outcome)
