"""One simulated node: the real `ReplicatedLog` and `Machine`, on a simulated disk, network and clock."""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable

from pysyncobj.node import Node

from engine import pysyncobj_hooks as hooks
from engine.commands import Command
from engine.machine import Machine
from engine.replog import ReplicatedLog
from sim.bridge import SimBridge
from sim.disk import DiskImage, SimJournal
from sim.hypervisor import SimQemu, SimReconciler
from sim.loop import stream
from sim.net import CONNECTION_TIMEOUT

EPOCH = 1_700_000_000.0  # wall-clock time at simulated t=0


class RaftId(Node):
    """A node id whose hash does not depend on PYTHONHASHSEED (pysyncobj iterates sets of these)."""

    def __hash__(self) -> int:
        return zlib.crc32(self.id.encode())


class SimLog(ReplicatedLog):
    """The production log; only its election timeout comes from the node's seeded stream."""

    def __init__(self, raft_rng, *args, **kwargs) -> None:
        self._raft_rng = raft_rng
        super().__init__(*args, **kwargs)


def _seeded_timeout(obj: SimLog) -> float:
    conf = obj._getConf()
    return conf.raftMinTimeout + (conf.raftMaxTimeout - conf.raftMinTimeout) * obj._raft_rng.random()


hooks.override_raft_timeout(SimLog, _seeded_timeout)


class SimMachine(Machine):
    """The production state machine, reporting each applied entry and command to the invariant checker."""

    def __init__(self, node: SimNode) -> None:
        super().__init__(on_events=node.on_events)
        self.node = node

    def execute_entry(self, payload: bytes) -> list[dict]:
        index = self.node.replog.raftLastApplied + 1
        self.node.applying = index
        results = super().execute_entry(payload)
        self.node.world.checker.entry(self.node.name, index, payload, results)
        return results

    def execute(self, command: Command) -> dict:
        checker = self.node.world.checker
        if command.request_id in self.state.requests:
            return super().execute(command)
        before = checker.before(self.state, command)
        result = super().execute(command)
        checker.fresh(self.node.name, self.node.applying, command, before, result, self.state)
        return result


class SimNode:
    def __init__(self, world, name: str) -> None:
        self.world, self.name = world, name
        self.dir = os.path.join(world.root, name)
        self.raft_dir = os.path.join(self.dir, "raft")
        self.disk = DiskImage(self.raft_dir)
        self.rng = stream(world.seed, f"node/{name}")
        self.qemu = SimQemu(world.loop, stream(world.seed, f"qemu/{name}"))
        self.up = False
        self.incarnation = 0
        self.applying = 0
        self._tick_scheduled = False
        self.replog: SimLog | None = None
        self.machine: SimMachine | None = None
        self.peers = list(world.names)  # cluster.json: the members this node last knew, itself included

    # ---- clocks ----------------------------------------------------------------------------
    def wall(self) -> float:
        return EPOCH + self.world.loop.now + self.world.wall_offset.get(self.name, 0.0)

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.incarnation += 1
        world = self.world
        self.journal = SimJournal(self.raft_dir, self.disk, lambda: world.loop.now)
        self.machine = SimMachine(self)
        others = [n for n in self.peers if n != self.name]
        prev = world.enter(self.name)
        try:
            self.replog = SimLog(stream(world.seed, f"raft/{self.name}/{self.incarnation}"), self.machine,
                                 self.journal, os.path.join(self.raft_dir, "snapshot"), self.name, others,
                                 lock=threading.RLock(), transport_class=world.transport_class, node_class=RaftId,
                                 **world.raft_conf)
        finally:
            world.enter(prev)
        hooks.detach_poller(self.replog)
        self.up = True
        self.bridge = SimBridge(self)
        self.reconciler = SimReconciler(self)
        world.trace(f"start {self.name} #{self.incarnation}")
        period = world.raft_conf.get("autoTickPeriod", 0.05)
        world.loop.after(self.rng.uniform(0.0, period), self._periodic_tick, self.incarnation, period)
        world.bootstrap(self)

    def stop(self, how: str) -> None:
        """`kill` (process killed), `power` (host loses power) or `clean` (orderly shutdown)."""
        if not self.up:
            return
        self.world.trace(f"stop {self.name} {how}")
        self.up = False
        if how == "clean":
            prev = self.world.enter(self.name)
            try:
                self.replog.destroy()
            finally:
                self.world.enter(prev)
        self.world.network.detach(self.name, CONNECTION_TIMEOUT if how == "power" else 0.001)
        self.journal.close()
        self.bridge.abandon()
        if how == "power":
            self.disk.power_loss(self.journal.path, self.journal.commit_path, self.world.loop.now,
                                 stream(self.world.seed, f"disk/{self.name}/{self.disk.power_losses}"))
            self.qemu.power_loss()

    # ---- driving pysyncobj -----------------------------------------------------------------
    def _periodic_tick(self, incarnation: int, period: float) -> None:
        if self.up and self.incarnation == incarnation:
            self.tick()
            self.world.loop.after(period, self._periodic_tick, incarnation, period)

    def tick(self) -> None:
        if not self.up:
            return
        prev = self.world.enter(self.name)
        try:
            self.replog.doTick(0.0)
        finally:
            self.world.enter(prev)
        self.world.ticks += 1

    def tick_soon(self) -> None:
        """What pysyncobj's wake-up pipe does in production: a tick right after a command is queued."""
        if not self._tick_scheduled:
            self._tick_scheduled = True
            self.world.loop.soon(self._soon_tick, self.incarnation)

    def _soon_tick(self, incarnation: int) -> None:
        self._tick_scheduled = False
        if self.incarnation == incarnation:
            self.tick()

    def propose(self, payload: bytes, callback: Callable) -> None:
        prev = self.world.enter(self.name)
        try:
            self.replog.propose(payload, callback)
        finally:
            self.world.enter(prev)
        self.tick_soon()

    def writable(self) -> bool:
        return self.up and self.replog.writable()

    def on_events(self, command, events) -> None:
        """Wake the reconciler when a task for this node starts or is to be aborted (it also polls each second);
        keep cluster.json in step with the members in the log (`Node.remember_members`)."""
        if any(e.TYPE in ("node.registered", "node.removed") for e in events):
            members = sorted(self.machine.state.nodes)
            if self.name in members and members != self.peers:
                self.peers = members
        if self.up and any((e.TYPE == "task.started" and e.node == self.name) or e.TYPE == "task.abort_requested"
                           for e in events):
            self.reconciler.state_changed()
