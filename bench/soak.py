"""Memory under a write soak: 64 clients update guest configs (`PUT …/config`) on one node for N minutes while the
node's RSS is sampled every 10 s; then the clients stop and the node idles for a minute (is memory given back?).
The peer: a one-member etcd under the same 64 clients (a put of the same description value through its v3 HTTP
gateway), its RSS sampled alike. The journal's size shows the compactions (`gpve serve --log-compaction`)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import requests

from bench.etcd import EtcdCluster
from bench.scale import rss_kib
from tests.harness import Cluster

CLIENTS = 64
SAMPLE_SECONDS = 10.0
IDLE_SECONDS = 60.0


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _soak(op: Callable[[int, int], None], seconds: float, pid: int, data_dir: str) -> list[tuple[float, int, float,
                                                                                                    float]]:
    """Samples (t s, writes so far, RSS MiB, data dir MiB) every SAMPLE_SECONDS while CLIENTS threads run `op(c, i)`
    for `seconds`, and for IDLE_SECONDS after."""
    done = [0] * CLIENTS
    stop = threading.Event()

    def client(c: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                op(c, i)
                done[c] += 1
            except requests.RequestException:
                time.sleep(0.1)  # counted out; a soak keeps going
            i += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    samples = []
    for k in range(int((seconds + IDLE_SECONDS) / SAMPLE_SECONDS) + 1):
        time.sleep(max(0.0, started + k * SAMPLE_SECONDS - time.monotonic()))
        if k * SAMPLE_SECONDS >= seconds and not stop.is_set():
            stop.set()
            for t in threads:
                t.join()
        samples.append((k * SAMPLE_SECONDS, sum(done), rss_kib(pid) / 1024, _dir_bytes(data_dir) / 2**20))
    return samples


def run(base: str, quick: bool = False, huge: bool = False, minutes: float | None = None) -> list[tuple]:
    seconds = 60 * (minutes or (2 if quick else 30))
    cluster = Cluster(os.path.join(base, "gpve-soak"), 1)
    node = cluster.nodes[0]
    if quick:  # one compaction in the middle of the short run (the default waits 600 s or 20,000 entries)
        node.extra_args += ["--log-compaction", f"20000:{seconds / 2:g}"]
    cluster.start()
    try:
        px = node.api(timeout=60)
        first = int(px.cluster.nextid.get())
        sessions = [node.session() for _ in range(CLIENTS)]
        for c in range(CLIENTS):
            sessions[c].post(f"{node.url}/nodes/{node.name}/qemu", data={"vmid": first + c, "name": f"soak{c}"},
                             timeout=30).raise_for_status()
        value = "x" * 40

        def put(c: int, i: int) -> None:
            r = sessions[c].put(f"{node.url}/nodes/{node.name}/qemu/{first + c}/config",
                                data={"description": f"{value} {i}"}, timeout=30)
            r.raise_for_status()

        ours = _soak(put, seconds, node.proc.pid, os.path.join(node.data_dir, "raft"))
    finally:
        cluster.stop()
    etcd = EtcdCluster(os.path.join(base, "etcd-soak"), 1).start()
    try:
        etcd_sessions = [requests.Session() for _ in range(CLIENTS)]
        theirs = _soak(lambda c, i: etcd.put(etcd_sessions[c], f"guest/{c}/description", f"{value} {i}"), seconds,
                       etcd.nodes[0].proc.pid, etcd.nodes[0].data_dir)
    finally:
        etcd.stop()
    rows = [("t s", "gpve writes/s", "gpve RSS MiB", "gpve journal MiB", "etcd writes/s", "etcd RSS MiB",
             "etcd data MiB", "etcd / gpve RSS")]
    step = max(1, int(60 / SAMPLE_SECONDS)) if seconds > 600 else 1
    for k in range(0, len(ours), step):
        t, w, rss, journal = ours[k]
        _, ew, erss, edata = theirs[k]
        rate, etcd_rate = "", ""
        if k:  # writes/s since the previous row
            span = t - ours[k - step][0]
            rate, etcd_rate = f"{(w - ours[k - step][1]) / span:.0f}", f"{(ew - theirs[k - step][1]) / span:.0f}"
        rows.append((f"{t:.0f}", rate, f"{rss:.0f}", f"{journal:.1f}", etcd_rate, f"{erss:.0f}", f"{edata:.1f}",
                     f"{erss / rss:.2f}×"))
    return rows
