"""One simulated host and the gpve process running on it.

The host (`SimNode`) outlives processes: its disk, its hypervisor and its name. Each start runs a new
`SimProcess`, which is the production `engine.node.Node` (its `LogBridge`, its bootstrap, its
membership changes, its state-change signal) and the production `engine.reconciler.Reconciler`, as
trio tasks of the simulator's one trio run. Only what a process touches outside itself is simulated:
its `ReplicatedLog` talks over the simulated network and journals to the simulated disk, its clock is the
host's, and its production task handlers, guest watcher and migration target side drive the simulated QEMU
and storage (sim/hypervisor.py).

A client's request reaches the process as a call of the API's services (`api/services/`, what the REST handlers
call) with an `api.context.Ctx` the process builds: the caller, the client's request id, the host's wall clock
and the process's runtime (`SimProcess.serve`).
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import os
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from pysyncobj.node import Node as RaftNode

from api.context import Ctx
from api.schema import ParamErrors
from engine import pysyncobj_hooks as hooks
from engine.bridge import NoQuorum
from engine.commands import Command
from engine.errors import Rejection
from engine.machine import Machine
from engine.node import Node, NodeSpec, load_peers
from engine.replog import ReplicatedLog
from sim.disk import DiskImage, SimJournal
from sim.hypervisor import guest_runtime, host_storages
from sim.loop import stream
from sim.net import CONNECTION_TIMEOUT
from sim.qemu import SimQemu

EPOCH = 1_700_000_000.0  # wall-clock time at simulated t=0
ROOT = "root@pam"
Call = Callable[[Ctx], Awaitable[Any]]  # a request: what the API's handler would call, given the caller's Ctx


@dataclass
class Reply:
    """A request's final answer: what the service returned (`value`) or its refusal (`error`: status, message,
    errors). `logged` is what the log decided for the command the request submitted under its own id
    (`command_id`): `{"ok": result}` or `{"error": ...}`, as the log's request memory holds it; None when the
    request submitted none (refused before any command, or a read)."""

    command_id: str
    value: Any = None
    error: dict | None = None
    logged: dict | None = None


Answer = Callable[[Reply | None, str], None]  # (the reply, or None when the request failed, and why)
_SERVING: contextvars.ContextVar[Reply] = contextvars.ContextVar("sim_serving")  # the request a trio task serves


class RaftId(RaftNode):
    """A node id whose hash does not depend on PYTHONHASHSEED (pysyncobj iterates sets of these)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._hash = zlib.crc32(self.id.encode())

    def __hash__(self) -> int:
        return self._hash


class SimLog(ReplicatedLog):
    """The production log; its election timeout comes from the node's seeded stream, it runs on its host's
    clock, and a queued command wakes it as the production wake-up pipe does (a tick right after)."""

    def __init__(self, host: SimNode, raft_rng, *args, **kwargs) -> None:
        self._host, self._raft_rng = host, raft_rng
        super().__init__(*args, **kwargs)
        self._wake = host.tick_soon

    def propose(self, payload: bytes, callback: Callable) -> None:
        with self._host.running():
            super().propose(payload, callback)

    def change_membership(self, op: str, raft_addr: str, callback: Callable) -> None:
        with self._host.running():
            super().change_membership(op, raft_addr, callback)


def _seeded_timeout(obj: SimLog) -> float:
    conf = obj._getConf()
    return conf.raftMinTimeout + (conf.raftMaxTimeout - conf.raftMinTimeout) * obj._raft_rng.random()


hooks.override_raft_timeout(SimLog, _seeded_timeout)


class SimMachine(Machine):
    """The production state machine, reporting each applied entry and command to the invariant checker."""

    def __init__(self, host: SimNode, on_events) -> None:
        super().__init__(on_events=on_events)
        self.host = host

    def execute_entry(self, payload: bytes) -> list[dict]:
        index = self.host.replog.raftLastApplied + 1
        self.host.applying = index
        results = super().execute_entry(payload)
        self.host.world.checker.entry(self.host.name, index, payload, results)
        return results

    def execute(self, command: Command) -> dict:
        checker = self.host.world.checker
        if command.request_id in self.state.requests:
            return super().execute(command)
        before = checker.before(self.state, command)
        result = super().execute(command)
        checker.fresh(self.host.name, self.host.applying, command, before, result, self.state)
        return result


