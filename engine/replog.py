"""The replicated log: a pysyncobj SyncObj whose one replicated method applies a batch of commands.

Durability: entries go to `DurableJournal`, which is synced before a vote or an acknowledgement
leaves this node (`SyncBeforeSend`), on a leader right after each batch of entries it sends, and
before the commit index moves, so nothing is acknowledged before it is on disk on a majority.
Snapshots are msgpack documents of the state, fsynced before the journal entries they cover are
dropped; like the journal they are 0600 (`engine.private`).

Peers: in production the log runs with pysyncobj's encryption keyed by the cluster's Raft key
(`password=`): every message, the first of a connection included, is authenticated (Fernet's HMAC)
before it is unpickled, so a peer without the key gets nothing deserialized. `MembersOnly` then
admits only connections that introduce themselves as members: no utility commands (`status`,
`add`, `remove`, ...), no read-only peers (which would be streamed the whole log). `BoundedReads` caps
what any peer can make the node buffer before it is checked (`PRE_AUTH_MESSAGE_BYTES`, `MAX_MESSAGE_BYTES`).
"""

from __future__ import annotations

import functools
import os
import random
import threading
from collections.abc import Callable

import structlog
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.node import TCPNode
from pysyncobj.transport import TCPTransport

from engine import pysyncobj_hooks as hooks
from engine.codec import packb, unpackb
from engine.journal import DurableJournal
from engine.machine import Machine
from engine.private import FILE_MODE, open_private
from engine.state import State

log = structlog.get_logger("gpve.raft")


class SyncBeforeSend:
    """Transport mixin: make the journal durable before a message that vouches for it (a vote, an acknowledgement)
    leaves. A leader's entries go out first and are synced right after the batch of sends, while they travel
    (`pysyncobj_hooks.send_append_entries`; Raft thesis §10.2.1): the leader counts itself towards a commit only
    in a later tick, and its journal syncs before its commit index moves in any case (`setRaftCommitIndex`)."""

    def __init__(self, syncObj, selfNode, otherNodes):  # noqa: N803 - pysyncobj's names
        self._journal = syncObj.journal
        super().__init__(syncObj, selfNode, otherNodes)

    def send(self, node, message):
        if not (isinstance(message, dict) and message.get("type") == "append_entries"):
            self._journal.sync()
        return super().send(node, message)


class CommitGuard:
    """Transport mixin: work around pysyncobj advancing a follower's commit index on snapshot messages
    (and, on the leader, a catch-up livelock: `pysyncobj_hooks.guard_next_index`).

    pysyncobj 0.3.17 takes `commit_index` from every append_entries, also from those that carry a
    snapshot instead of entries, where it never checked that the follower's log matches the leader's:
    a follower holding stale entries of an old term then commits and applies them (found by the
    simulator, seed 3 of 5 nodes; see sim/README.md). Such messages get the follower's own commit index.
    """

    def __init__(self, syncObj, selfNode, otherNodes):  # noqa: N803 - pysyncobj's names
        self._guarded_log = syncObj
        super().__init__(syncObj, selfNode, otherNodes)

    def _onMessageReceived(self, node, message):  # noqa: N802 - pysyncobj's name
        self._guarded_log.received += 1
        if hooks.stale_append(self._guarded_log, message):
            return
        hooks.guard_snapshot_commit(self._guarded_log, message)
        hooks.guard_next_index(self._guarded_log, node, message)
        super()._onMessageReceived(node, message)


class MembersOnly:
    """TCP transport mixin: drop an incoming connection whose first message (after the key exchange)
    is not a member's address: a utility command or a read-only peer, acted on by nobody.

    Membership changes go through the node's API (root@pam) and `ReplicatedLog.change_membership`.
    """

    def _onIncomingMessageReceived(self, conn, message):  # noqa: N802 - pysyncobj's name
        refused = hooks.refuse_non_member(self, conn, message)
        if refused:
            log.warning("raft connection refused", reason=refused)
            return
        super()._onIncomingMessageReceived(conn, message)


# What a peer may make this node buffer for one message, checked on the message's declared length before
# it is buffered. Until the peer has proved it is a member (`pysyncobj_hooks.authenticated`), its messages
# are its Fernet-encrypted random key and its address, ~200 bytes each.
PRE_AUTH_MESSAGE_BYTES = 64 * 1024
# A member's largest message is one append_entries batch: entries up to appendEntriesBatchSizeBytes (64 KiB)
# plus the entry that crosses it, sent whole (an entry over 64 KiB sent alone, and snapshots, travel in
# 64 KiB chunks: appendEntriesBatchSizeBytes, logCompactionBatchSize). An entry holds up to 512 commands
# (engine/bridge.py `max_batch`), each from a request body of at most 512 KiB (api/bodies.py): 256 MiB,
# ~342 MiB on the wire (zlib cannot shrink incompressible data; Fernet's base64 adds a third). 512 MiB leaves
# half again for commands larger than their request (a task's outcome carries whole configs).
MAX_MESSAGE_BYTES = 512 * 1024 * 1024


