"""Every place where gpve reaches into pysyncobj's private parts, in one module.

pysyncobj (pinned at 0.3.17) gives no public way to inject a journal, to send append-entries
right away in batch mode, to replace its clock, to seed its election timeout or to refuse utility
commands and read-only peers. These hooks do it by name. `tests/test_pysyncobj_hooks.py` checks each
name still exists, so an upgrade that moves one fails loudly instead of silently losing durability,
determinism or safety.
"""

from __future__ import annotations

import _socket
import socket
import struct
import threading
from collections.abc import Callable

import pysyncobj.syncobj as _syncobj
import pysyncobj.tcp_connection as _tcp_connection
from pysyncobj import SyncObj
from pysyncobj.journal import Journal
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.version import VERSION

PINNED_VERSION = "0.3.17"

# pysyncobj.win_inet_pton replaces socket.inet_ntop with a Windows-only function on every platform (its
# `if os.name == 'nt'` guards inet_pton alone): every later user of it fails, pyroute2's address decoding among
# them. The C function comes back.
socket.inet_ntop = _socket.inet_ntop

# Names this module depends on, checked by the test suite.
PRIVATE_NAMES = {
    "module": ["createJournal", "monotonicTime", "FAIL_REASON", "SyncObjExceptionWrongVer", "_RAFT_STATE", "pickle",
               "logger"],
    "tcp_connection": ["monotonicTime"],
    "SyncObj": ["_SyncObj__sendAppendEntries", "_SyncObj__generateRaftTimeout", "_poller",
                "_SyncObj__raftLog", "_SyncObj__applyLogEntries", "_SyncObj__raftCommitIndex",
                "_SyncObj__raftLastApplied", "_SyncObj__commandsWaitingCommit", "_SyncObj__doApplyCommand",
                "_SyncObj__getEntries", "_SyncObj__getPrevLogIndexTerm", "_SyncObj__raftNextIndex",
                "_SyncObj__raftState", "_SyncObj__raftElectionDeadline", "_SyncObj__transferInProgress",
                "_SyncObj__newAppendEntriesTime", "_SyncObj__transport", "_SyncObj__serializer",
                "_SyncObj__connectedNodes", "_SyncObj__otherNodes", "_SyncObj__readonlyNodes",
                "_SyncObj__raftCurrentTerm", "_SyncObj__selfCodeVersion"],
    "Transport": ["_onMessageReceived"],
    "TCPTransport": ["_onIncomingMessageReceived", "_onNewIncomingConnection", "_syncObj", "_nodeAddrToNode",
                     "_unknownConnections", "_connections"],
    "TcpConnection": ["sendRandKey", "_TcpConnection__tryReadBuffer", "_TcpConnection__socket",
                      "_TcpConnection__readBuffer", "_TcpConnection__writeBuffer", "_TcpConnection__recvBufferSize",
                      "_TcpConnection__lastReadTime"],
}

_journals: dict[str, Journal] = {}
_journals_lock = threading.Lock()
_original_create_journal = _syncobj.createJournal


def _create_journal(journal_file):
    with _journals_lock:
        journal = _journals.pop(journal_file, None) if journal_file is not None else None
    return journal if journal is not None else _original_create_journal(journal_file)


_syncobj.createJournal = _create_journal


def provide_journal(key: str, journal: Journal) -> None:
    """The next SyncObj constructed with `journalFile=key` uses `journal` (ours, durable)."""
    with _journals_lock:
        _journals[key] = journal


def withdraw_journal(key: str) -> None:
    """After the SyncObj's constructor: a journal it did not take (it failed first) must not outlive it here."""
    with _journals_lock:
        _journals.pop(key, None)


def send_append_entries_now(obj: SyncObj) -> None:
    """In batch mode pysyncobj ships new entries only every appendEntriesPeriod; ship them now."""
    obj._SyncObj__sendAppendEntries()


def attach_wakeup(obj: SyncObj) -> Callable[[], None]:
    """A pipe on pysyncobj's poller, so a command queued from another thread is seen at once."""
    notifier = PipeNotifier(obj._poller)
    return notifier.notify


