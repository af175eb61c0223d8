"""The fault schedule: drawn from the seed before the run, each fault self-contained (start, end,
its own random stream), so that a shrinker can drop faults without reshuffling the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.loop import stream

# Kinds in the default set: all keep TCP's contract. `reorder` and `dup` (datagram mode) do not.
DEFAULT_KINDS = ("loss", "partition", "oneway", "clog", "slow", "kill", "powerloss", "stop", "cluster-restart",
                 "clockjump", "guestcrash")
# `handoverkill` kills the first node that hands a guest over in an online migration, right after the handover
# and before the outcome commits: the window an interrupted migration leaves (see README).
ALL_KINDS = DEFAULT_KINDS + ("reorder", "dup", "handoverkill")
LEADER = -1  # target the leader of the moment


@dataclass(frozen=True)
class Fault:
    index: int
    at: float
    kind: str
    duration: float
    target: int  # node index, or LEADER

    def describe(self) -> str:
        who = "leader" if self.target == LEADER else f"n{self.target}"
        return f"#{self.index} {self.kind} {who} at {self.at:.2f}s for {self.duration:.2f}s"


def schedule(seed: int, nodes: int, start: float, end: float, kinds: list[str], rate: float) -> list[Fault]:
    """Faults arriving at `rate` per simulated second between `start` and `end`."""
    rng = stream(seed, "faults")
    out: list[Fault] = []
    t = start
    while kinds:
        t += rng.expovariate(rate)
        if t >= end:
            break
        kind = rng.choice(kinds)
        duration = rng.uniform(0.5, 12.0) if kind != "clockjump" else rng.uniform(-90.0, 90.0)
        target = LEADER if rng.random() < 0.35 else rng.randrange(nodes)
        out.append(Fault(len(out), round(t, 6), kind, round(duration, 6), target))
    return out


def parse_keep(text: str | None) -> set[int] | None:
    if text is None:
        return None
    return {int(x) for x in text.split(",") if x.strip()}


def inject(world, fault: Fault) -> None:
    """Start `fault` now and schedule its end; a fault whose target is already down does nothing."""
    rng = stream(world.seed, f"fault/{fault.index}")
    loop, net, names = world.loop, world.network, world.names
    victim = world.leader() if fault.target == LEADER else names[fault.target % len(names)]
    if victim is None:
        victim = names[rng.randrange(len(names))]
    others = [n for n in names if n != victim]
    end = fault.at + abs(fault.duration)
    world.trace(f"fault {fault.describe()} victim={victim}")
    kind = fault.kind
    if kind == "loss":
        net.loss = rng.uniform(0.002, 0.03)
        loop.at(end, _reset_attr, net, "loss", 0.0)
    elif kind in ("reorder", "dup"):
        if kind == "reorder":
            net.reorder = True
        else:
            net.dup = rng.uniform(0.01, 0.1)
        loop.at(end, _reset_attr, net, kind, False if kind == "reorder" else 0.0)
    elif kind == "partition":
        side = [victim] + [n for n in others if rng.random() < 0.3][: (len(names) - 1) // 2 - 1]
        rest = [n for n in names if n not in side]
        pairs = [(a, b) for a in side for b in rest] + [(b, a) for a in side for b in rest]
        _cut(world, pairs, end)
    elif kind == "oneway":
        peer = others[rng.randrange(len(others))]
        _cut(world, [(victim, peer)] if rng.random() < 0.5 else [(peer, victim)], end)
    elif kind == "clog":  # swizzle-clog: clog links one by one, unclog them in random order
        links = [(a, b) for a in names for b in names if a != b and rng.random() < 0.4]
        step = abs(fault.duration) / (2 * max(1, len(links)))
        order = list(links)
        rng.shuffle(order)
        for i, (a, b) in enumerate(links):
            loop.at(fault.at + i * step, world.block, a, b)
        for i, (a, b) in enumerate(order):
            loop.at(end + i * step, world.unblock, a, b)
    elif kind == "slow":
        for peer in others:
            net.slow[(victim, peer)] = rng.uniform(0.01, 0.3)
        loop.at(end, _unslow, net, victim, others)
    elif kind in ("kill", "powerloss", "stop"):
        node = world.nodes[victim]
        if node.up:
            node.stop({"kill": "kill", "powerloss": "power", "stop": "clean"}[kind])
            loop.at(end, world.restart, victim)
    elif kind == "cluster-restart":
        for i, name in enumerate(names):
            loop.at(fault.at + i * rng.uniform(0.0, 0.05), world.nodes[name].stop, "power")
        for name in names:
            loop.at(end + rng.uniform(0.0, 2.0), world.restart, name)
    elif kind == "clockjump":
        world.wall_offset[victim] = world.wall_offset.get(victim, 0.0) + fault.duration
        world.mono_offset[victim] = world.mono_offset.get(victim, 0.0) + min(abs(fault.duration), 3.0)
    elif kind == "handoverkill":
        world.kill_after_handover = abs(fault.duration)  # the down time; armed until the next handover
    elif kind == "guestcrash":
        qemu = world.nodes[victim].qemu
        running = [v for v in sorted(qemu.procs) if qemu.status(v) == "running"]
        if running:
            qemu.crash(running[rng.randrange(len(running))])


def _reset_attr(obj, name: str, value) -> None:
    setattr(obj, name, value)


def _unslow(net, victim: str, others: list[str]) -> None:
    for peer in others:
        net.slow.pop((victim, peer), None)


def _cut(world, pairs: list[tuple[str, str]], end: float) -> None:
    for a, b in pairs:
        world.block(a, b)
    for a, b in pairs:
        world.loop.at(end, world.unblock, a, b)
