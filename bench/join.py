"""How long the Nth node takes to join a cluster that already holds 10,000 guests (etcd: 10,000 keys); with
`--huge` also 100,000 (node 1 filled straight into its log, `bench.fill`; etcd through its gateway)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.etcd import EtcdCluster
from bench.fill import fill
from tests.harness import Cluster

GUESTS = 10_000
HUGE = 100_000


def _until(predicate, timeout: float = 600.0) -> None:
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


def _gpve(base: str, guests: int, joiners: int) -> list[tuple]:
    """Node 1 given `guests` (through its API at 10,000; written into its log above), then `joiners` nodes
    joining one after another: each row is the time from the join request until the joiner lists every guest."""
    rows = []
    gpve = Cluster(os.path.join(base, f"gpve-join-{guests}"), 1 + joiners, standalone=True).start()
    try:
        n1 = gpve.nodes[0]
        if guests > GUESTS:
            took = fill(n1, guests)
            how = "written into its log"
        else:
            sessions = [n1.session() for _ in range(32)]

            def create(session: requests.Session, i: int) -> None:
                session.post(n1.url + "/nodes/n1/qemu", data={"vmid": 1000 + i, "name": f"g{i}"},
                             timeout=60).raise_for_status()

            took = _populate(lambda i: sessions[i], create, guests)
            how = f"{guests / took:.0f}/s through the API"
        rows.append(("gpve", "(filling node 1)", f"{took:.1f}", f"{guests} guests, {how}"))
        px = n1.api(timeout=120)
        px.cluster.config.post(clustername="bench")
        fingerprint = px.cluster.config.join.get()["nodelist"][0]["pve_fp"]
        for joiner in gpve.nodes[1:]:
            started = time.monotonic()
            joiner.api(timeout=120).cluster.config.join.post(hostname=f"127.0.0.1:{n1.api_port}",
                                                             password=n1.password, fingerprint=fingerprint)
            _until(lambda joiner=joiner: len(joiner.api(timeout=60).cluster.resources.get(type="vm")) == guests)
            rows.append(("gpve", joiner.name, f"{time.monotonic() - started:.2f}", f"{guests} guests"))
    finally:
        gpve.stop()
    return rows


def _etcd(base: str, keys: int, members: int) -> list[tuple]:
    rows = []
    etcd = EtcdCluster(os.path.join(base, f"etcd-join-{keys}"), 1).start()
    try:
        sessions = [requests.Session() for _ in range(32)]
        took = _populate(lambda i: sessions[i], lambda s, i: etcd.put(s, f"guest/{i}", "x" * 200), keys)
        rows.append(("etcd 3.4", "(filling member 1)", f"{took:.1f}", f"{keys} keys, {keys / took:.0f}/s"))
        target = etcd.revision(etcd.nodes[0])
        for _ in range(members):
            started = time.monotonic()
            member = etcd.add_member()
            _until(lambda member=member: etcd.revision(member) >= target)
            rows.append(("etcd 3.4", member.name, f"{time.monotonic() - started:.2f}", f"{keys} keys"))
    finally:
        etcd.stop()
    return rows


def run(base: str, quick: bool = False, huge: bool = False) -> list[tuple]:
    rows = [("system", "joining node", "join + catch-up s", "state")]
    rows += _gpve(base, GUESTS, 3) + _etcd(base, GUESTS, 3)
    if huge:
        rows += _gpve(base, HUGE, 1) + _etcd(base, HUGE, 1)
    return rows
