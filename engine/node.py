"""A node's runtime: the replicated log, the state it projects, and the bridge the API writes through.

This is the imperative shell around the pure core: it reads clocks, makes ids and secrets, and
hands them to commands.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import math
import os
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import structlog
import trio

from engine import commands as cmd
from engine import heap, pysyncobj_hooks
from engine.bridge import LogBridge, NoQuorum
from engine.errors import Rejection
from engine.hub import CAPACITY as EVENT_BUFFER
from engine.hub import EventHub
from engine.journal import DurableJournal
from engine.machine import Machine
from engine.private import private_dir, write_private
from engine.replog import ReplicatedLog
from engine.state import State
from engine.upid import Upid
from engine.wakeup import TrioWaker, until_called

JOIN_QUIET_SECONDS = 10.0  # a joining node's first election timeout, beyond its usual one

log = structlog.get_logger("gpve.node")


@dataclass
class NodeSpec:
    name: str
    data_dir: str
    ip: str
    api_port: int
    raft_port: int
    peers: dict[str, str]  # node name -> "host:raftport", this node included
    cluster_name: str = "gpve"
    fingerprint: str = ""  # of this node's API certificate
    static: dict = field(default_factory=dict)  # host facts for /cluster/resources (RegisterNode.static)

    @property
    def raft_addr(self) -> str:
        return self.peers[self.name]


def load_peers(data_dir: str) -> dict[str, str] | None:
    """The membership this node last knew (written when it joins or the membership changes)."""
    path = os.path.join(data_dir, "cluster.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return dict(json.load(f)["peers"])


def save_peers(data_dir: str, peers: dict[str, str]) -> None:
    write_private(os.path.join(data_dir, "cluster.json"), json.dumps({"peers": dict(sorted(peers.items()))}).encode())


def raft_key_path(data_dir: str) -> str:
    """The cluster's Raft key (hex): every member's the same; it keys the log transport's encryption."""
    return os.path.join(data_dir, "priv", "raft.key")


def save_raft_key(data_dir: str, key: str) -> None:
    write_private(os.path.join(private_dir(os.path.join(data_dir, "priv")), "raft.key"), key.encode())


