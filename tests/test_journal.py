"""The durable journal and the replicated log's recovery from journal and snapshot, on real files."""

from __future__ import annotations

import os
import threading
import time

from engine import commands as c
from engine.codec import encode_records
from engine.journal import DurableJournal
from engine.machine import Machine
from engine.replog import ReplicatedLog
from tests.harness import free_ports


def test_entries_term_and_vote_survive_reopening(tmp_path):
    j = DurableJournal(str(tmp_path))
    j.add(b"a", 1, 1)
    j.add(b"b", 2, 1)
    j.add(b"c", 3, 2)
    j.setCurrentTerm(2, "127.0.0.1:1")
    j.setRaftCommitIndex(2)
    assert j.syncs == 1 and not j.dirty
    j.deleteEntriesFrom(2)
    j.add(b"d", 3, 3)
    j.sync()
    j.close()
    again = DurableJournal(str(tmp_path))
    assert list(again) == [(b"a", 1, 1), (b"b", 2, 1), (b"d", 3, 3)]
    assert (again.getCurrentTerm(), again.getVotedForNodeId(), again.getRaftCommitIndex()) == (2, "127.0.0.1:1", 2)


def test_a_torn_last_record_is_cut_off(tmp_path):
    j = DurableJournal(str(tmp_path))
    for i in range(1, 4):
        j.add(b"x" * 100, i, 1)
    j.sync()
    j.close()
    path = os.path.join(str(tmp_path), "journal")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 7)  # the last record was only partly written
    again = DurableJournal(str(tmp_path))
    assert [e[1] for e in again] == [1, 2]
    assert again.torn_records_dropped == 1
    again.add(b"y", 3, 1)
    again.sync()
    again.close()
    assert [e[1] for e in DurableJournal(str(tmp_path))] == [1, 2, 3]


def test_dropping_entries_covered_by_a_snapshot_keeps_the_rest(tmp_path):
    j = DurableJournal(str(tmp_path))
    for i in range(1, 11):
        j.add(bytes([i]), i, 1)
    j.deleteEntriesTo(7)
    assert [e[1] for e in j] == [8, 9, 10]
    j.add(b"z", 11, 1)
    j.sync()
    j.close()
    assert [e[1] for e in DurableJournal(str(tmp_path))] == [8, 9, 10, 11]


def _open_log(data_dir: str, port: int) -> tuple[ReplicatedLog, Machine]:
    machine = Machine()
    journal = DurableJournal(os.path.join(data_dir, "raft"))
    log = ReplicatedLog(machine, journal, os.path.join(data_dir, "raft", "snapshot"), f"127.0.0.1:{port}", [],
                        lock=threading.RLock(), logCompactionMinEntries=50, logCompactionMinTime=1)
    deadline = time.monotonic() + 10
    while not log._isLeader() and time.monotonic() < deadline:
        time.sleep(0.02)
    return log, machine


def _commit(log: ReplicatedLog, command: c.Command) -> dict:
    done = threading.Event()
    out: dict = {}

    def callback(result, err):
        out.update(result=result, err=err)
        done.set()

    log.propose(encode_records([command]), callback)
    assert done.wait(10), "commit timed out"
    assert out["err"] == 0
    return out["result"][0]


def test_a_restarted_log_rebuilds_its_state_from_snapshot_and_tail(tmp_path):
    data_dir = str(tmp_path)
    [port] = free_ports(1)
    log, machine = _open_log(data_dir, port)
    _commit(log, c.RegisterNode(request_id="reg", ts=1, name="n1", ip="127.0.0.1", api_port=1, raft_addr="a"))
    for i in range(120):
        _commit(log, c.CreateGuest(request_id=f"g{i}", ts=2, node="n1", vmid=100 + i, config={"name": f"g{i}"},
                                   upid=f"U{i}", starttime=2))
        if i == 80:
            log.forceLogCompaction()
    deadline = time.monotonic() + 10
    while len(log.journal) > 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.exists(os.path.join(data_dir, "raft", "snapshot")), "no snapshot was written"
    assert len(log.journal) <= 100, "the journal was not compacted"
    before = machine.state.to_dict()
    log.destroy_synchronous()
    log.journal.close()

    log2, machine2 = _open_log(data_dir, port)
    deadline = time.monotonic() + 10
    while machine2.state.applied < before["applied"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(machine2.state.guests) == 120
    assert machine2.state.guests == before["guests"]
    retry = _commit(log2, c.CreateGuest(request_id="g5", ts=3, node="n1", vmid=105, upid="U5", starttime=2))
    assert retry == {"ok": {"upid": "U5", "vmid": 105}}  # remembered across the restart: applies once
    log2.destroy_synchronous()
