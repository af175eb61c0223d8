"""The trio bridge to the replicated log: group commit, and a bad command never stops it."""

from __future__ import annotations

import os
import threading
import time

import pytest
import trio

from engine import commands as c
from engine.bridge import LogBridge
from engine.errors import Rejection
from engine.journal import DurableJournal
from engine.machine import Machine
from engine.replog import ReplicatedLog
from tests.harness import free_ports


@pytest.fixture
def bridge(tmp_path):
    [port] = free_ports(1)
    journal = DurableJournal(os.path.join(str(tmp_path), "raft"))
    machine = Machine()
    log = ReplicatedLog(machine, journal, os.path.join(str(tmp_path), "raft", "snapshot"), f"127.0.0.1:{port}", [],
                        lock=threading.RLock())
    yield LogBridge(log), machine
    log.destroy_synchronous()
    journal.close()


async def test_concurrent_writes_share_log_entries_and_a_bad_command_is_answered(bridge):
    b, machine = bridge
    async with trio.open_nursery() as nursery:
        await nursery.start(b.run)
        with trio.fail_after(10):
            while True:
                try:
                    await b.submit(c.RegisterNode(request_id="reg", ts=1, name="n1", ip="i", api_port=1,
                                                  raft_addr="a"))
                    break
                except Rejection:
                    await trio.sleep(0.05)
        huge = c.CreateGuest(request_id="huge", ts=2, node="n1", vmid=100, config={"balloon": 2**70}, upid="U",
                             starttime=2)
        with pytest.raises(Rejection) as exc:
            await b.submit(huge)
        assert exc.value.status == 400

        async def create(i: int) -> None:
            await b.submit(c.CreateGuest(request_id=f"g{i}", ts=2, node="n1", vmid=200 + i, upid=f"U{i}",
                                         starttime=2))

        async with trio.open_nursery() as writers:
            for i in range(300):
                writers.start_soon(create, i)
        nursery.cancel_scope.cancel()
    assert len(machine.state.guests) == 300
    assert b.entries_proposed < b.commands_proposed  # group commit: fewer log entries than commands


def test_a_lone_member_elects_itself_at_once(tmp_path):
    """pysyncobj waits a random 0.4-1.4 s before its first candidacy, which spreads several members' elections;
    a lone member has no one to split votes with and leads at its first tick (a fresh node serves sooner)."""
    [port] = free_ports(1)
    journal = DurableJournal(os.path.join(str(tmp_path), "raft"))
    started = time.monotonic()
    log = ReplicatedLog(Machine(), journal, os.path.join(str(tmp_path), "raft", "snapshot"), f"127.0.0.1:{port}", [],
                        lock=threading.RLock())
    try:
        while log.leader_name() is None and time.monotonic() - started < 5:
            time.sleep(0.01)
        assert log.leader_name() == f"127.0.0.1:{port}" and time.monotonic() - started < 0.35
    finally:
        log.destroy_synchronous()
        journal.close()
