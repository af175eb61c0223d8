"""A member catching up on a large log: entries bigger than a replication batch, and a joiner given a cluster's
whole history, which must neither stall the transfer nor stand for election against its live leader."""

from __future__ import annotations

import threading

import pytest
from pysyncobj import pickle as raft_pickle

from bench.fill import fill
from engine import commands as c
from engine.journal import DurableJournal
from engine.machine import Machine
from engine.replog import ReplicatedLog
from tests.harness import Cluster, free_ports, wait_for
from tests.test_journal import _commit

BATCH = 1 << 16  # pysyncobj's appendEntriesBatchSizeBytes: a larger entry goes out in chunks


def _guest(i: int, description: str) -> c.CreateGuest:
    return c.CreateGuest(request_id=f"g{i}", ts=2, node="a", vmid=100 + i, config={"description": description},
                         upid=f"U{i}", starttime=2)


def test_an_entry_just_under_two_batches_reaches_the_follower_whole(tmp_path):
    """An entry larger than a batch goes out in chunks (engine/pysyncobj_hooks.send_append_entries) and arrives
    whole, also one whose pickled form, not its command, crosses the second chunk's end: the chunk marked final
    is the one that ends the pickled entry."""
    addrs = [f"127.0.0.1:{p}" for p in free_ports(2)]
    logs = []
    for name, addr in zip("ab", addrs, strict=True):
        journal = DurableJournal(str(tmp_path / name / "raft"))
        logs.append(ReplicatedLog(Machine(), journal, str(tmp_path / name / "raft" / "snapshot"), addr,
                                  [a for a in addrs if a != addr], lock=threading.RLock(), password="k" * 32))
    try:
        wait_for(lambda: any(log._isLeader() for log in logs), timeout=10, interval=0.02)
        leader = next(log for log in logs if log._isLeader())
        follower = next(log for log in logs if log is not leader)
        _commit(leader, c.RegisterNode(request_id="reg", ts=1, name="a", ip="127.0.0.1", api_port=1,
                                       raft_addr=addrs[0]))
        _commit(leader, _guest(0, "x" * 100_000))  # the entry's size beyond its description, measured
        overhead = len(leader.journal.entries[-1][0]) - 100_000
        description = "y" * (2 * BATCH - 4 - overhead)
        _commit(leader, _guest(1, description))
        command, idx, term = leader.journal.entries[-1]
        assert BATCH <= len(command) < 2 * BATCH < len(raft_pickle.dumps((command, idx, term)))
        wait_for(lambda: 101 in follower.machine.state.guests, timeout=10)
        assert follower.machine.state.guests[101]["conf"]["description"] == description
    finally:
        for log in logs:
            log.destroy_synchronous()
            log.journal.close()


@pytest.mark.slow
def test_a_node_joins_a_cluster_of_100000_guests_without_an_election(tmp_path):
    """Before, the leader sent a joiner its whole backlog at once (and again after each rejection) and the joiner
    applied it in one tick, deaf meanwhile: it stood for election against its live leader, and at 100,000 guests
    the join failed. Now the join answers once the joiner holds every guest, and the leader keeps its term."""
    cluster = Cluster(str(tmp_path), 2, standalone=True).start()
    try:
        n1, n2 = cluster.nodes
        fill(n1, 100_000)
        px = n1.api(timeout=60)
        px.cluster.config.post(clustername="big")
        before = n1.session().get(n1.url.replace("/api2/json", "/v1") + "/cluster/raft").json()
        fingerprint = px.cluster.config.join.get()["nodelist"][0]["pve_fp"]
        n2.api(timeout=120).cluster.config.join.post(hostname=f"127.0.0.1:{n1.api_port}", password=n1.password,
                                                     fingerprint=fingerprint)
        n2.wait_ready(60)
        assert len(n2.api(timeout=60).cluster.resources.get(type="vm")) == 100_000
        after = n1.session().get(n1.url.replace("/api2/json", "/v1") + "/cluster/raft").json()
        assert (after["leader"], after["term"]) == (before["leader"], before["term"]) == ("n1", before["term"])
    finally:
        cluster.stop()