class SimProcess(Node):
    """`engine.node.Node` on a simulated host: the host's clock, disk and network, deterministic ids."""

    def __init__(self, host: SimNode, peers: list[str]) -> None:
        self.host = host
        self.machine_class = functools.partial(SimMachine, host)
        self._ids = 0
        spec = NodeSpec(name=host.name, data_dir=host.dir, ip="10.0.0.1", api_port=8006, raft_port=0,
                        peers={n: n for n in peers}, cluster_name="sim")
        super().__init__(spec, "sim-key", "sim-secret", **host.world.raft_conf)
        self.scope = trio.CancelScope()
        guest_runtime(self)  # reconciler, watcher, migration target

    def wall(self) -> float:
        return self.host.wall()

    def process_identity(self) -> tuple[int, int]:
        return 1000 + zlib.crc32(self.host.name.encode()) % 30000, self.host.incarnation << 16

    def new_request_id(self) -> str:
        self._ids += 1
        return f"{self.host.name}.{self.host.incarnation}.{self._ids}"

    def new_uuid(self) -> str:
        """A UUID (version 4 layout) from the next seeded request id, so that runs repeat."""
        h = hashlib.sha256(self.new_request_id().encode()).hexdigest()
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"

    def _open_log(self):
        host, world = self.host, self.host.world
        journal = SimJournal(host.raft_dir, host.disk, lambda: world.loop.now)
        others = [addr for name, addr in sorted(self.spec.peers.items()) if name != self.name]
        with host.running():
            replog = SimLog(host, stream(world.seed, f"raft/{host.name}/{host.incarnation}"), self.machine, journal,
                            os.path.join(host.raft_dir, "snapshot"), self.spec.raft_addr, others, lock=self.lock,
                            transport_class=world.transport_class, node_class=RaftId, **self._raft_conf)
        hooks.detach_poller(replog)
        return journal, replog

    async def main(self) -> None:
        """The process: its bridge, reconciler and guest watcher, and the bootstrap every start runs."""
        with self.scope:
            await self.run(reconciler=self.reconciler, watcher=self.watcher)

    async def serve_peer(self, fn):
        """A call from another member (`fn(self)`), served as a request of this process: a kill while it runs
        answers the caller "unreachable" (the connection reset)."""
        box: dict = {}
        done = trio.Event()

        async def run() -> None:
            try:
                box["ok"] = await fn(self)
            except Rejection as exc:
                box["rejected"] = exc
            except Exception as exc:  # noqa: BLE001 - the API answers 500; the simulator reports it
                self.host.world.checker.violation(f"migration target on {self.name} raised {exc!r}")
                box["rejected"] = Rejection(500, "Internal Server Error")
            finally:
                done.set()
        self.nursery.start_soon(run)
        await done.wait()
        if "rejected" in box:
            raise box["rejected"]
        if "ok" not in box:
            raise Rejection(502, f"node '{self.name}' is unreachable - RemoteProtocolError")
        return box["ok"]

    async def serve(self, rid: str, user: str, call: Call, answer: Answer) -> None:
        """One API request: `call` with the caller's Ctx (what a REST handler builds: the user, the client's request
        id, this host's wall clock, the runtime). A 503 or a dead process is a failure the client retries (with the
        same request id); any other answer is final."""
        ctx = Ctx(node=self, user=user, request_id=rid, now=self.wall(), rt=self.runtime)
        self.host.world.request_ts.setdefault(ctx.command_id, ctx.now)
        reply = Reply(ctx.command_id)
        _SERVING.set(reply)
        try:
            reply.value = await call(ctx)
        except NoQuorum as exc:
            answer(None, exc.message)
            return
        except Rejection as exc:
            reply.error = exc.to_dict()
        except ParamErrors as exc:
            reply.error = {"status": 400, "message": str(exc), "errors": dict(exc.errors)}
        except trio.Cancelled:
            answer(None, "connection reset")
            raise
        except Exception as exc:  # noqa: BLE001 - the API answers 500; the simulator reports it
            self.host.world.checker.violation(f"request {ctx.command_id} on {self.name} raised {exc!r}")
            reply.error = {"status": 500, "message": "Internal Server Error"}
        answer(reply, "")

    async def submit(self, command: Command) -> dict:
        """The production submit; the answer to a command under the id of the request being served is kept in
        its reply (`Reply.logged`), for the invariants to compare with every replica's request memory."""
        reply = _SERVING.get(None)
        mine = reply is not None and command.request_id == reply.command_id
        try:
            result = await super().submit(command)
        except NoQuorum:
            raise
        except Rejection as exc:
            if mine:
                reply.logged = {"error": exc.to_dict()}
            raise
        if mine:
            reply.logged = {"ok": result}
        return result


