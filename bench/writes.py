"""Replicated writes per second and latency: gpve's API against etcd's, both 3 nodes on loopback."""

from __future__ import annotations

import os
import statistics
import threading
import time

from bench import engine_raw
from bench.etcd import EtcdCluster
from tests.harness import Cluster

SECONDS = 5.0


def measure(op, clients: int, seconds: float = SECONDS) -> tuple[float, float, float]:
    """(ops/s, p50 ms, p99 ms) of `op(client_index, counter)` run by `clients` threads for `seconds`."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(c: int) -> None:
        mine, i = [], 0
        while time.monotonic() < stop:
            t = time.perf_counter()
            op(c, i)
            mine.append(time.perf_counter() - t)
            i += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    latencies.sort()
    return (len(latencies) / elapsed, statistics.median(latencies) * 1000,
            latencies[int(0.99 * (len(latencies) - 1))] * 1000)


CLIENTS = (1, 64)


def run(base: str) -> list[tuple]:
    rows = [("system", "clients", "writes/s", "p50 ms", "p99 ms")]
    rows += engine_raw.run(base, SECONDS)
    gpve = Cluster(os.path.join(base, "gpve-writes"), 3).start()
    try:
        leader = gpve.leader()
        sessions = [leader.session() for _ in range(max(CLIENTS))]
        url = leader.url + f"/nodes/{leader.name}/qemu"
        vmids = iter(range(1000, 10**9))
        for clients in CLIENTS:
            def op(c: int, i: int) -> None:
                r = sessions[c].post(url, data={"vmid": next(vmids), "name": f"c{c}-{i}"}, timeout=10)
                r.raise_for_status()
            ops, p50, p99 = measure(op, clients)
            rows.append(("gpve API: guest create (HTTPS)", clients, f"{ops:.0f}", f"{p50:.1f}", f"{p99:.1f}"))
    finally:
        gpve.stop()
    etcd = EtcdCluster(os.path.join(base, "etcd-writes"), 3).start()
    try:
        import requests
        sessions = [requests.Session() for _ in range(max(CLIENTS))]
        for clients in CLIENTS:
            def op(c: int, i: int, clients=clients) -> None:
                etcd.put(sessions[c], f"b{clients}/{c}/{i}", "x" * 200)  # about a create command's size
            ops, p50, p99 = measure(op, clients)
            rows.append(("etcd 3.4 (v3 HTTP gateway)", clients, f"{ops:.0f}", f"{p50:.1f}", f"{p99:.1f}"))
    finally:
        etcd.stop()
    return rows
