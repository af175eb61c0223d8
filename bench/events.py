"""Events: how soon a change made through node 1 reaches a client of node 3, by WebSocket (`/v1/events/ws`)
against polling `GET …/config` every second (what clients of Proxmox do), and what each costs node 3.

- latency: a config change sent to node 1 (`PUT …/config description=N`) until a client of node 3 sees it:
  the WebSocket message, or the first poll answer holding the new value (pollers poll once a second).
- cost: node 3's CPU seconds (its process's utime+stime) while 100 WebSocket consumers, or 10 pollers,
  follow the same stream of changes for the same time.
- rate: events per second one node streams to 100 consumers while 16 writers change guests as fast as
  they can.
"""

from __future__ import annotations

import json
import os
import ssl
import statistics
import threading
import time

import requests
from proxmoxer.tools import Tasks
from websockets.sync.client import connect

from tests.harness import Cluster

CHANGES = 1000
CONSUMERS = 100
POLLERS = 10
COST_SECONDS = 10.0
RATE_SECONDS = 10.0


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stream(node, ticket: str, **params):
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return connect(f"wss://127.0.0.1:{node.api_port}/v1/events/ws?{query}", ssl=tls, open_timeout=30,
                   additional_headers={"Cookie": f"PVEAuthCookie={ticket}"}, max_queue=None)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[int(q * (len(values) - 1))] * 1000


def run(base: str) -> list[tuple]:
    cluster = Cluster(os.path.join(base, "gpve-events"), 3).start()
    rows = [("measure", "clients on node 3", "p50 ms", "p99 ms", "node 3 CPU s", "events/s")]
    try:
        n1, _, n3 = cluster.nodes
        px = n1.api(timeout=60)
        ticket = n1.session().cookies["PVEAuthCookie"]
        vmid = int(px.cluster.nextid.get())
        Tasks.blocking_status(px, px.nodes("n1").qemu.create(vmid=vmid, name="bench", memory=64))
        writer = n1.session()
        config = f"{n1.url}/nodes/n1/qemu/{vmid}/config"

        # latency by WebSocket: each change waited for before the next
        with _stream(n3, ticket, types="vm.config.changed", vmid=vmid) as ws:
            ws_latency = []
            for i in range(CHANGES):
                sent = time.perf_counter()
                writer.put(config, data={"description": f"ws {i}"}, timeout=10).raise_for_status()
                while json.loads(ws.recv(timeout=10))["data"]["changes"]["description"]["new"] != f"ws {i}":
                    pass
                ws_latency.append(time.perf_counter() - sent)

        # latency by polling once a second: a poller on its own cadence; changes land anywhere in its interval
        poll_latency = _poll_latency(n3, writer, config, vmid)

        costs = {}
        for period in (1.0, 0.1):
            costs[period] = (_consumers_cost(n3, ticket, writer, config, period)[0],
                             _pollers_cost(n3, writer, config, vmid, period))
        ws_rate = _consumers_cost(n3, ticket, writer, config, 1.0, flat_out=True)[1]
        rows.append(("change → client (WebSocket)", 1, f"{statistics.median(ws_latency) * 1000:.1f}",
                     f"{_pct(ws_latency, 0.99):.1f}", "", ""))
        rows.append(("change → client (poll every 1 s)", 1, f"{statistics.median(poll_latency) * 1000:.1f}",
                     f"{_pct(poll_latency, 0.99):.1f}", "", ""))
        for period, (ws_cost, poll_cost) in costs.items():
            rate = f"{1 / period:.0f} change/s"
            rows.append((f"follow {rate} for {COST_SECONDS:.0f} s (WebSocket)", CONSUMERS, "", "", f"{ws_cost:.2f}",
                         ""))
            rows.append((f"follow {rate} for {COST_SECONDS:.0f} s (poll every 1 s)", POLLERS, "", "",
                         f"{poll_cost:.2f}", ""))
        rows.append(("sustained stream, 16 writers (per consumer)", CONSUMERS, "", "", "", f"{ws_rate:.0f}"))
    finally:
        cluster.stop()
    return rows


