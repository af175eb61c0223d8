"""gRPC's asyncio thread and the node's trio loop, bridged both ways on engine/wakeup.py.

grpcio's server (`grpc.aio`) runs on an asyncio loop in a thread of its own. Every RPC's work runs in the
node's trio loop: `TrioPortal.run(fn, *args)`, awaited on the asyncio side, starts `fn(*args)` in a trio
nursery through `TrioWaker.soon` and hands its result (or exception) back; cancelling the asyncio side (the
client went away) cancels the trio side. The trio side starts and stops the server with
`AsyncioThread.call`, awaiting the asyncio coroutine through `until_called`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from engine.errors import Rejection
from engine.wakeup import TrioWaker
from hypervisor.asyncio_bridge import AsyncioBridge

T = TypeVar("T")


def _gone() -> Rejection:
    return Rejection(503, "node shutting down")


class AsyncioThread(AsyncioBridge):
    """An asyncio loop running in a daemon thread, for the process's lifetime (grpc.aio keeps per-loop state,
    so one loop serves every start of the server)."""

    def __init__(self, name: str = "grpc-asyncio") -> None:
        super().__init__(name)


class TrioPortal:
    """From the asyncio thread: run async functions in a trio nursery (bound with `open`, from trio)."""

    def __init__(self) -> None:
        self._waker = TrioWaker()
        self._nursery: trio.Nursery | None = None

    def open(self, nursery: trio.Nursery) -> None:
        """Call from inside trio: jobs run in `nursery` from now on."""
        self._waker.bind()
        self._nursery = nursery

    def close(self) -> None:
        self._nursery = None

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """(asyncio side) `await fn(*args)` in trio. Exceptions come back as they are; Rejection 503 when the
        node is shutting down."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()
        scope = trio.CancelScope()

        def deliver(result: tuple[bool, Any]) -> None:
            if not done.done():
                done.set_result(result)

        def send(result: tuple[bool, Any]) -> None:
            try:
                loop.call_soon_threadsafe(deliver, result)
            except RuntimeError:  # the asyncio loop is closed: nobody waits any more
                pass

        async def job() -> None:
            result: tuple[bool, Any] = (False, _gone())
            try:
                with scope:
                    try:
                        result = (True, await fn(*args))
                    except Exception as exc:
                        result = (False, exc)
            finally:
                send(result)

        def start() -> None:
            nursery = self._nursery
            if nursery is None:
                send((False, _gone()))
                return
            try:
                nursery.start_soon(job)
            except RuntimeError:  # the nursery is closing
                send((False, _gone()))

        if not self._waker.soon(start):
            raise _gone()
        try:
            ok, value = await done
        except asyncio.CancelledError:
            self._waker.soon(scope.cancel)
            raise
        if not ok:
            raise value
        return value
