"""A member catching up on a large log: entries bigger than a replication batch, and a joiner given a cluster's
whole history, which must neither stall the transfer nor stand for election against its live leader."""

from __future__ import annotations

import threading

import pytest
from pysyncobj import pickle as raft_pickle

from bench.fill import fill
from engine import commands as c
from engine import pysyncobj_hooks as hooks
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
        # the joiner lists every guest (it restarts its API server with the cluster's certificate after answering)
        wait_for(lambda: len(n2.api(timeout=60).cluster.resources.get(type="vm")) == 100_000, timeout=60)
        after = n1.session().get(n1.url.replace("/api2/json", "/v1") + "/cluster/raft").json()
        assert (after["leader"], after["term"]) == (before["leader"], before["term"]) == ("n1", before["term"])
    finally:
        cluster.stop()


class _Follower:
    """What `stale_append` reads of a follower: its log (command, index, term), term and election deadline."""

    def __init__(self, entries: list[tuple[bytes, int, int]], term: int) -> None:
        self._SyncObj__raftLog = entries
        self.raftCurrentTerm = term
        self._SyncObj__transferInProgress = False
        self._SyncObj__raftElectionDeadline = 0.0
        self._SyncObj__generateRaftTimeout = lambda: 1.0


def _append(prev: int, prev_term: int, entries: list[tuple[bytes, int, int]], term: int = 2) -> dict:
    return {"type": "append_entries", "term": term, "commit_index": 1, "entries": entries, "prevLogIdx": prev,
            "prevLogTerm": prev_term}


def test_a_batch_overlapping_the_log_end_appends_only_what_is_new():
    """Raft §5.3: entries the follower holds stay (pysyncobj deleted and rewrote them, applied ones too, logging
    "truncating already-applied log entries"); a conflict still goes to pysyncobj, which deletes from there; a batch
    with nothing new while the log goes on is ignored, and still counts as word from the leader."""
    log = [(b"c%d" % i, i, 2) for i in range(1, 11)]  # indexes 1..10, term 2
    follower = _Follower(log, term=2)
    overlap = _append(7, 2, [(b"c8", 8, 2), (b"c9", 9, 2), (b"c10", 10, 2), (b"c11", 11, 2)])
    assert not hooks.stale_append(follower, overlap)
    assert (overlap["prevLogIdx"], overlap["prevLogTerm"], overlap["entries"]) == (10, 2, [(b"c11", 11, 2)])
    to_the_end = _append(8, 2, [(b"c9", 9, 2), (b"c10", 10, 2)])
    assert not hooks.stale_append(follower, to_the_end)
    assert (to_the_end["prevLogIdx"], to_the_end["entries"]) == (10, [])
    conflict = _append(7, 2, [(b"c8", 8, 2), (b"x9", 9, 3)], term=3)
    follower.raftCurrentTerm = 3
    assert not hooks.stale_append(follower, conflict) and len(conflict["entries"]) == 2
    follower.raftCurrentTerm = 2
    resent = _append(3, 2, [(b"c4", 4, 2), (b"c5", 5, 2)])
    assert hooks.stale_append(follower, resent)
    assert follower._SyncObj__raftElectionDeadline > 0
    assert hooks.stale_append(follower, _append(3, 2, []))  # a heartbeat from an old next index