def _writing(writer, config: str, stop: threading.Event, period: float) -> threading.Thread:
    def loop() -> None:
        i = 0
        while not stop.is_set():
            writer.put(config, data={"description": f"load {i}"}, timeout=10)
            i += 1
            time.sleep(period)
    thread = threading.Thread(target=loop)
    thread.start()
    return thread


def _poll_latency(n3, writer, config: str, vmid: int, changes: int = 30) -> list[float]:
    seen: dict[str, float] = {}
    stop = threading.Event()

    def poll() -> None:
        s = n3.session()
        while not stop.is_set():
            got = s.get(f"{n3.url}/nodes/n1/qemu/{vmid}/config", timeout=10).json()["data"]
            seen.setdefault(got.get("description", ""), time.perf_counter())
            stop.wait(1.0)

    thread = threading.Thread(target=poll)
    thread.start()
    latency = []
    for i in range(changes):
        time.sleep(0.5 + 0.37 * (i % 5))
        sent = time.perf_counter()
        writer.put(config, data={"description": f"poll {i}"}, timeout=10).raise_for_status()
        while f"poll {i}" not in seen:
            time.sleep(0.01)
        latency.append(seen[f"poll {i}"] - sent)
    stop.set()
    thread.join()
    return latency


def _follow_cost(n3, writer, config: str, period: float, follower, clients: int, then=None,
                 close=lambda: None) -> tuple[float, float]:
    """(node 3's CPU s while `clients` threads run `follower(i, stop)` and a writer changes the guest every `period` s
    for COST_SECONDS; then `then()`'s figure, taken before the followers stop, or 0.0)."""
    stop = threading.Event()
    followers = [threading.Thread(target=follower, args=(i, stop)) for i in range(clients)]
    for t in followers:
        t.start()
    load_stop = threading.Event()
    before = _cpu(n3.proc.pid)
    load = _writing(writer, config, load_stop, period)
    time.sleep(COST_SECONDS)
    cost = _cpu(n3.proc.pid) - before
    load_stop.set()
    load.join()
    extra = then() if then is not None else 0.0
    stop.set()
    close()
    for t in followers:
        t.join()
    return cost, extra


def _consumers_cost(n3, ticket: str, writer, config: str, period: float,
                    flat_out: bool = False) -> tuple[float, float]:
    """(node 3 CPU s while 100 consumers follow a change every `period` s for COST_SECONDS, and with
    `flat_out` the events/s per consumer while 16 writers go as fast as they can)."""
    streams = [_stream(n3, ticket, types="vm.config.changed") for _ in range(CONSUMERS)]
    counts = [0] * CONSUMERS

    def consume(i: int, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                streams[i].recv(timeout=0.5)
                counts[i] += 1
            except TimeoutError:
                continue
            except Exception:  # closed at the end
                return

    def close() -> None:
        for ws in streams:
            ws.close()

    then = (lambda: _flat_out(writer, config, counts)) if flat_out else None
    return _follow_cost(n3, writer, config, period, consume, CONSUMERS, then=then, close=close)


def _flat_out(writer, config: str, counts: list[int]) -> float:
    flat_stop = threading.Event()
    writers = []
    for _ in range(16):
        s = requests.Session()
        s.verify, s.trust_env = False, False
        s.cookies.update(writer.cookies)
        s.headers.update(writer.headers)
        writers.append(_writing(s, config, flat_stop, 0.0))
    start_counts, started = list(counts), time.perf_counter()
    time.sleep(RATE_SECONDS)
    rate = statistics.median(c - s for c, s in zip(counts, start_counts, strict=True)) / (time.perf_counter() - started)
    flat_stop.set()
    for t in writers:
        t.join()
    return rate


def _pollers_cost(n3, writer, config: str, vmid: int, period: float) -> float:
    """Node 3 CPU s while 10 pollers read the guest's config every second, under a change every `period` s."""
    def poll(_: int, stop: threading.Event) -> None:
        s = n3.session()
        while not stop.is_set():
            s.get(f"{n3.url}/nodes/n1/qemu/{vmid}/config", timeout=10)
            stop.wait(1.0)

    return _follow_cost(n3, writer, config, period, poll, POLLERS)[0]
