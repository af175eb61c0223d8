"""Raw engine commits: three replicated logs in this process (real TCP on loopback, fsynced journals),
commands submitted through the trio bridge of the leader, no HTTP."""

from __future__ import annotations

import os
import statistics
import threading
import time

import trio

from engine import commands as c
from engine.bridge import LogBridge
from engine.journal import DurableJournal
from engine.machine import Machine
from engine.replog import ReplicatedLog
from tests.harness import free_ports


def open_member(directory: str, addrs: list[str], i: int) -> ReplicatedLog:
    """Member `i` of the log whose members are `addrs`, its journal (fsynced) and snapshot under `directory`: the
    production log and conf (no encryption, as no peer outside this machine's loopback sees it)."""
    journal = DurableJournal(os.path.join(directory, "raft"))
    return ReplicatedLog(Machine(), journal, os.path.join(directory, "raft", "snapshot"), addrs[i],
                         [a for a in addrs if a != addrs[i]], lock=threading.RLock())


def run(base: str, seconds: float = 5.0) -> list[tuple]:
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
    logs = [open_member(os.path.join(base, f"raw{i}"), addrs, i) for i in range(3)]
    try:
        deadline = time.monotonic() + 20
        while not any(log._isLeader() for log in logs) and time.monotonic() < deadline:
            time.sleep(0.05)
        leader = next(log for log in logs if log._isLeader())
        return trio.run(_measure, LogBridge(leader), seconds)
    finally:
        for log in logs:
            log.destroy_synchronous()


async def _measure(bridge: LogBridge, seconds: float) -> list[tuple]:
    rows = []
    async with trio.open_nursery() as nursery:
        await nursery.start(bridge.run)
        await bridge.submit(c.RegisterNode(request_id="reg", ts=time.time(), name="n1", ip="127.0.0.1", api_port=1,
                                           raft_addr="x"))
        counter = iter(range(10**9))

        async def one() -> float:
            i = next(counter)
            t = time.perf_counter()
            await bridge.submit(c.CreateGuest(request_id=f"r{i}", ts=time.time(), node="n1", vmid=100 + i,
                                              config={"name": f"g{i}"}, upid=f"U{i}", starttime=0))
            return time.perf_counter() - t

        for clients in (1, 64):
            latencies: list[float] = []
            stop = time.monotonic() + seconds

            async def client(stop: float = stop, latencies: list[float] = latencies) -> None:
                while time.monotonic() < stop:
                    latencies.append(await one())

            started = time.monotonic()
            async with trio.open_nursery() as group:
                for _ in range(clients):
                    group.start_soon(client)
            elapsed = time.monotonic() - started
            latencies.sort()
            rows.append(("gpve engine, in-process (Raft + fsync)", clients, f"{len(latencies) / elapsed:.0f}",
                         f"{statistics.median(latencies) * 1000:.2f}",
                         f"{latencies[int(0.99 * (len(latencies) - 1))] * 1000:.2f}"))
        nursery.cancel_scope.cancel()
    return rows