def set_clock(clock: Callable[[], float]) -> Callable[[], float]:
    """Replace pysyncobj's monotonic clock (the simulator's clock); returns the one replaced."""
    previous, _syncobj.monotonicTime = _syncobj.monotonicTime, clock
    return previous


def now() -> float:
    """pysyncobj's monotonic clock (the simulator's, under simulation)."""
    return _syncobj.monotonicTime()


def override_raft_timeout(cls: type, timeout: Callable[[SyncObj], float]) -> None:
    """Give `cls` (a SyncObj subclass) its own election timeout (the simulator's seeded one, a lone member's)."""
    cls._SyncObj__generateRaftTimeout = timeout


def apply_committed(obj: SyncObj, budget: float) -> bool:
    """Apply committed entries in order, as pysyncobj's `__applyLogEntries` does, but stop once `budget` seconds of
    its clock have passed; True when committed entries are left for the next tick.

    pysyncobj applies everything committed in one tick, and its tick thread reads no message meanwhile: a node
    catching up on a large log (a joiner given 100,000 guests) went silent for seconds, so its leader stepped down
    (`leaderFallbackTimeout`) and it stood for election itself. In slices, it answers between them."""
    commit, applied = obj._SyncObj__raftCommitIndex, obj._SyncObj__raftLastApplied
    if commit <= applied:
        return False
    deadline = _syncobj.monotonicTime() + budget
    waiting = obj._SyncObj__commandsWaitingCommit
    for command, idx, term in obj._SyncObj__getEntries(applied + 1, commit - applied):
        try:
            subscribers = waiting.pop(idx, [])
            result = obj._SyncObj__doApplyCommand(command)
            for subscribed_term, callback in subscribers:
                if subscribed_term == term:
                    callback(result, _syncobj.FAIL_REASON.SUCCESS)
                else:
                    callback(None, _syncobj.FAIL_REASON.DISCARDED)
            obj._SyncObj__raftLastApplied += 1
        except _syncobj.SyncObjExceptionWrongVer as exc:
            _syncobj.logger.error("request to switch to unsupported code version (self version: %d, requested "
                                  "version: %d)", obj._SyncObj__selfCodeVersion, exc.ver)
        if _syncobj.monotonicTime() >= deadline:
            return obj._SyncObj__raftLastApplied < commit
    return False


def unsent_bytes(obj: SyncObj, node) -> int:
    """Bytes queued for `node` on its connection and not yet taken by the socket (0 without a TCP connection: the
    simulator's transport delivers messages itself)."""
    conn = getattr(obj._SyncObj__transport, "_connections", {}).get(node)
    return len(getattr(conn, "_TcpConnection__writeBuffer", b""))


def room_to_catch_up(obj: SyncObj, room: int) -> bool:
    """On the leader: whether a follower has entries left to send and fewer than `room` bytes waiting on its TCP
    connection (`send_append_entries` stopped at its backlog and the socket has taken it since)."""
    connections = getattr(obj._SyncObj__transport, "_connections", {})
    last, next_index = obj._SyncObj__raftLog[-1][1], obj._SyncObj__raftNextIndex
    return any(next_index.get(node, last + 1) <= last and unsent_bytes(obj, node) < room
               for node in connections if node in obj._SyncObj__connectedNodes)