def _process_start_ticks() -> int:
    try:
        with open("/proc/self/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


class Node:
    """One node. `raft_key`: the cluster's Raft key, which keys the log transport's encryption (`gpve serve`
    always gives one; the simulator's in-memory transport runs without). `raft_conf`: pysyncobj settings;
    the log binds the node's own Raft address unless `bindAddress` is given."""

    machine_class: Callable[..., Machine] = Machine

    def __init__(self, spec: NodeSpec, ticket_key_pem: str, csrf_secret: str, raft_key: str | None = None,
                 event_buffer: int = EVENT_BUFFER, hold_heap: bool = False, **raft_conf) -> None:
        self.hold_heap = hold_heap  # `gpve serve` (one node per process): engine.heap while the log replays
        if hold_heap:
            heap.hold()
        self.spec = spec
        self.name = spec.name
        self._ticket_key_pem, self._csrf_secret = ticket_key_pem, csrf_secret
        self.raft_key = raft_key
        self._id_prefix, self._id_counter = "", itertools.count()
        self._random = io.BytesIO()  # random bytes not yet drawn by new_uuid
        self.lock = threading.RLock()
        self._raft_conf = raft_conf
        self.hub = EventHub(event_buffer)
        self.machine = self.machine_class(on_events=self._on_events)
        self.machine.hub = self.hub
        self.journal, self.replog = self._open_log()
        self._replay_to = self.journal.commit_index  # what this node knew committed when it stopped
        self._synced = False  # a command of this run has committed: the state has all committed before it
        self.bridge = LogBridge(self.replog)
        self.pid, self._pstart = self.process_identity()
        self._task_seq = itertools.count()
        self.started = self.wall()
        self._changed = trio.Event()
        self.waker = TrioWaker()
        self.nursery: trio.Nursery | None = None
        self._signal_pending = False

    def wall(self) -> float:
        """This node's wall clock (the simulator gives each node its own)."""
        return time.time()

    async def run(self, *, reconciler=None, watcher=None, sampler=None, servers: Sequence[Callable] = (),
                  task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The node's runtime tree, in one nursery owned here: the log bridge, the bootstrap, the reconciler, the
        guest watcher, the sampler of live figures (hypervisor/sampler.py) and the servers it is handed (each
        `async fn(task_status)`), started in that order.
        Reports started once every server is; cancel the call to stop them all. (`gpve serve` and the
        simulator both run nodes through this.)"""
        self.bind_trio()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await nursery.start(self.bridge.run)
            nursery.start_soon(self.bootstrap)
            if self.hold_heap:
                nursery.start_soon(self._settle_heap)
            if reconciler is not None:
                await nursery.start(reconciler.run)
            if watcher is not None:
                nursery.start_soon(watcher.run)
            if sampler is not None:
                await nursery.start(sampler.run)
            for server in servers:
                await nursery.start(server)
            task_status.started()
        self.nursery = None

    async def _settle_heap(self) -> None:
        """Once caught up, let the collector run again (engine/heap.py)."""
        await self.wait_caught_up(math.inf)
        frozen, seconds = heap.settle()
        log.info("state loaded", guests=len(self.machine.state.guests), objects_frozen=frozen,
                 collect_ms=round(seconds * 1000, 1))

    def is_leader(self) -> bool:
        """This node leads the log now (Raft's leader: it may lose that at any time)."""
        return self.replog._isLeader()

    def spawn(self, fn: Callable[[], Awaitable]) -> None:
        """Run `fn()` in the node's nursery: work that outlives the request that began it (a join's admission)."""
        if self.nursery is None:
            raise RuntimeError("the node is not running")
        self.nursery.start_soon(fn)

    def process_identity(self) -> tuple[int, int]:
        """(pid, process start in clock ticks): what UPIDs carry, as Proxmox's (the simulator's are per host)."""
        return os.getpid(), _process_start_ticks()

    def bind_trio(self) -> None:
        """Call from inside the node's trio loop: state changes get signalled there."""
        self.waker.bind()

    def state_changed(self) -> trio.Event:
        """An event set at the next applied change (take it before reading, then wait on it)."""
        return self._changed

    def _signal_change(self) -> None:
        self._signal_pending = False
        self.wake_waiters()
        self.remember_members()

    def wake_waiters(self) -> None:
        """Wake whoever waits on `state_changed()` (they look again)."""
        self._changed.set()
        self._changed = trio.Event()

    def _open_log(self) -> tuple[DurableJournal, ReplicatedLog]:
        raft_dir = os.path.join(self.spec.data_dir, "raft")
        journal = DurableJournal(raft_dir)
        others = [addr for name, addr in sorted(self.spec.peers.items()) if name != self.spec.name]
        conf = {"bindAddress": self.spec.raft_addr, **self._raft_conf}  # never every address unless asked
        if self.raft_key is not None:
            conf["password"] = self.raft_key
        replog = ReplicatedLog(self.machine, journal, os.path.join(raft_dir, "snapshot"), self.spec.raft_addr, others,
                               lock=self.lock, **conf)
        return journal, replog

    async def switch_to_cluster(self, peers: dict[str, str], raft_key: str) -> None:
        """Joining: drop this node's own (guest-less) log and follow the cluster's from scratch, with the
        cluster's Raft key (kept in `priv/raft.key` for the next start)."""
        old = self.replog
        await trio.to_thread.run_sync(old.destroy_synchronous)
        self.journal.close()
        shutil.rmtree(os.path.join(self.spec.data_dir, "raft"), ignore_errors=True)
        with self.lock:
            self.machine.state = State()
            self.hub.reset(0)
        self._synced = False  # caught up once this node's registration in the cluster's log commits (`register`)
        if self.hold_heap:  # the cluster's state comes next
            heap.hold()
            self.spawn(self._settle_heap)
        save_raft_key(self.spec.data_dir, raft_key)
        self.raft_key = raft_key
        self.spec.peers = dict(peers)
        save_peers(self.spec.data_dir, peers)
        self.journal, self.replog = self._open_log()
        # Its log is empty, so no member would vote for it: standing for election before the leader's first
        # message (its connection is retried every 0.5 s) only deposed the leader once (term +2).
        pysyncobj_hooks.defer_election(self.replog, JOIN_QUIET_SECONDS)
        self._replay_to = self.journal.commit_index
        self.bridge.replog = self.replog
        log.info("following the cluster's log", peers=sorted(peers))

    async def change_membership(self, op: str, raft_addr: str, timeout: float = 30.0) -> None:
        """Add or remove a Raft member (one change at a time, as pysyncobj requires); waits for the commit."""
        deadline = trio.current_time() + timeout
        while True:
            if self._is_member(raft_addr) == (op == "add"):
                # Already done (say, by an earlier attempt whose answer was lost)? This node's view may lag: a
                # follower may not have the entry adding the node it is asked to remove (found by the simulator,
                # --membership seed 17: the removal was skipped, the add arrived later, the node stayed a member).
                # A barrier through the log brings the view up to everything committed before it.
                await self.read_barrier()
                if self._is_member(raft_addr) == (op == "add"):
                    return
            err = None
            with trio.move_on_at(deadline):
                _result, err = await until_called(functools.partial(self.replog.change_membership, op, raft_addr))
            if err == 0:
                return
            if trio.current_time() >= deadline:
                raise NoQuorum(f"cluster not ready - membership change did not commit ({err})")
            await trio.sleep(0.3)  # e.g. the previous change is still being committed

    def _is_member(self, raft_addr: str) -> bool:
        return any(n.id == raft_addr for n in self.replog.otherNodes)

    # ---- reads ----------------------------------------------------------------------------
    def caught_up(self) -> bool:
        """The state includes every entry committed in the cluster before this node started: its own log is
        replayed and the first command of its bootstrap has committed (a barrier: a follower restarted after
        missing a revocation learns of it first). So nothing deleted or revoked can reappear in an answer."""
        return self._synced and self.replog.raftLastApplied >= self._replay_to

    async def wait_caught_up(self, timeout: float) -> bool:
        """Wait up to `timeout` s for `caught_up()`; False if still replaying."""
        with trio.move_on_after(timeout):
            while not self.caught_up():
                with trio.move_on_after(0.05):  # applied entries without events signal nothing
                    await self.state_changed().wait()
        return self.caught_up()

    @contextmanager
    def read(self) -> Iterator[State]:
        """The local projection, consistent for the duration of the block."""
        with self.lock:
            yield self.machine.state

    async def read_barrier(self, patience: float = 3.0) -> None:
        """Return once the local state holds every write acknowledged anywhere before the call: one
        round trip through the log (a no-op command). Without quorum it tries for `patience` seconds (a
        leader change or a membership change takes a moment), then raises NoQuorum (503)."""
        barrier = cmd.Barrier(request_id=self.new_request_id(), ts=self.wall())
        with trio.move_on_after(patience):
            while True:
                try:
                    await self.submit(barrier)
                    return
                except NoQuorum:
                    await trio.sleep(0.1)
        await self.submit(barrier)

    def auth_secrets(self) -> tuple[str, str]:
        """The cluster's ticket key and CSRF secret, once the log has them."""
        with self.read() as s:
            if not s.ticket_key_pem:
                raise NoQuorum()
            return s.ticket_key_pem, s.csrf_secret

    def quorate(self) -> bool:
        return self.replog.writable()

    def node_online(self, name: str) -> bool:
        if name == self.name:
            return True
        addr = self.spec.peers.get(name)
        if addr is None:
            with self.read() as s:
                addr = s.nodes.get(name, {}).get("raft_addr")
        return any(n.id == addr and self.replog.isNodeConnected(n) for n in self.replog.otherNodes)

    # ---- writes ---------------------------------------------------------------------------
    async def submit(self, command: cmd.Command) -> dict:
        return await self.bridge.submit(command)

    async def submit_until_done(self, command: cmd.Command, retry_every: float = 1.0) -> dict | None:
        """For what must land (a task's outcome, an observation, this node's registration): retry with
        the same request id, so it applies once, until the cluster takes it. A refusal is logged."""
        while True:
            try:
                return await self.submit(command)
            except NoQuorum:
                await trio.sleep(retry_every)
            except Rejection as exc:
                log.error("command refused", command=command.TYPE, error=exc.message)
                return None

    def new_upid(self, node: str, task_type: str, task_id: str, user: str) -> tuple[str, int]:
        starttime = int(self.wall())
        pstart = (self._pstart + next(self._task_seq)) & 0xFFFFFFFF
        upid = str(Upid(node, self.pid, pstart, starttime, task_type, task_id, user))
        structlog.contextvars.bind_contextvars(upid=upid)
        return upid, starttime

    def new_request_id(self) -> str:
        """32 hex digits unique across the cluster and restarts: this process's random half and a counter (a uuid4
        per request read the kernel's random source each time)."""
        if not self._id_prefix:  # made at first use: the simulator's nodes make their ids from its seed instead
            self._id_prefix = secrets.token_hex(8)
        return f"{self._id_prefix}{next(self._id_counter):016x}"

    def new_uuid(self) -> str:
        """A random UUID (version 4) of 122 random bits: an API token's secret, a new guest's smbios and vmgenid, a
        vCluster's id. The simulator derives it from its seeded request ids instead (request ids themselves are
        a process prefix and a counter: not secret)."""
        drawn = self._random.read(16)
        if len(drawn) < 16:  # drawn 4 KiB at a time: one getrandom call per 256, not one per guest created
            self._random = io.BytesIO(secrets.token_bytes(4096))
            drawn = self._random.read(16)
        return str(uuid.UUID(bytes=drawn, version=4))

    async def register(self) -> None:
        """Record this node (address, certificate) in the log, retrying until it commits. After a join this is
        the node's first command in the cluster's log: once it has applied here, so has everything before it."""
        await self.submit_until_done(self.registration(), retry_every=0.5)
        self._synced = True

    async def bootstrap(self) -> None:
        """Record this node and the cluster's auth secrets in the log, retrying until quorum."""
        spec = self.spec
        commands = [
            cmd.InitCluster(request_id=f"init-{spec.name}-{self.new_request_id()}", ts=self.wall(),
                            cluster_name=spec.cluster_name, ticket_key_pem=self._ticket_key_pem,
                            csrf_secret=self._csrf_secret),
            self.registration(),
        ]
        for command in commands:  # the other members may still be starting
            await self.submit_until_done(command, retry_every=0.5)
            self._synced = True
        log.info("node registered", node=spec.name)
        self.remember_members()

    def remember_members(self) -> None:
        """Keep cluster.json in step with the members in the log, for the next start."""
        with self.read() as s:
            members = {n["name"]: n["raft_addr"] for n in s.nodes.values()}
        if members and members.get(self.name) == self.spec.raft_addr and members != self.spec.peers:
            self.spec.peers = members
            save_peers(self.spec.data_dir, members)

    def registration(self) -> cmd.RegisterNode:
        spec = self.spec
        return cmd.RegisterNode(request_id=f"register-{spec.name}-{self.new_request_id()}", ts=self.wall(),
                                name=spec.name, ip=spec.ip, api_port=spec.api_port, raft_addr=spec.raft_addr,
                                fingerprint=spec.fingerprint, static=dict(spec.static))

    def _on_events(self, command: cmd.Command, events: list) -> None:
        """(pysyncobj's thread) Log applied events and wake whoever waits for state changes."""
        for event in events:
            log.debug("event applied", event_type=event.TYPE, request_id=command.request_id)
        if not self._signal_pending:  # one wake-up covers every change applied before it
            self._signal_pending = True
            if not self.waker.soon(self._signal_change):
                self._signal_pending = False

    def close(self) -> None:
        self.replog.destroy_synchronous()
        self.journal.close()
