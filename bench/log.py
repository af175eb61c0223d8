"""Replicated commits: the engine's log against etcd and bare pysyncobj, 3 and 5 members on loopback, 1-256 writers.

- gpve: the engine's log (engine/replog.py, fsynced journal, production conf, no encryption), each member its own
  process (bench/log_member.py); the writers are trio tasks in the leader's process submitting through the production
  `LogBridge` (group commit), each its next command once the last committed. The command: a guest created.
- etcd (Debian's etcd-server, fsync on as by default): a put of a value of the same size through etcd's gRPC API
  (KV/Put) to the leader, from this process (grpc.aio, the writers as coroutines over one channel).
- pysyncobj: a bare `SyncObj` with its defaults (journal in memory, no fsync, ticks every 50 ms), one replicated
  method taking the same bytes; the writers as commands in flight on the leader, each callback submitting the next.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import requests

from bench.etcd import EtcdCluster
from bench.log_member import sample_command, summary
from engine.codec import encode_record
from tests.harness import REPO, free_ports

WRITERS = (1, 4, 16, 64, 256)
QUICK_WRITERS = (1, 16, 256)
SIZES = (3, 5)
LATENCIES: dict[str, list[float]] = {}  # "system nodes writers" -> sorted latencies (s), for --plot


class Members:
    """`size` log members of `kind` (gpve, pysyncobj), each a `bench.log_member` process."""

    def __init__(self, base: str, kind: str, size: int) -> None:
        addrs = ",".join(f"127.0.0.1:{p}" for p in free_ports(size))
        self.procs = []
        for i in range(size):
            directory = os.path.join(base, f"{kind}{size}-{i}")
            os.makedirs(directory, exist_ok=True)
            log = open(directory + ".log", "ab")
            argv = [sys.executable, "-m", "bench.log_member", kind, str(i), addrs, directory]
            self.procs.append(subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                               stderr=log, text=True))

    def ask(self, i: int, **request) -> dict:
        proc = self.procs[i]
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"log member {i} ended (its log is beside its directory)")
        return json.loads(line)

    def leader(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in range(len(self.procs)):
                if self.ask(i, op="leader")["leader"]:
                    return i
            time.sleep(0.1)
        raise TimeoutError("no leader")

    def stop(self) -> None:
        for proc in self.procs:
            try:
                proc.stdin.write('{"op": "quit"}\n')
                proc.stdin.flush()
            except OSError:
                pass
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def put_request(key: bytes, value: bytes) -> bytes:
    """etcdserverpb.PutRequest (key = 1, value = 2), encoded by hand: no generated code needed for one message."""
    return b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value)) + value


def _etcd_leader(etcd: EtcdCluster) -> int:
    for i, node in enumerate(etcd.nodes):
        status = requests.post(node.client_url + "/v3/maintenance/status", json={}, timeout=5).json()
        if status.get("leader") == status["header"]["member_id"]:
            return i
    raise RuntimeError("etcd has no leader")


async def _etcd_load(target: str, writers: int, seconds: float, payload: int) -> dict:
    import grpc
    value = b"x" * payload
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        put = channel.unary_unary("/etcdserverpb.KV/Put")  # bytes in, bytes out
        await put(put_request(b"warm", value), timeout=10)
        stop = time.monotonic() + seconds

        async def writer(w: int) -> None:
            request = put_request(f"bench/{w}".encode(), value)
            while time.monotonic() < stop:
                t = time.perf_counter()
                await put(request, timeout=10)
                latencies.append(time.perf_counter() - t)

        started = time.monotonic()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        return summary(latencies, time.monotonic() - started)


def _measured(key: str, result: dict) -> tuple[str, str, str]:
    LATENCIES[key] = result.pop("latencies", [])
    return f"{result['ops']:.0f}", f"{result['p50']:.1f}", f"{result['p99']:.1f}"


def extra() -> dict:
    """Beside the table, for --plot: each run's commit latencies as 101 percentiles (ms)."""
    return {"latency percentiles ms": {key: [round(values[int(q / 100 * (len(values) - 1))] * 1000, 3)
                                             for q in range(101)]
                                       for key, values in LATENCIES.items() if values}}


def run(base: str, quick: bool = False, huge: bool = False) -> list[tuple]:
    seconds = 2.0 if quick else 5.0
    writers = QUICK_WRITERS if quick else WRITERS
    payload = len(encode_record(sample_command(10**6)))
    figures: dict[tuple[str, int, int], tuple[str, str, str]] = {}
    for size in SIZES:
        for kind in ("gpve", "pysyncobj"):
            members = Members(base, kind, size)
            try:
                leader = members.leader()
                for w in writers:
                    figures[kind, size, w] = _measured(f"{kind} {size} {w}", members.ask(
                        leader, op="load", writers=w, seconds=seconds, payload=payload))
            finally:
                members.stop()
        etcd = EtcdCluster(os.path.join(base, f"etcd-log{size}"), size).start()
        try:
            target = f"127.0.0.1:{etcd.nodes[_etcd_leader(etcd)].client_port}"
            for w in writers:
                figures["etcd", size, w] = _measured(f"etcd {size} {w}",
                                                     asyncio.run(_etcd_load(target, w, seconds, payload)))
        finally:
            etcd.stop()
    rows = [("nodes", "writers", "gpve commits/s", "gpve p50 ms", "gpve p99 ms", "etcd commits/s", "etcd p50 ms",
             "etcd p99 ms", "pysyncobj commits/s", "pysyncobj p50 ms", "pysyncobj p99 ms", "gpve / etcd",
             "gpve / pysyncobj")]
    for size in SIZES:
        for w in writers:
            ours, etcd_, bare = figures["gpve", size, w], figures["etcd", size, w], figures["pysyncobj", size, w]
            rows.append((size, w, *ours, *etcd_, *bare, f"{float(ours[0]) / max(float(etcd_[0]), 1):.2f}×",
                         f"{float(ours[0]) / max(float(bare[0]), 1):.2f}×"))
    return rows