class SimNode:
    def __init__(self, world, name: str) -> None:
        self.world, self.name = world, name
        self.dir = os.path.join(world.root, name)
        self.raft_dir = os.path.join(self.dir, "raft")
        os.makedirs(self.raft_dir, exist_ok=True)
        self.disk = DiskImage(self.raft_dir)
        self.rng = stream(world.seed, f"node/{name}")
        self.qemu = SimQemu(self, stream(world.seed, f"qemu/{name}"))
        self.storages = host_storages(self)
        self.ops_rng = stream(world.seed, f"ops/{name}")  # new MACs and UUIDs of clones
        self.up = False
        self.incarnation = 0
        self.applying = 0
        self._tick_scheduled = False
        self.process: SimProcess | None = None
        self.initial_peers = list(world.names)  # before the first cluster.json: the founding members

    @property
    def replog(self) -> SimLog:
        return self.process.replog

    @property
    def machine(self) -> SimMachine:
        return self.process.machine

    @property
    def peers(self) -> list[str]:
        """cluster.json: the members this node last knew, itself included."""
        return sorted(load_peers(self.dir) or {n: n for n in self.initial_peers})

    # ---- clocks ----------------------------------------------------------------------------
    def wall(self) -> float:
        return EPOCH + self.world.loop.now + self.world.wall_offset.get(self.name, 0.0)

    def running(self):
        """pysyncobj code of this node runs on this node's monotonic clock."""
        return self.world.running(self.name)

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.incarnation += 1
        self.process = SimProcess(self, self.peers)
        self.up = True
        world = self.world
        world.trace(f"start {self.name} #{self.incarnation}")
        world.nursery.start_soon(self.process.main)
        period = world.raft_conf.get("autoTickPeriod", 0.05)
        world.loop.after(self.rng.uniform(0.0, period), self._periodic_tick, self.incarnation, period)

    def stop(self, how: str) -> None:
        """`kill` (process killed), `power` (host loses power) or `clean` (orderly shutdown)."""
        if not self.up:
            return
        self.world.trace(f"stop {self.name} {how}")
        self.up = False
        if how == "clean":
            with self.running():
                self.replog.destroy()
        self.process.scope.cancel()
        self.world.network.detach(self.name, CONNECTION_TIMEOUT if how == "power" else 0.001)
        self.process.journal.close()
        if how == "power":
            self.disk.power_loss(self.process.journal.path, self.process.journal.commit_path, self.world.loop.now,
                                 stream(self.world.seed, f"disk/{self.name}/{self.disk.power_losses}"))
            self.qemu.power_loss()

    def request(self, rid: str, call: Call, answer: Answer, user: str = ROOT) -> None:
        """An API request (`call`, request id `rid`, by `user`) reaching this host: served by its process, refused
        when none runs."""
        if self.up and self.process.nursery is not None:
            self.process.nursery.start_soon(self.process.serve, rid, user, call, answer)
        else:
            self.world.loop.soon(answer, None, "connection refused")

    # ---- driving pysyncobj -----------------------------------------------------------------
    def _periodic_tick(self, incarnation: int, period: float) -> None:
        if self.up and self.incarnation == incarnation:
            self.tick()
            self.world.loop.after(period, self._periodic_tick, incarnation, period)

    def tick(self) -> None:
        if not self.up:
            return
        world = self.world
        prev = world.enter(self.name)  # as `running()`, inlined: the hottest path of the simulator
        try:
            self.process.replog.doTick(0.0)
        finally:
            world.enter(prev)
        world.ticks += 1
        world.checker.ticked(self)

    def tick_soon(self) -> None:
        """What pysyncobj's wake-up pipe does in production: a tick right after a command is queued."""
        if not self._tick_scheduled:
            self._tick_scheduled = True
            self.world.loop.soon(self._soon_tick, self.incarnation)

    def _soon_tick(self, incarnation: int) -> None:
        self._tick_scheduled = False
        if self.incarnation == incarnation:
            self.tick()

    def writable(self) -> bool:
        return self.up and self.replog.writable()
