"""The simulated world: one loop driving N real engines, the clients, the faults and the checks."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import structlog
import trio

from engine import decide, journal
from engine import pysyncobj_hooks as hooks
from engine.replog import default_conf
from sim import faults as fl
from sim.invariants import CONVERGE_BOUND, Checker, digest
from sim.loop import Loop, SimClock, deterministic_trio, stream
from sim.membership import Membership
from sim.net import Network, make_transport_class
from sim.node import SimNode
from sim.outside import sealed
from sim.workload import Client

HYPERVISOR_CHECK_PERIOD = 0.1  # how often the simulated QEMUs of all hosts are compared


@dataclass
class Options:
    seed: int = 1
    nodes: int = 3
    duration: float = 60.0
    faults: list[str] = field(default_factory=lambda: list(fl.DEFAULT_KINDS))
    workload: str = "mixed"
    quiet: float = 25.0  # fault-free seconds at the end, in which the cluster must converge
    fault_rate: float = 0.25  # faults per simulated second
    keep: set[int] | None = None  # only these faults of the schedule (shrinking)
    plant: list[str] = field(default_factory=list)
    trace_file: str | None = None
    stop_at: float | None = None  # stop at this mark (the determinism self-check re-runs the start of a run)
    clients_per_node: int = 2
    client_rate: float = 1.5  # operations per client per simulated second
    membership: bool = False  # two nodes join and two leave during the run (sim/membership.py)


@dataclass
class Result:
    violations: list[str]
    trace_hash: str
    sim_seconds: float
    wall_seconds: float
    messages: int
    stats: dict
    faults: list[fl.Fault]
    converged_after: float | None
    marks: dict[float, str]  # the trace hash at each whole simulated second (and at `stop_at`)


class _PysyncobjErrors(logging.Handler):
    """pysyncobj's own error reports become violations, except one benign under TCP (see README)."""

    BENIGN = "truncating already-applied log entries"

    def __init__(self, checker: Checker) -> None:
        super().__init__(logging.ERROR)
        self.checker = checker
        self.benign = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(self.BENIGN):
            self.benign += 1
        else:
            self.checker.violation(f"pysyncobj: {message}")


EXPECTED_ERRORS = ("guest crashed",)  # hypervisor/watch.py on a QEMU crash: the `guestcrash` fault makes them


@contextmanager
def engine_logs_to(checker: Checker) -> Iterator[None]:
    """The engine's structlog events are dropped; errors (a task handler that raised, a command the node's own
    retry loop saw refused) become violations, but for those the faults cause."""
    def check(_logger, method: str, event: dict) -> dict:
        if method != "warning" and event.get("event") not in EXPECTED_ERRORS:
            fields = {k: v for k, v in sorted(event.items()) if k not in ("event", "exc_info")}
            raised = f" - {sys.exc_info()[1]!r}" if event.get("exc_info") or method == "exception" else ""
            checker.violation(f"engine logged an error: {event.get('event')} {fields}{raised}")
        raise structlog.DropEvent
    saved = structlog.get_config()
    structlog.configure(processors=[check], wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        cache_logger_on_first_use=False)
    try:
        yield
    finally:
        structlog.configure(**saved)


