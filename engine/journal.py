"""A durable Raft journal for pysyncobj.

pysyncobj's own journal never syncs, so an acknowledged write could vanish on power loss. Here
entries are appended to a file and made durable by `sync()`, which the log calls before a vote or
an acknowledgement leaves the node, after a leader's batch of sends and before the commit index
moves: one fsync covers every entry appended since the last one (group commit). Each record
carries a CRC, so a torn last record is detected and cut off on load. Term and vote are written
atomically and synced at once.
"""

from __future__ import annotations

import os
import struct
import zlib

from pysyncobj.journal import Journal

from engine.codec import packb, unpackb
from engine.private import fsync_dir, open_private, private_dir, write_private

_HEADER = struct.Struct("<II")  # payload length, crc32

# Test-only switches to plant known bugs (the simulator must catch them). Never set in production.
# "ack-before-sync": `sync()` does nothing, so entries are acknowledged before they are durable.
PLANTED_BUGS: set[str] = set()


class DurableJournal(Journal):
    """Entries `(command, idx, term)` in memory, mirrored to an append-only file.

    The files hold the cluster's state, secrets included: they are 0600 in a 0700 directory
    (`engine.private`), also when compaction rewrites the journal.
    """

    def __init__(self, directory: str) -> None:
        private_dir(directory, files=True)
        self.directory = directory
        self.path = os.path.join(directory, "journal")
        self.meta_path = os.path.join(directory, "meta")
        self.commit_path = os.path.join(directory, "commit")
        self.entries: list[tuple[bytes, int, int]] = []
        self.offsets: list[int] = []  # file offset where each entry's record starts
        self.dirty = False
        self.syncs = 0
        self.torn_records_dropped = 0
        self._load()
        self.fd = open_private(self.path, os.O_RDWR)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        meta = unpackb(open(self.meta_path, "rb").read()) if os.path.exists(self.meta_path) else {}
        self.term: int = meta.get("term", 0)
        self.voted_for: str | None = meta.get("voted_for")
        self.commit_fd = open_private(self.commit_path, os.O_RDWR)
        raw = os.pread(self.commit_fd, 8, 0)
        self.commit_index = struct.unpack("<Q", raw)[0] if len(raw) == 8 else 1

    def _load(self) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            data = f.read()
        pos = 0
        while pos + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, pos)
            body = data[pos + _HEADER.size: pos + _HEADER.size + length]
            if len(body) < length or zlib.crc32(body) != crc:
                break
            idx, term, command = unpackb(body)
            self.entries.append((command, idx, term))
            self.offsets.append(pos)
            pos += _HEADER.size + length
        if pos < len(data):  # a torn or corrupt tail: never acknowledged, cut it off
            self.torn_records_dropped += 1
            with open(self.path, "r+b") as f:
                f.truncate(pos)
                os.fsync(f.fileno())

    # ---- pysyncobj's Journal interface ----------------------------------------------------
    def add(self, command: bytes, idx: int, term: int) -> None:
        body = packb([idx, term, command])
        record = _HEADER.pack(len(body), zlib.crc32(body)) + body
        os.pwrite(self.fd, record, self.size)
        self.offsets.append(self.size)
        self.entries.append((command, idx, term))
        self.size += len(record)
        self.dirty = True

    def clear(self) -> None:
        self._truncate_file(0)
        self.entries.clear()
        self.offsets.clear()

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802 - pysyncobj's name
        if entryFrom < len(self.entries):
            self._truncate_file(self.offsets[entryFrom])
            del self.entries[entryFrom:]
            del self.offsets[entryFrom:]

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802
        """Drop entries covered by a snapshot: rewrite the file with what remains."""
        self.sync()
        fsync_dir(self.directory)  # the snapshot's rename must be durable before its entries go
        keep = self.entries[entryTo:]
        tmp = self.path + ".tmp"
        offsets, pos = [], 0
        with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as f:
            for command, idx, term in keep:
                body = packb([idx, term, command])
                f.write(_HEADER.pack(len(body), zlib.crc32(body)) + body)
                offsets.append(pos)
                pos += _HEADER.size + len(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.directory)
        os.close(self.fd)
        self.fd = open_private(self.path, os.O_RDWR)
        self.entries, self.offsets, self.size = list(keep), offsets, pos

    def __getitem__(self, item):
        return self.entries[item]

    def __len__(self) -> int:
        return len(self.entries)

    def _destroy(self) -> None:
        self.close()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802
        self.sync()
        if raftCommitIndex != self.commit_index:
            self.commit_index = raftCommitIndex
            os.pwrite(self.commit_fd, struct.pack("<Q", raftCommitIndex), 0)

    def getRaftCommitIndex(self) -> int:  # noqa: N802
        return self.commit_index

    def setCurrentTerm(self, term: int, votedForNodeId) -> None:  # noqa: N802
        voted = getattr(votedForNodeId, "id", votedForNodeId)
        if (term, voted) != (self.term, self.voted_for):
            self.term, self.voted_for = term, voted
            write_private(self.meta_path, packb({"term": term, "voted_for": voted}))

    def getCurrentTerm(self) -> int:  # noqa: N802
        return self.term

    def getVotedForNodeId(self):  # noqa: N802
        return self.voted_for

    # ---- durability -------------------------------------------------------------------------
    def sync(self) -> None:
        if "ack-before-sync" in PLANTED_BUGS:
            return
        if self.dirty:
            os.fdatasync(self.fd)
            self.dirty = False
            self.syncs += 1

    def _truncate_file(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.size = size
        self.dirty = True

    def close(self) -> None:
        """Close the files; again is a no-op (pysyncobj's destroy closes the journal, and so does its owner: a
        second `os.close` of a number another file has taken since would close that file)."""
        fds, self.fd, self.commit_fd = (self.fd, self.commit_fd), -1, -1
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
