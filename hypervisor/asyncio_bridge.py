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

from engine.wakeup import TrioWaker, until_called

T = TypeVar("T")


class AsyncioBridge:
    """An asyncio loop in a daemon thread (QEMU's QMP library; grpc.aio), bridged to trio on engine/wakeup.py."""

    def __init__(self, name: str = "qmp-asyncio") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._waker = TrioWaker()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def bind(self) -> None:
        """Remember the trio loop that callbacks go back to (call from inside trio)."""
        self._waker.bind()

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(*args)` on the asyncio loop and await its result from trio."""
        future = asyncio.run_coroutine_threadsafe(fn(*args), self.loop)
        try:
            await until_called(future.add_done_callback)
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Start a long-running coroutine (an event watcher) on the asyncio loop."""
        asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def to_trio(self, fn: Callable[..., Any], *args: Any) -> None:
        """From the asyncio thread: run `fn(*args)` in the trio loop soon."""
        self._waker.soon(fn, *args)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