class World:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.seed = opts.seed
        self.loop = Loop()
        self.root = _run_dir(opts.seed)
        self._hash = hashlib.sha256()
        self._trace_out = open(opts.trace_file, "w") if opts.trace_file else None
        spares = 2 if opts.membership else 0
        self.all_names = [f"node{i + 1}" for i in range(opts.nodes + spares)]
        self.names = self.all_names[: opts.nodes]  # the members of the moment
        self.joined = set(self.names)  # members that finished joining (clients use them)
        self.leaving: set[str] = set()
        self.powered_off: set[str] = set()  # shut down on purpose (leaving): faults must not restart them
        self.current: str | None = None
        self._mono_offset = 0.0  # the running node's monotonic clock offset (`enter` sets it)
        self.wall_offset: dict[str, float] = {}
        self.mono_offset: dict[str, float] = {}
        self.checker = Checker(self)
        self.network = Network(self.loop, stream(opts.seed, "network"), self.all_names, self.trace,
                               self._received, self.enter)
        self.transport_class = make_transport_class(self.network)
        self.raft_conf = default_conf(autoTick=False, logCompactionMinEntries=400, logCompactionMinTime=60.0)
        self.nodes = {name: SimNode(self, name) for name in self.all_names}
        self.membership_rng = stream(opts.seed, "membership")
        self.membership: Membership | None = None
        self.pending: dict[str, bool] = {}
        self.request_ts: dict[str, float] = {}
        self.cuts: dict[tuple[str, str], int] = {}
        self.ticks = 0
        self.clients_stopped = False
        self.finished = False
        self.kill_after_handover: float | None = None  # armed by the `handoverkill` fault: the down time
        self.handover_kills = 0
        self.listeners: dict = {}  # migration URI -> the QEMU process waiting there (sim/qemu.py)
        self.nbd: dict = {}  # NBD server address -> the QEMU process serving it
        self.ports = 0
        self.converged_at: float | None = None
        self.marks: dict[float, str] = {}  # mark time -> trace hash (the determinism self-check compares them)
        self.faults_end = max(0.0, opts.duration - opts.quiet)
        plan = fl.schedule(opts.seed, opts.nodes, 2.0, self.faults_end, opts.faults, opts.fault_rate)
        self.faults = [f for f in plan if opts.keep is None or f.index in opts.keep]

    # ---- clocks and tracing ------------------------------------------------------------------
    def mono(self) -> float:
        """pysyncobj's monotonic clock, as seen by the node it is running for."""
        return self.loop.now + self._mono_offset

    def enter(self, name: str | None) -> str | None:
        prev, self.current = self.current, name
        self._mono_offset = self.mono_offset.get(name, 0.0) if name else 0.0
        return prev

    @contextmanager
    def running(self, name: str) -> Iterator[None]:
        """Code of node `name` runs inside: pysyncobj's monotonic clock is that node's."""
        prev = self.enter(name)
        try:
            yield
        finally:
            self.enter(prev)

    def trace(self, line: str) -> None:
        if self.finished:
            return  # the run's teardown (cancelled requests) is not part of it
        text = f"{self.loop.now:.6f} {line}\n"
        self._hash.update(text.encode())
        if self._trace_out is not None:
            self._trace_out.write(text)

    def _mark(self, t: float) -> bool:
        """The trace hash before anything happens at or after `t`; True (stop the run) at `stop_at`."""
        self.marks[t] = self.trace_hash()
        return self.opts.stop_at is not None and t >= self.opts.stop_at

    def trace_hash(self) -> str:
        return self._hash.hexdigest()

    # ---- queries -------------------------------------------------------------------------------
    def up_nodes(self) -> list[SimNode]:
        return [self.nodes[n] for n in self.names if self.nodes[n].up]

    def serving(self) -> list[str]:
        """Nodes clients talk to and place guests on."""
        return [n for n in self.names if n in self.joined and n not in self.leaving]

    def leader(self) -> str | None:
        leaders = sorted((n.replog.raftCurrentTerm, n.name) for n in self.up_nodes() if n.replog._isLeader())
        return leaders[-1][1] if leaders else None

    # ---- actions used by faults and nodes --------------------------------------------------------
    def block(self, a: str, b: str) -> None:
        self.cuts[(a, b)] = self.cuts.get((a, b), 0) + 1
        self.network.block(a, b)

    def unblock(self, a: str, b: str) -> None:
        count = self.cuts.get((a, b), 0) - 1
        if count <= 0:
            self.cuts.pop((a, b), None)
            self.network.unblock(a, b)
        else:
            self.cuts[(a, b)] = count

    def restart(self, name: str) -> None:
        node = self.nodes[name]
        if not node.up and name in self.names and name not in self.powered_off:
            node.start()

    def free_port(self, ip: str) -> int:
        """A port to listen on (`hypervisor.migration_target.MigrationTarget`): unique in the run."""
        self.ports += 1
        return 40000 + self.ports

    def handed_over(self, host) -> None:
        """A source QEMU quit after handing its guest over (sim/qemu.py): the `handoverkill` fault, if armed,
        kills that daemon now, before the migration's outcome can commit."""
        down, self.kill_after_handover = self.kill_after_handover, None
        if down is not None:
            self.handover_kills += 1
            self.trace(f"handoverkill {host.name}")
            self.loop.soon(host.stop, "kill")
            self.loop.after(down, self.restart, host.name)

    def _received(self, name: str) -> None:
        self.nodes[name].tick()  # the poller returns on input: pysyncobj ticks right away

    # ---- the run -------------------------------------------------------------------------------
    def _faults_off(self) -> None:
        self.trace("faults off")
        self.clients_stopped = True
        self.kill_after_handover = None  # an armed `handoverkill` that no handover met goes too
        for a, b in sorted(self.cuts):
            self.network.unblock(a, b)
        self.cuts.clear()
        self.network.heal_all()
        for name in self.names:
            self.restart(name)
        self.loop.after(0.5, self._probe)

    def _check_hypervisors(self) -> None:
        self.checker.hypervisors()
        self.loop.after(HYPERVISOR_CHECK_PERIOD, self._check_hypervisors)

    def _probe(self) -> None:
        if self._converged():
            if self.converged_at is None:
                self.converged_at = self.loop.now
                self.trace("converged")
        else:
            self.converged_at = None
        self.loop.after(0.5, self._probe)

    def _converged(self) -> bool:
        nodes = self.up_nodes()
        if len(nodes) != len(self.names) or self.pending or self.leader() is None:
            return False
        if self.membership is not None and self.membership.busy:
            return False
        if len({(n.replog.raftCommitIndex, n.replog.raftLastApplied) for n in nodes}) != 1:
            return False
        if any(t["status"] == "running" for t in nodes[0].machine.state.tasks.values()):
            return False
        return len({digest(n.machine.state.to_dict()) for n in nodes}) == 1

    def run(self) -> Result:
        opts = self.opts
        saved = (set(decide.PLANTED_BUGS), set(journal.PLANTED_BUGS))
        decide.PLANTED_BUGS.update(b for b in opts.plant if b != "ack-before-sync")
        journal.PLANTED_BUGS.update(b for b in opts.plant if b == "ack-before-sync")
        handler = _PysyncobjErrors(self.checker)
        pslog = logging.getLogger("pysyncobj")
        pslog.addHandler(handler)
        propagate, pslog.propagate = pslog.propagate, False
        real_clock = hooks.set_clock(self.mono)
        started = time.perf_counter()
        try:
            with engine_logs_to(self.checker), deterministic_trio(self.seed), sealed(self.checker.violation):
                trio.run(self._main, clock=SimClock(self.loop))
        finally:
            hooks.set_clock(real_clock)
            pslog.removeHandler(handler)
            pslog.propagate = propagate
            decide.PLANTED_BUGS.clear()
            decide.PLANTED_BUGS.update(saved[0])
            journal.PLANTED_BUGS.clear()
            journal.PLANTED_BUGS.update(saved[1])
            self.close()
        wall = time.perf_counter() - started
        net = self.network
        stats = {"sent": net.sent, "delivered": net.delivered, "lost": net.lost, "resets": net.resets,
                 "bytes": net.bytes, "ticks": self.ticks, "steps": self.loop.steps,
                 "entries_checked": self.checker.entries_checked, "acked": len(self.checker.acked),
                 "unlogged": self.checker.unlogged,
                 "leaders": len(self.checker.leader_of_term), "faults": len(self.faults),
                 "power_losses": sum(n.disk.power_losses for n in self.nodes.values()),
                 "torn_tails": sum(n.disk.torn_tails for n in self.nodes.values()),
                 "guest_crashes": sum(n.qemu.crashes for n in self.nodes.values()),
                 "rewritten_applied_entries": handler.benign, "handover_kills": self.handover_kills,
                 "membership": list(self.membership.done) if self.membership else []}
        conv = None if self.converged_at is None else round(self.converged_at - self._settle_from(), 3)
        return Result(list(self.checker.violations), self.trace_hash(), self.loop.now, wall, net.delivered,
                      stats, self.faults, conv, dict(self.marks))

    async def _main(self) -> None:
        opts = self.opts
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for name in self.names:
                self.nodes[name].start()
            crng = stream(self.seed, "clients")
            for i in range(opts.clients_per_node * opts.nodes):
                rate = opts.client_rate * crng.uniform(0.5, 1.5)
                Client(self, i, stream(self.seed, f"client/{i}"), opts.workload, rate)
            if opts.membership:
                self.membership = Membership(self, self._membership_plan())
            for fault in self.faults:
                self.loop.at(fault.at, fl.inject, self, fault)
            self.loop.at(self.faults_end, self._faults_off)
            self.loop.after(HYPERVISOR_CHECK_PERIOD, self._check_hypervisors)
            marks = [float(t) for t in range(1, int(opts.duration) + 1)]
            if opts.stop_at is not None:
                marks = sorted({t for t in marks if t < opts.stop_at} | {float(opts.stop_at)})
            await self.loop.run_until(opts.duration, marks, self._mark)
            if opts.stop_at is None:
                self._final_checks()
            self.finished = True
            self.loop.stopped = True
            nursery.cancel_scope.cancel()

    def _membership_plan(self) -> list[tuple[float, str, str]]:
        """Grow by two nodes, then shrink by two (the second leaver drawn among the members), with faults on;
        the two joins and the two leaves are planned close together, so that they often overlap."""
        rng, end, n = self.membership_rng, self.faults_end, self.opts.nodes
        new = self.all_names[n:]
        second = rng.choice([x for x in self.all_names if x != new[1]])
        at = [round(end * rng.uniform(lo, lo + 0.15), 3) for lo in (0.1, 0.15, 0.45, 0.5)]
        return [(at[0], "join", new[0]), (at[1], "join", new[1]), (at[2], "leave", new[1]), (at[3], "leave", second)]

    def _settle_from(self) -> float:
        """Where the convergence bound starts: the faults' end, or the last membership change's end if later
        (a drain that faults delayed, its guests' shutdowns and migrations, are admin work, not convergence)."""
        return max(self.faults_end, self.membership.finished_at if self.membership else 0.0)

    def _final_checks(self) -> None:
        if self.converged_at is None or self.converged_at - self._settle_from() > CONVERGE_BOUND:
            self.checker.violation(f"no convergence within {CONVERGE_BOUND:.0f} s after the faults stopped"
                                   + (" and the membership changes ended" if self.membership else ""))
        self.checker.final()

    def close(self) -> None:
        for node in self.nodes.values():
            if node.up:
                node.process.journal.close()
        if self._trace_out is not None:
            self._trace_out.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _run_dir(seed: int) -> str:
    """A fresh directory for the nodes' disks, named by the seed (and a slot number, normally 0, while another run of
    the seed holds one): no random name, so a path in an error message or a task log is the same in every run."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    parent = os.path.join(base, f"gpve-sim-{os.getuid()}")
    os.makedirs(parent, mode=0o700, exist_ok=True)
    for slot in itertools.count():
        path = os.path.join(parent, f"seed-{seed}-{slot}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")