class BoundedReads:
    """TCP transport mixin: every connection (incoming, and outgoing to members) reads through
    `pysyncobj_hooks.bound_reads`: a message declaring more than the peer may send (`PRE_AUTH_MESSAGE_BYTES`
    before it proved to be a member, `MAX_MESSAGE_BYTES` after) drops the connection before it is buffered.
    """

    def _onNewIncomingConnection(self, conn):  # noqa: N802 - pysyncobj's name
        super()._onNewIncomingConnection(conn)
        self._bound_reads(conn)

    def addNode(self, node):  # noqa: N802 - pysyncobj's name
        super().addNode(node)
        if node in self._connections:  # the outgoing connection to a member, reused across reconnects
            self._bound_reads(self._connections[node])

    def _bound_reads(self, conn) -> None:
        hooks.bound_reads(conn, functools.partial(self._read_limit, conn), _log_dropped)

    def _read_limit(self, conn) -> int:
        return MAX_MESSAGE_BYTES if hooks.authenticated(self, conn) else PRE_AUTH_MESSAGE_BYTES


def _log_dropped(peer: str, declared: int, limit: int) -> None:
    log.warning("raft connection refused", reason="message too large", peer=peer, declared=declared, limit=limit)


# Every transport the engine uses (TCP in production, the simulator's) is built on these.
ENGINE_TRANSPORT_MIXINS = (SyncBeforeSend, CommitGuard)


class DurableTCPTransport(SyncBeforeSend, CommitGuard, MembersOnly, BoundedReads, TCPTransport):
    pass


APPLY_SLICE = 0.05  # seconds of applying committed entries before the log reads its messages again
SEND_BACKLOG = 1 << 20  # bytes waiting on a follower's connection before it is sent more entries


def default_conf(**overrides) -> dict:
    conf = dict(
        autoTick=True,
        appendEntriesUseBatch=True,  # False is unsafe under reordering (see design section 2)
        commandsWaitLeader=False,  # fail fast without a leader; the bridge retries or answers 503
        leaderFallbackTimeout=2.0,
        raftMinTimeout=0.4,
        raftMaxTimeout=1.4,
        connectionTimeout=3.5,
        connectionRetryTime=0.5,
        dynamicMembershipChange=True,
        logCompactionMinEntries=20000,
        logCompactionMinTime=600,
        logCompactionSplit=True,
    )
    conf.update(overrides)
    return conf


