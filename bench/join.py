"""How long the Nth node takes to join a cluster that already holds 10,000 guests (etcd: 10,000 keys)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.etcd import EtcdCluster
from tests.harness import Cluster

GUESTS = 10_000


def _until(predicate, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # a joiner restarting its API server
            pass
        time.sleep(0.05)
    raise TimeoutError("did not catch up")


def _populate(session_for, create, count: int) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: create(session_for(i % 32), i), range(count)))
    return time.monotonic() - started


def run(base: str) -> list[tuple]:
    rows = [("system", "joining node", "join + catch-up s", "state")]
    gpve = Cluster(os.path.join(base, "gpve-join"), 4, standalone=True).start()
    try:
        n1 = gpve.nodes[0]
        px = n1.api(timeout=60)
        px.cluster.config.post(clustername="bench")
        sessions = [n1.session() for _ in range(32)]

        def create(session: requests.Session, i: int) -> None:
            session.post(n1.url + "/nodes/n1/qemu", data={"vmid": 1000 + i, "name": f"g{i}"},
                         timeout=60).raise_for_status()

        took = _populate(lambda i: sessions[i], create, GUESTS)
        rows.append(("gpve", "(filling node 1)", f"{took:.1f}", f"{GUESTS} guests, {GUESTS / took:.0f}/s"))
        fingerprint = px.cluster.config.join.get()["nodelist"][0]["pve_fp"]
        for joiner in gpve.nodes[1:]:
            started = time.monotonic()
            joiner.api(timeout=120).cluster.config.join.post(hostname=f"127.0.0.1:{n1.api_port}",
                                                             password=n1.password, fingerprint=fingerprint)
            _until(lambda joiner=joiner: len(joiner.api(timeout=30).cluster.resources.get(type="vm")) == GUESTS)
            rows.append(("gpve", joiner.name, f"{time.monotonic() - started:.2f}", f"{GUESTS} guests"))
    finally:
        gpve.stop()
    etcd = EtcdCluster(os.path.join(base, "etcd-join"), 1).start()
    try:
        sessions = [requests.Session() for _ in range(32)]
        took = _populate(lambda i: sessions[i], lambda s, i: etcd.put(s, f"guest/{i}", "x" * 200), GUESTS)
        rows.append(("etcd 3.4", "(filling member 1)", f"{took:.1f}", f"{GUESTS} keys, {GUESTS / took:.0f}/s"))
        target = etcd.revision(etcd.nodes[0])
        for _ in range(3):
            started = time.monotonic()
            member = etcd.add_member()
            _until(lambda member=member: etcd.revision(member) >= target)
            rows.append(("etcd 3.4", member.name, f"{time.monotonic() - started:.2f}", f"{GUESTS} keys"))
    finally:
        etcd.stop()
    return rows