def send_append_entries(obj: SyncObj, backlog: int) -> None:
    """pysyncobj's `__sendAppendEntries` (Raft's AppendEntries to every follower: entries from its next index, a
    heartbeat when there are none, the snapshot to one whose next entry was compacted away), but a follower is sent
    more only while less than `backlog` bytes wait in its connection's buffer.

    pysyncobj sent a lagging follower its whole backlog at once (a joiner of a cluster holding 100,000 guests: 30
    MB), appending each message to an immutable buffer (a quadratic copy that kept its tick busy for a second at a
    time), and after a rejection resent it all again, so the follower read stale duplicates for tens of seconds.
    The rest goes out on later ticks, as pysyncobj's own time limit per call already allows. An entry larger
    than a batch is cut into chunks, the last marked by where the pickled entry ends (pysyncobj compared the
    command's length, so a follower could be told to rebuild the entry before its last chunk came)."""
    conf = obj._getConf()
    clock = _syncobj.monotonicTime
    started = clock()
    obj._SyncObj__newAppendEntriesTime = started + conf.appendEntriesPeriod
    log, next_index = obj._SyncObj__raftLog, obj._SyncObj__raftNextIndex
    transport, serializer = obj._SyncObj__transport, obj._SyncObj__serializer
    connected, batch = obj._SyncObj__connectedNodes, conf.appendEntriesBatchSizeBytes
    for node in obj._SyncObj__otherNodes | obj._SyncObj__readonlyNodes:
        if node not in connected:
            serializer.cancelTransmisstion(node)
            continue
        first_message, snapshotting = True, False
        while first_message or snapshotting or next_index[node] <= log[-1][1]:
            if not first_message and unsent_bytes(obj, node) >= backlog:
                break
            first_message = False
            term, commit, nxt = obj._SyncObj__raftCurrentTerm, obj._SyncObj__raftCommitIndex, next_index[node]
            if nxt > log[0][1]:
                prev_idx, prev_term = obj._SyncObj__getPrevLogIndexTerm(nxt)
                entries = obj._SyncObj__getEntries(nxt, None, batch) if nxt <= log[-1][1] else []
                if entries:
                    next_index[node] = entries[-1][1] + 1
                if len(entries) == 1 and len(entries[0][0]) >= batch:
                    whole = _syncobj.pickle.dumps(entries[0])
                    for pos in range(0, len(whole), batch):
                        step = "start" if pos == 0 else "finish" if pos + batch >= len(whole) else "process"
                        transport.send(node, {"type": "append_entries", "transmission": step,
                                              "data": whole[pos:pos + batch], "term": term, "commit_index": commit,
                                              "prevLogIdx": prev_idx, "prevLogTerm": prev_term})
                        if node not in connected:
                            break
                else:
                    transport.send(node, {"type": "append_entries", "term": term, "commit_index": commit,
                                          "entries": entries, "prevLogIdx": prev_idx, "prevLogTerm": prev_term})
            else:  # its next entry is in the snapshot: send the snapshot, a part per message
                part = serializer.getTransmissionData(node)
                transport.send(node, {"type": "append_entries", "term": term, "commit_index": commit,
                                      "serialized": part})
                snapshotting = part is not None and not part[2]
                if part is not None and part[2]:
                    next_index[node] = log[1][1] + 1
            if node not in connected or clock() - started > conf.appendEntriesPeriod:
                break
    obj._SyncObj__raftLog.sync()  # the leader's own entries, while the batches travel (replog.SyncBeforeSend)


def override_private(cls: type, name: str, method: Callable) -> None:
    """Give `cls` (a SyncObj subclass) its own version of SyncObj's private method `name` (`applyLogEntries`,
    `sendAppendEntries`), which SyncObj's own methods then call."""
    assert callable(getattr(SyncObj, f"_SyncObj__{name}")), name
    setattr(cls, f"_SyncObj__{name}", method)


def defer_election(obj: SyncObj, busy: float) -> None:
    """A follower that was `busy` seconds in one tick (applying, loading a snapshot) read no message meanwhile: that
    time does not count towards its election timeout (else it stood for election against a live leader)."""
    if obj._SyncObj__raftState == _syncobj._RAFT_STATE.FOLLOWER:
        obj._SyncObj__raftElectionDeadline += busy


class _IdlePoller:
    """A poller with no sockets: the simulator delivers messages itself."""

    def subscribe(self, *args, **kwargs) -> None:
        raise AssertionError("the simulated transport registers no descriptors")

    def unsubscribe(self, *args, **kwargs) -> None:
        pass

    def poll(self, timeout: float) -> None:
        pass


def detach_poller(obj: SyncObj) -> None:
    """Make `obj` (driven by `doTick`) skip its socket poll: the simulator owns all I/O."""
    obj._poller = _IdlePoller()


