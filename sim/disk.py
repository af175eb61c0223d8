"""Simulated disks: the engine's real `DurableJournal` on tmpfs, plus a record of what fsync made durable.

The journal file is written by the real code (records, CRCs, truncation). `DiskImage` remembers the
bytes that the last fsync covered; a power loss rewrites the file to them, optionally followed by part
of the unsynced data that the OS happened to write back (which may end in a torn record). A process
crash (kill -9) loses nothing, as the page cache survives it. The commit index file is never fsynced by
the engine, so after a power loss it holds the value of a moment within the last few seconds.
"""

from __future__ import annotations

import os
import random
import struct

from engine.journal import DurableJournal

WRITEBACK_SECONDS = 5.0  # the kernel's dirty-page writeback interval


class DiskImage:
    """What survives on one node's disk: durable journal bytes and the commit-index write history."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.durable = bytearray()  # changed in place: a sync copies only what it covers anew
        self.low: int | None = None  # lowest offset changed since the last fsync
        self.commit_history: list[tuple[float, int]] = []
        self.power_losses = 0
        self.torn_tails = 0

    def changed_from(self, offset: int) -> None:
        self.low = offset if self.low is None else min(self.low, offset)

    def made_durable(self, fd: int, size: int) -> None:
        low = min(self.low if self.low is not None else size, size, len(self.durable))
        self.durable[low:] = os.pread(fd, size - low, low)
        self.low = None

    def rewritten(self, path: str) -> None:
        with open(path, "rb") as f:
            self.durable = bytearray(f.read())
        self.low = None

    def power_loss(self, journal_path: str, commit_path: str, now: float, rng: random.Random) -> None:
        """Put the files in the state a power cut leaves them in."""
        self.power_losses += 1
        with open(journal_path, "rb") as f:
            current = f.read()
        image = bytes(self.durable)
        if self.low is not None and rng.random() < 0.5 and len(current) > self.low:
            # some unsynced pages reached the disk: a prefix of the unsynced region, maybe mid-record
            keep = rng.randint(1, len(current) - self.low)
            image = self.durable[: self.low] + current[self.low: self.low + keep]
            self.torn_tails += 1
        with open(journal_path, "wb") as f:
            f.write(image)
        self.durable, self.low = bytearray(image), None
        if self.commit_history:
            horizon = now - rng.uniform(0.0, WRITEBACK_SECONDS)
            older = [value for when, value in self.commit_history if when <= horizon]
            value = older[-1] if older else self.commit_history[0][1]
            with open(commit_path, "wb") as f:
                f.write(struct.pack("<Q", value))
            self.commit_history = [(now, value)]


class SimJournal(DurableJournal):
    """The production journal, reporting to its `DiskImage` what each fsync covered."""

    def __init__(self, directory: str, disk: DiskImage, clock) -> None:
        self.disk = disk
        self.clock = clock
        super().__init__(directory)
        disk.rewritten(self.path)  # what was loaded (torn tail cut off) is what is on disk now
        disk.commit_history = [(clock(), self.commit_index)]

    def add(self, command: bytes, idx: int, term: int) -> None:
        self.disk.changed_from(self.size)
        super().add(command, idx, term)

    def _truncate_file(self, size: int) -> None:
        super()._truncate_file(size)
        self.disk.changed_from(size)

    def sync(self) -> None:
        was_dirty = self.dirty
        super().sync()
        if was_dirty and not self.dirty:
            self.disk.made_durable(self.fd, self.size)

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802 - pysyncobj's name
        super().deleteEntriesTo(entryTo)
        self.disk.rewritten(self.path)  # rewritten and fsynced whole

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802
        before = self.commit_index
        super().setRaftCommitIndex(raftCommitIndex)
        if self.commit_index != before:
            history = self.disk.commit_history
            history.append((self.clock(), self.commit_index))
            del history[: max(0, len(history) - 64)]
