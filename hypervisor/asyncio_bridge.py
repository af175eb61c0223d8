"""The one bridge between the node's trio loop and the asyncio loop python-qemu-qmp needs.

asyncio runs in its own thread; trio awaits coroutines scheduled there, and callbacks from there
come back into trio through the trio token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class AsyncioBridge:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="qmp-asyncio", daemon=True)
        self._thread.start()
        self._token: trio.lowlevel.TrioToken | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def bind(self) -> None:
        """Remember the trio loop that callbacks go back to (call from inside trio)."""
        self._token = trio.lowlevel.current_trio_token()

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(*args)` on the asyncio loop and await its result from trio."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        future = asyncio.run_coroutine_threadsafe(fn(*args), self.loop)

        def wake(_future) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        future.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Start a long-running coroutine (an event watcher) on the asyncio loop."""
        asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def to_trio(self, fn: Callable[..., Any], *args: Any) -> None:
        """From the asyncio thread: run `fn(*args)` in the trio loop soon."""
        if self._token is not None:
            try:
                self._token.run_sync_soon(fn, *args)
            except trio.RunFinishedError:
                pass

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
