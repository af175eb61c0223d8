"""One member of a replicated log in its own process, for the `log` suite: `python -m bench.log_member KIND I ADDRS D`.

KIND `gpve`: the engine's log (engine_raw.open_member: fsynced journal, production conf), commands submitted through the
production `LogBridge` (group commit). KIND `pysyncobj`: a bare pysyncobj `SyncObj` with its defaults (journal in
memory, no fsync) whose one replicated method counts. ADDRS: every member's host:port, comma-separated; I: this one;
D: its data directory.

Requests on stdin, answers on stdout, one JSON object a line (the process's own output goes to stderr):
`{"op": "leader"}` -> `{"leader": bool}`; `{"op": "load", "writers": W, "seconds": S, "payload": BYTES}` -> `{"ops":
commits/s, "p50": ms, "p99": ms}` (W writers, each submitting its next command when the last one committed; only
meaningful on the leader); `{"op": "quit"}`.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time

PAYLOAD_VMID = 100


def summary(latencies: list[float], elapsed: float) -> dict:
    latencies.sort()
    return {"ops": len(latencies) / elapsed, "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(0.99 * (len(latencies) - 1))] * 1000, "latencies": latencies}


def sample_command(i: int):
    """The command gpve commits per write: a guest created (what a create request commits)."""
    from engine import commands as c
    return c.CreateGuest(request_id=f"r{i}", ts=time.time(), node="n1", vmid=PAYLOAD_VMID + i, config={"name": f"g{i}"},
                         upid=f"UPID:n1:{i:08X}:00000000:00000000:qmcreate:{PAYLOAD_VMID + i}:root@pam:", starttime=0)


class GpveMember:
    def __init__(self, directory: str, addrs: list[str], i: int) -> None:
        from bench.engine_raw import open_member
        self.log = open_member(directory, addrs, i)
        self.counter = iter(range(10**9))
        self.registered = False

    def is_leader(self) -> bool:
        return self.log._isLeader()

    def load(self, writers: int, seconds: float, payload: int) -> dict:
        import trio

        from engine import commands as c
        from engine.bridge import LogBridge

        async def main() -> dict:
            bridge = LogBridge(self.log)
            async with trio.open_nursery() as nursery:
                await nursery.start(bridge.run)
                if not self.registered:
                    await bridge.submit(c.RegisterNode(request_id="reg", ts=time.time(), name="n1", ip="127.0.0.1",
                                                       api_port=1, raft_addr="x"))
                    self.registered = True
                latencies: list[float] = []
                stop = time.monotonic() + seconds

                async def writer() -> None:
                    while time.monotonic() < stop:
                        command = sample_command(next(self.counter))
                        t = time.perf_counter()
                        await bridge.submit(command)
                        latencies.append(time.perf_counter() - t)

                started = time.monotonic()
                async with trio.open_nursery() as group:
                    for _ in range(writers):
                        group.start_soon(writer)
                result = summary(latencies, time.monotonic() - started)
                nursery.cancel_scope.cancel()
            return result

        return trio.run(main)

    def close(self) -> None:
        self.log.destroy_synchronous()


class PysyncobjMember:
    def __init__(self, directory: str, addrs: list[str], i: int) -> None:
        from pysyncobj import SyncObj, replicated

        class Counter(SyncObj):
            def __init__(self) -> None:
                super().__init__(addrs[i], [a for a in addrs if a != addrs[i]])  # SyncObjConf() defaults
                self.count = 0

            @replicated
            def add(self, payload: bytes) -> int:
                self.count += 1
                return self.count

        self.obj = Counter()

    def is_leader(self) -> bool:
        return self.obj._isLeader()

    def load(self, writers: int, seconds: float, payload: int) -> dict:
        """`writers` commands in flight: each callback (pysyncobj's thread) submits that writer's next one."""
        from pysyncobj import FAIL_REASON
        data = b"x" * payload
        latencies: list[float] = []
        lock = threading.Lock()
        left = [writers]
        done = threading.Event()
        stop = time.monotonic() + seconds

        def submit() -> None:
            t = time.perf_counter()
            self.obj.add(data, callback=lambda _res, err, t=t: finished(t, err))

        def finished(t: float, err) -> None:
            if err == FAIL_REASON.SUCCESS:
                latencies.append(time.perf_counter() - t)
            if time.monotonic() < stop:
                submit()
                return
            with lock:
                left[0] -= 1
                if not left[0]:
                    done.set()

        started = time.monotonic()
        for _ in range(writers):
            submit()
        done.wait(seconds + 60)
        return summary(latencies, time.monotonic() - started)

    def close(self) -> None:
        self.obj.destroy()


def main(argv: list[str]) -> None:
    kind, i, addrs, directory = argv[0], int(argv[1]), argv[2].split(","), argv[3]
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything the log prints goes to stderr
    member = (GpveMember if kind == "gpve" else PysyncobjMember)(directory, addrs, i)
    try:
        for line in sys.stdin:
            request = json.loads(line)
            if request["op"] == "leader":
                answer = {"leader": member.is_leader()}
            elif request["op"] == "load":
                answer = member.load(request["writers"], request["seconds"], request["payload"])
            else:
                break
            answers.write(json.dumps(answer) + "\n")
            answers.flush()
    finally:
        member.close()


if __name__ == "__main__":
    main(sys.argv[1:])