def guard_snapshot_commit(obj: SyncObj, message) -> None:
    """An append_entries without `prevLogIdx` (a snapshot chunk) must not move the commit index.

    pysyncobj applies its `commit_index` with no log-matching check; the next regular append_entries,
    checked against the follower's log, advances the commit index instead.
    """
    if isinstance(message, dict) and message.get("type") == "append_entries" and "prevLogIdx" not in message:
        message["commit_index"] = min(message.get("commit_index", 0), obj.raftCommitIndex)


def stale_append(obj: SyncObj, message) -> bool:
    """Whether a follower should ignore `message`, an append_entries of the current term's leader whose entries are
    all in its log already (same index and term, after a matching previous entry) while the log goes on past the
    last of them. One that overlaps the log's end and then brings new entries is cut to the new ones (in place).

    pysyncobj takes each append_entries as the end of the leader's log and deletes what follows its previous
    entry, then appends the message's. A lagging follower gets its backlog in several batches at once; one resent
    or delivered after later ones cut off entries those had brought and the follower had applied, so its log fell
    behind what it applied (and compaction then emptied it: simulator, `--membership` seed 25 with clone bursts;
    see sim/README.md). A batch that overlapped the end had its known entries deleted and written again, applied
    ones too, logged as "truncating already-applied log entries … may have diverged" hundreds of times a minute
    under load. Raft (§5.3) deletes only from the first entry that conflicts and appends what is new. Only the
    current term's leader: the log's entries past a matching one are then this leader's, so none is stale. An
    ignored message still moves the election deadline (a joiner reading a backlog of resent batches stood for
    election against its live leader).
    """
    if not (isinstance(message, dict) and message.get("type") == "append_entries" and "prevLogIdx" in message) \
            or message.get("transmission") is not None or message.get("term") != obj.raftCurrentTerm:
        return False
    log = obj._SyncObj__raftLog
    first, last = log[0][1], log[-1][1]
    prev, entries = message["prevLogIdx"], message.get("entries", [])
    if prev < first or prev >= last or log[prev - first][2] != message["prevLogTerm"]:
        return False
    known = 0  # the leading entries this log holds already
    for _command, idx, term in entries:
        if idx > last or log[idx - first][1:] != (idx, term):
            break
        known += 1
    if known < len(entries):
        if entries[known][1] <= last:  # a conflict: pysyncobj deletes from the previous entry on, as it should
            return False
        if known:
            message["prevLogIdx"], message["prevLogTerm"] = entries[known - 1][1], entries[known - 1][2]
            message["entries"] = entries[known:]
        return False
    if prev + len(entries) == last:  # ends where the log ends: nothing to delete, nothing to add
        message["prevLogIdx"], message["prevLogTerm"], message["entries"] = last, log[-1][2], []
        return False
    if not obj._SyncObj__transferInProgress:  # it still shows the leader alive, as any of its append_entries does
        obj._SyncObj__raftElectionDeadline = _syncobj.monotonicTime() + obj._SyncObj__generateRaftTimeout()
    return True


def guard_next_index(obj: SyncObj, node, message) -> None:
    """On the leader: a rejection may not raise a follower's next index above an earlier rejection's.

    pysyncobj's leader sends a lagging follower every batch at once (one append_entries per
    `appendEntriesBatchSizeBytes`) and sets `nextIndex` from each `next_node_idx` reply with `reset`. A
    follower whose last entry, index N, is of an old term answers the first batch "conflict at N" and the
    next ones "my log ends at N" (N + 1); the last answer wins, the leader resends from N + 1 and both
    replies come again: the follower never catches up while the leader's backlog spans more than one batch
    (simulator, `--membership` seed 8; see sim/README.md). A lower next index is always safe (the leader
    only resends entries), so until a success (or a new term) a rejection's index is capped by the lowest
    one seen.
    """
    if not (isinstance(message, dict) and message.get("type") == "next_node_idx") or not obj._isLeader():
        return
    floors = obj.__dict__.setdefault("_engine_reject_floor", {})
    key, term = getattr(node, "id", node), obj.raftCurrentTerm
    if message.get("success"):
        floors.pop(key, None)
    elif message.get("reset"):
        floor = floors.get(key)
        if floor is not None and floor[0] == term and message["next_node_idx"] > floor[1]:
            message["next_node_idx"] = floor[1]
        else:
            floors[key] = (term, message["next_node_idx"])


