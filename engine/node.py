"""A node's runtime: the replicated log, the state it projects, and the bridge the API writes through.

This is the imperative shell around the pure core: it reads clocks, makes ids and secrets, and
hands them to commands.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import structlog
import trio

from engine import commands as cmd
from engine.bridge import LogBridge, NoQuorum
from engine.journal import DurableJournal
from engine.machine import Machine
from engine.replog import ReplicatedLog
from engine.state import State
from engine.upid import Upid

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

    @property
    def raft_addr(self) -> str:
        return self.peers[self.name]


def _process_start_ticks() -> int:
    try:
        with open("/proc/self/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


class Node:
    def __init__(self, spec: NodeSpec, ticket_key_pem: str, csrf_secret: str, **raft_conf) -> None:
        self.spec = spec
        self.name = spec.name
        self._ticket_key_pem, self._csrf_secret = ticket_key_pem, csrf_secret
        self.lock = threading.RLock()
        self.machine = Machine(on_events=self._on_events)
        raft_dir = os.path.join(spec.data_dir, "raft")
        self.journal = DurableJournal(raft_dir)
        others = [addr for name, addr in sorted(spec.peers.items()) if name != spec.name]
        self.replog = ReplicatedLog(self.machine, self.journal, os.path.join(raft_dir, "snapshot"),
                                    spec.raft_addr, others, lock=self.lock, **raft_conf)
        self.bridge = LogBridge(self.replog)
        self.pid = os.getpid()
        self._pstart = _process_start_ticks()
        self._task_seq = itertools.count()
        self.started = time.time()
        self._changed = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None

    def bind_trio(self) -> None:
        """Call from inside the node's trio loop: state changes get signalled there."""
        self._token = trio.lowlevel.current_trio_token()

    def state_changed(self) -> trio.Event:
        """An event set at the next applied change (take it before reading, then wait on it)."""
        return self._changed

    def _signal_change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # ---- reads ----------------------------------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[State]:
        """The local projection, consistent for the duration of the block."""
        with self.lock:
            yield self.machine.state

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

    def new_upid(self, node: str, task_type: str, task_id: str, user: str) -> tuple[str, int]:
        starttime = int(time.time())
        pstart = (self._pstart + next(self._task_seq)) & 0xFFFFFFFF
        upid = str(Upid(node, self.pid, pstart, starttime, task_type, task_id, user))
        structlog.contextvars.bind_contextvars(upid=upid)
        return upid, starttime

    @staticmethod
    def new_request_id() -> str:
        return uuid.uuid4().hex

    async def bootstrap(self) -> None:
        """Record this node and the cluster's auth secrets in the log, retrying until quorum."""
        spec = self.spec
        commands = [
            cmd.InitCluster(request_id=f"init-{spec.name}-{uuid.uuid4().hex}", ts=time.time(),
                            cluster_name=spec.cluster_name, ticket_key_pem=self._ticket_key_pem,
                            csrf_secret=self._csrf_secret),
            cmd.RegisterNode(request_id=f"register-{spec.name}-{uuid.uuid4().hex}", ts=time.time(), name=spec.name,
                             ip=spec.ip, api_port=spec.api_port, raft_addr=spec.raft_addr),
        ]
        for command in commands:
            while True:
                try:
                    await self.submit(command)
                    break
                except NoQuorum as exc:  # the other members are still starting
                    log.info("bootstrap waiting for quorum", command=command.TYPE, error=str(exc))
                    await trio.sleep(0.5)
        log.info("node registered", node=spec.name)

    def _on_events(self, command: cmd.Command, events: list) -> None:
        """(pysyncobj's thread) Log applied events and wake whoever waits for state changes."""
        for event in events:
            log.debug("event applied", event_type=event.TYPE, request_id=command.request_id)
        token = self._token
        if token is not None:
            try:
                token.run_sync_soon(self._signal_change)
            except trio.RunFinishedError:
                pass

    def close(self) -> None:
        self.replog.destroy_synchronous()
        self.journal.close()