class ReplicatedLog(SyncObj):
    def __init__(self, machine: Machine, journal: DurableJournal, snapshot_path: str, self_node, other_nodes,
                 *, lock: threading.RLock, transport_class=DurableTCPTransport, node_class=None,
                 **conf_overrides) -> None:
        self.machine = machine
        self.journal = journal
        self.state_lock = lock
        self._shipped = (0, 0)
        self.leadership: tuple[int, str | None] = (0, None)  # (term, leader's address), as of the last tick
        self._applying = False  # committed entries are left to apply (a slice at a time)
        self.received = 0  # Raft messages taken from peers (CommitGuard counts them)
        key = os.path.join(journal.directory, "journal")
        hooks.provide_journal(key, journal)
        conf = SyncObjConf(journalFile=key, fullDumpFile=snapshot_path, serializer=self._write_snapshot,
                           deserializer=self._read_snapshot, **default_conf(**conf_overrides))
        self._node_class = node_class or TCPNode
        try:
            super().__init__(self_node, other_nodes, conf, transportClass=transport_class, nodeClass=self._node_class)
        finally:
            hooks.withdraw_journal(key)
        self._wake = hooks.attach_wakeup(self) if conf.autoTick else (lambda: None)
        self.addOnTickCallback(self._after_tick)

    def _onTick(self, timeToWait=0.0):  # noqa: N802, N803 - pysyncobj's names
        started = hooks.now()
        super()._onTick(timeToWait)
        if self._applying:  # as long again for messages, which pysyncobj takes one per connection per poll
            deadline = started + 2 * APPLY_SLICE
            while hooks.now() < deadline:
                received = self.received
                self._poller.poll(0)
                if self.received == received:
                    break
        busy = hooks.now() - started - timeToWait  # beyond its wait for messages
        if busy > 0:
            hooks.defer_election(self, busy)

    def _apply_slice(self) -> bool:
        """Apply what is committed, `APPLY_SLICE` seconds at a time; the next tick comes at once for the rest."""
        self._applying = hooks.apply_committed(self, APPLY_SLICE)
        if self._applying:
            getattr(self, "_wake", lambda: None)()  # (the tick thread starts before the constructor ends)
        return False

    def _send_entries(self) -> None:
        hooks.send_append_entries(self, SEND_BACKLOG)

    def _election_timeout(self) -> float:
        """pysyncobj's randomised election timeout, which spreads the candidacies of several members; a lone
        member has no one to split votes with, so it stands at its first tick. (Otherwise a fresh single node
        would wait 0.4-1.4 s for nothing before it could commit, and serve, anything.)"""
        if not self.otherNodes:
            return 0.0
        conf = self._getConf()
        return conf.raftMinTimeout + (conf.raftMaxTimeout - conf.raftMinTimeout) * random.random()

    @replicated
    def apply_entry(self, payload: bytes) -> list[dict]:
        with self.state_lock:
            results = self.machine.execute_entry(payload)
            if self.machine.hub is not None:
                self.machine.hub.publish(self.raftLastApplied + 1)  # pysyncobj counts it applied after this
            return results

    def propose(self, payload: bytes, callback: Callable) -> None:
        """Queue one log entry (a batch of commands); `callback(results, fail_reason)` on apply."""
        self.apply_entry(payload, callback=callback)
        self._wake()

    def change_membership(self, op: str, raft_addr: str, callback: Callable) -> None:
        """Add (`add`) or remove (`remove`) a member through pysyncobj's dynamic membership."""
        (self.addNodeToCluster if op == "add" else self.removeNodeFromCluster)(raft_addr, callback=callback)
        self._wake()

    def writable(self) -> bool:
        """Enough members reachable for a majority: otherwise writes fail at once (503)."""
        return self.hasQuorum

    def leader_name(self) -> str | None:
        leader = self._getLeader()
        return None if leader is None else leader.id

    def _after_tick(self) -> None:
        leadership = (self.raftCurrentTerm, self.leader_name())
        if leadership != self.leadership:  # one tuple, so a reader gets a term and that term's leader together
            self.leadership = leadership
            log.info("raft leadership", term=leadership[0], leader=leadership[1], member=self.selfNode.id)
        if not self._isLeader():
            return
        now = (self.journal.entries[-1][1], self.raftCommitIndex)
        if now != self._shipped:
            self._shipped = now
            if self.otherNodes:
                hooks.send_append_entries_now(self)
            else:
                self._wake()  # a lone node commits on its next tick: make it come now
        elif hooks.room_to_catch_up(self, SEND_BACKLOG // 2):  # a lagging follower's backlog has drained
            hooks.send_append_entries_now(self)

    # ---- snapshots (called by pysyncobj in the tick thread) ---------------------------------
    def _write_snapshot(self, path: str, data) -> None:
        last, prev, cluster = data
        with self.state_lock:
            doc = packb({"state": self.machine.state.to_dict(), "last": list(last), "prev": list(prev),
                         "cluster": sorted(n.id for n in cluster)})
        # `path` is pysyncobj's temporary name, renamed over the snapshot once written
        with os.fdopen(open_private(path, os.O_WRONLY | os.O_TRUNC), "wb") as f:
            f.write(doc)
            f.flush()
            os.fsync(f.fileno())

    def _read_snapshot(self, path: str):
        # also called on a snapshot received from the leader, which pysyncobj itself wrote (umask's mode)
        os.chmod(path, FILE_MODE)
        with open(path, "rb") as f:
            doc = unpackb(f.read())
        with self.state_lock:
            self.machine.state = State.from_dict(doc["state"])
            if self.machine.hub is not None:
                self.machine.hub.reset(doc["last"][1])  # the last entry covered: (command, index, term)
        # Node objects, not ids: pysyncobj compares them with its own node to leave itself out
        return tuple(doc["last"]), tuple(doc["prev"]), [self._node_class(i) for i in doc["cluster"]]


hooks.override_raft_timeout(ReplicatedLog, ReplicatedLog._election_timeout)
hooks.override_private(ReplicatedLog, "applyLogEntries", ReplicatedLog._apply_slice)
hooks.override_private(ReplicatedLog, "sendAppendEntries", ReplicatedLog._send_entries)
