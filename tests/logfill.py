"""Grow a stopped node's log fast: commands proposed straight to its replicated log, one per entry.

Used to give a real node a long committed log to replay at its next start (API writes would take
minutes to make as many entries). The node's own data dir and Raft address are used, so the
entries are the node's own log, exactly as if they had come through its API.
"""

from __future__ import annotations

import os
import threading
import time

from engine.codec import encode_record, join_encoded
from engine.commands import Command
from engine.journal import DurableJournal
from engine.machine import Machine
from engine.replog import ReplicatedLog


def append_commands(data_dir: str, raft_addr: str, commands: list[Command], in_flight: int = 1000,
                    **conf) -> None:
    """Commit every command of `commands` as its own log entry of the (stopped) node at `data_dir`."""
    append_entries(data_dir, raft_addr, [join_encoded([encode_record(c)]) for c in commands], in_flight, **conf)


def append_entries(data_dir: str, raft_addr: str, entries: list[bytes], in_flight: int = 1000, **conf) -> None:
    """Commit each of `entries` (encoded record lists, engine/codec.py) as one log entry of the (stopped) node."""
    raft = os.path.join(data_dir, "raft")
    log = ReplicatedLog(Machine(), DurableJournal(raft), os.path.join(raft, "snapshot"), raft_addr, [],
                        lock=threading.RLock(), **conf)
    try:
        deadline = time.monotonic() + 20
        while not log._isLeader():
            assert time.monotonic() < deadline, "the single-node log elected no leader"
            time.sleep(0.05)
        done = threading.Semaphore(0)
        failures: list = []

        def callback(_result, err) -> None:
            if err != 0:
                failures.append(err)
            done.release()

        for i, entry in enumerate(entries):
            if i >= in_flight:
                done.acquire()
            log.propose(entry, callback)
        for _ in range(min(in_flight, len(entries))):
            done.acquire()
        assert not failures, f"{len(failures)} entries failed: {failures[:3]}"
    finally:
        log.destroy_synchronous()