def version_ok() -> bool:
    return VERSION == PINNED_VERSION


def refuse_non_member(transport, conn, message) -> str | None:
    """For the first messages of an incoming TCP connection: None to let pysyncobj handle `message` (the
    key exchange, or a member's address), else why the connection was dropped (nothing was acted on).

    pysyncobj would run a list as a utility command (`['add', 'host:port']`, `['status']`, ...) and stream
    the whole log to a peer that says `'readonly'`. A list is unhashable: check the type before the lookup.
    """
    if transport._syncObj.encryptor and not conn.sendRandKey:
        return None  # the peer's random key: decrypting it proved the peer holds the cluster key
    if isinstance(message, str) and message in transport._nodeAddrToNode:
        return None
    conn.disconnect()
    transport._unknownConnections.discard(conn)
    if isinstance(message, list):
        return "utility command"
    return "read-only peer" if message == "readonly" else "not a member"


def authenticated(transport, conn) -> bool:
    """Has `conn`'s peer proved it is a member: past the key exchange (decrypting its first message proved the
    cluster key) and, for an incoming connection, introduced as a member's address (`refuse_non_member`)."""
    keyed = conn.sendRandKey is not None or not transport._syncObj.encryptor
    return keyed and conn not in transport._unknownConnections


FRAME_HEADER = struct.Struct("i")  # pysyncobj's length prefix of every message on the wire


def first_frame(buffer: bytes | bytearray, limit: int) -> int | None:
    """The size (length prefix included) of the first message in `buffer` once it is all there, 0 until
    then; None when its declared length is negative or over `limit` bytes."""
    if len(buffer) < FRAME_HEADER.size:
        return 0
    (declared,) = FRAME_HEADER.unpack_from(buffer)
    if not 0 <= declared <= limit:
        return None
    size = FRAME_HEADER.size + declared
    return size if len(buffer) >= size else 0


def bound_reads(conn, limit: Callable[[], int], dropped: Callable[[str, int, int], None]) -> None:
    """Replace `conn`'s (a TcpConnection's) read loop by one that checks a message's declared length before
    buffering it and stops reading once a whole message is buffered.

    pysyncobj reads until the socket is drained and parses afterwards, appending to an immutable buffer:
    a peer that declares 2 GiB and streams makes the tick thread copy quadratically and the memory grow
    before anything is checked. Here a message over `limit()` bytes drops the connection at once
    (`dropped(peer, declared, limit)` is told), the buffer holds at most one message and one read more,
    and a partial message grows in place (a bytearray, which pysyncobj's parser only measures until it is
    whole). Errors and end of stream are handled as pysyncobj does.
    """
    def read() -> None:
        sock = conn._TcpConnection__socket
        buffer = conn._TcpConnection__readBuffer
        buffer = buffer if isinstance(buffer, bytearray) else bytearray(buffer)
        cap, size = limit(), 0
        while not size:
            try:
                chunk = sock.recv(conn._TcpConnection__recvBufferSize)
            except BlockingIOError:
                break
            except OSError:
                conn.disconnect()
                return
            if not chunk or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                conn.disconnect()
                return
            buffer += chunk
            size = first_frame(buffer, cap)
            if size is None:
                try:
                    peer = ":".join(map(str, sock.getpeername()[:2]))
                except OSError:
                    peer = "?"
                conn.disconnect()
                dropped(peer, FRAME_HEADER.unpack_from(buffer)[0], cap)
                return
        conn._TcpConnection__readBuffer = bytes(buffer) if size else buffer
        conn._TcpConnection__lastReadTime = _tcp_connection.monotonicTime()

    conn._TcpConnection__tryReadBuffer = read  # looked up on the instance by TcpConnection.__processConnection
