"""What guests cost a node: its RSS per guest and its cold restart (until the last guest is readable) at 10,000
guests (configs only; 100,000 with `--huge`). No peer: etcd, the peer of the other suites, holds no guests.

RSS is read twice: after one listing, and once the sampler has passed over every guest twice more (each guest's
RRD series then holds rows: the steady state of a node that has run a while). KiB per guest is of the second."""

from __future__ import annotations

import os
import time

import requests

from bench.fill import FIRST_VMID, fill
from hypervisor.sampler import INTERVAL
from tests.harness import Cluster


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def run(base: str, quick: bool = False, huge: bool = False) -> list[tuple]:
    rows = [("guests", "RSS MiB listed", "RSS MiB sampled", "KiB per guest", "cold restart s", "journal MiB")]
    cluster = Cluster(os.path.join(base, "gpve-scale"), 1).start()
    node = cluster.nodes[0]
    try:
        time.sleep(1)
        empty = rss_kib(node.proc.pid)
        rows.append(("0", f"{empty / 1024:.0f}", "", "", "", ""))
        have = 0
        for size in [10_000] + ([100_000] if huge and not quick else []):
            fill(node, size - have, first=have)
            have = size
            s = node.session()
            s.get(node.url + "/cluster/resources", timeout=120).raise_for_status()  # steady state: listed once
            listed = rss_kib(node.proc.pid)
            time.sleep(2.5 * INTERVAL)  # two more passes of the sampler (the first may have run before the listing)
            s.get(node.url + "/cluster/resources", timeout=120).raise_for_status()
            rss = rss_kib(node.proc.pid)
            node.stop()
            started = time.monotonic()
            node.start()
            last = f"{node.url}/nodes/{node.name}/qemu/{FIRST_VMID + size - 1}/config"
            while True:
                try:
                    if node.session().get(last, timeout=5).status_code == 200:
                        break
                except requests.RequestException:
                    pass  # not listening, not caught up yet, or too busy replaying to answer the login in time
                time.sleep(0.02)
            took = time.monotonic() - started
            raft = os.path.join(node.data_dir, "raft")
            journal = sum(os.path.getsize(os.path.join(raft, f)) for f in os.listdir(raft))
            rows.append((f"{size:,}", f"{listed / 1024:.0f}", f"{rss / 1024:.0f}", f"{(rss - empty) / size:.1f}",
                         f"{took:.2f}",
                         f"{journal / 2**20:.1f}"))
    finally:
        cluster.stop()
    return rows
