"""A simulated hypervisor, and the task handlers the real `engine.reconciler.Reconciler` runs against it.

`SimQemu` keeps each guest's power state and makes operations take time as QEMU does (boot, hard
stop, ACPI shutdown that may time out); guests can crash. QEMU processes outlive a crash of the gpve
daemon, but not a power loss of the host.

`SimOperations` stands in for `hypervisor/operations.py`: the same task kinds with the same outcomes
(config, snapshot table, created guests, ownership and power changes), computed the same way; storage is
not modelled. `watch_guests` stands in for `hypervisor/watch.py`: guest power seen outside this node's
tasks goes into the log.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import trio

from engine import commands as cmd
from engine.reconciler import Handler, Outcome, TaskFailed, TaskRun
from engine.snapshots import drop_snapshot

BOOT_SECONDS = (0.5, 3.0)
STOP_SECONDS = (0.05, 0.5)
SHUTDOWN_SECONDS = (0.5, 12.0)
ALLOC_SECONDS = (0.05, 0.4)
SNAPSHOT_SECONDS = (0.1, 2.0)
CLONE_SECONDS = (0.2, 3.0)
MIGRATE_SECONDS = (0.5, 5.0)
RESIZE_SECONDS = (0.05, 0.5)
SNAPSHOT_META = ("snaptime", "vmstate", "description", "parent")  # as hypervisor/operations.py
WATCH_SECONDS = 1.0


@dataclass
class Guest:
    status: str = "stopped"  # stopped | starting | running | stopping | incoming
    generation: int = 0


class SimQemu:
    def __init__(self, loop, rng: random.Random) -> None:
        self.loop, self.rng = loop, rng
        self.guests: dict[int, Guest] = {}
        self.crashes = 0

    def status(self, vmid: int) -> str:
        return self.guests.get(vmid, Guest()).status

    def running(self, vmid: int) -> bool:
        return self.status(vmid) != "stopped"

    def run(self, vmid: int, op: str, done: Callable[[str | None], None], timeout: float = 10.0) -> None:
        """Start an operation; `done(error or None)` when it completes. It goes on if the caller gives up."""
        guest = self.guests.setdefault(vmid, Guest())
        if op == "start":
            if guest.status != "stopped":
                done(f"VM {vmid} already running")
                return
            guest.status = "starting"
            took = self.rng.uniform(*BOOT_SECONDS)
            self.loop.after(took, self._settle, vmid, guest.generation, "running", done)
        elif op in ("stop", "shutdown"):
            if guest.status == "stopped":
                done(None)
                return
            took = self.rng.uniform(*(STOP_SECONDS if op == "stop" else SHUTDOWN_SECONDS))
            if op == "shutdown" and took > timeout:
                self.loop.after(timeout, done, f"VM {vmid} qmp command 'system_powerdown' failed - got timeout")
                return
            guest.status = "stopping"
            self.loop.after(took, self._settle, vmid, guest.generation, "stopped", done)
        else:
            done(f"unknown operation {op}")

    async def op(self, vmid: int, op: str, timeout: float = 10.0) -> None:
        """`run`, awaited by a task handler; a failure fails the task."""
        finished, outcome = trio.Event(), {}

        def done(error: str | None) -> None:
            outcome["error"] = error
            finished.set()
        self.run(vmid, op, done, timeout)
        await finished.wait()
        if outcome["error"]:
            raise TaskFailed(outcome["error"])

    def _settle(self, vmid: int, generation: int, status: str, done) -> None:
        guest = self.guests.get(vmid)
        if guest is None or guest.generation != generation:
            done(f"VM {vmid} quit unexpectedly")
            return
        guest.status = status
        done(None)

    def crash(self, vmid: int, counted: bool = True) -> bool:
        guest = self.guests.get(vmid)
        if guest is None or guest.status == "stopped":
            return False
        guest.status, guest.generation = "stopped", guest.generation + 1
        self.crashes += counted
        return True

    def incoming(self, vmid: int) -> Guest:
        """A QEMU started paused with `-incoming`, waiting for the source's memory."""
        guest = self.guests[vmid] = Guest("incoming", self.guests.get(vmid, Guest()).generation + 1)
        return guest

    def discard(self, vmid: int, guest: Guest) -> None:
        if self.guests.get(vmid) is guest and guest.status == "incoming":
            guest.status, guest.generation = "stopped", guest.generation + 1

    def power_loss(self) -> None:
        for vmid in sorted(self.guests):
            self.crash(vmid)


class SimOperations:
    """The handlers of `hypervisor/operations.py`, on `SimQemu` and simulated time."""

    def __init__(self, host) -> None:
        self.host = host
        self.qemu: SimQemu = host.qemu
        self.rng = host.rng

    def handlers(self) -> dict[str, Handler]:
        return {"qmcreate": self.create, "qmstart": self.start, "qmstop": self.stop, "qmshutdown": self.shutdown,
                "qmsnapshot": self.snapshot, "qmrollback": self.rollback, "qmdelsnapshot": self.delsnapshot,
                "qmclone": self.clone, "qmigrate": self.migrate, "resize": self.resize, "qmtemplate": self.template,
                "qmdestroy": self.destroy}

    def _maybe_killed_now(self) -> None:
        """The `handoverkill` fault: this daemon dies before the outcome of the handover can commit."""
        world = self.host.world
        down, world.kill_after_handover = world.kill_after_handover, None
        if down is not None:
            world.handover_kills += 1
            world.trace(f"handoverkill {self.host.name}")
            world.loop.soon(self.host.stop, "kill")
            world.loop.after(down, world.restart, self.host.name)

    async def _take(self, span: tuple[float, float]) -> None:
        await trio.sleep(self.rng.uniform(*span))

    async def create(self, task: TaskRun) -> Outcome:
        vmid, conf = task.vmid, dict(task.guest["conf"])
        for i, key in enumerate(task.intent.get("alloc", [])):
            await self._take(ALLOC_SECONDS)
            conf[key] = f"local:{vmid}/vm-{vmid}-disk-{i}.raw,size=1G"
            task.log(f"{key}: allocated volume 'local:{vmid}/vm-{vmid}-disk-{i}.raw' (1G)")
        outcome = Outcome(configs={vmid: conf})
        if task.intent.get("start"):
            conf.pop("lock", None)
            await self.qemu.op(vmid, "start")
            outcome.power[vmid] = "running"
        return outcome

    async def start(self, task: TaskRun) -> Outcome:
        await self.qemu.op(task.vmid, "start")
        return Outcome(power={task.vmid: "running"})

    async def stop(self, task: TaskRun) -> Outcome:
        await self.qemu.op(task.vmid, "stop")
        return Outcome(power={task.vmid: "stopped"})

    async def shutdown(self, task: TaskRun) -> Outcome:
        await self.qemu.op(task.vmid, "shutdown", float(task.intent.get("timeout") or 10))
        return Outcome(power={task.vmid: "stopped"})

    async def destroy(self, task: TaskRun) -> Outcome:
        if self.qemu.running(task.vmid):
            raise TaskFailed(f"VM {task.vmid} is running - destroy failed")
        for key in sorted(k for k in task.guest["conf"] if k.startswith("scsi")):
            await self._take(ALLOC_SECONDS)
            task.log(f"removing volume of {key}")
        return Outcome(deleted=[task.vmid])

    async def resize(self, task: TaskRun) -> Outcome:
        vmid, conf = task.vmid, dict(task.guest["conf"])
        disk, size = task.intent["disk"], str(task.intent["size"])
        if disk not in conf:
            raise TaskFailed(f"disk '{disk}' does not exist")
        volid, _, props = str(conf[disk]).partition(",")
        current = int(dict(p.split("=", 1) for p in props.split(",") if "=" in p).get("size", "1G").rstrip("G"))
        new = current + int(size[1:-1]) if size.startswith("+") else int(size[:-1])
        if new < current:
            raise TaskFailed("shrinking disks is not supported")
        await self._take(RESIZE_SECONDS)
        conf[disk] = f"{volid},size={new}G"
        task.log(f"resized {disk} from {current}G to {new}G")
        return Outcome(configs={vmid: conf})

    async def template(self, task: TaskRun) -> Outcome:
        vmid, guest = task.vmid, task.guest
        if self.qemu.running(vmid):
            raise TaskFailed("you can't convert a running VM to a template")
        if guest.get("snapshots"):
            raise TaskFailed("you can't convert a VM to template if VM has snapshots")
        conf = dict(guest["conf"])
        for key in sorted(k for k in conf if k.startswith("scsi")):
            conf[key] = str(conf[key]).replace(f"vm-{vmid}-disk-", f"base-{vmid}-disk-")
        conf["template"] = 1
        return Outcome(configs={vmid: conf})

    # ---- snapshots, as hypervisor/operations.py computes them ---------------------------------------
    async def snapshot(self, task: TaskRun) -> Outcome:
        vmid, conf, snaps = task.vmid, dict(task.guest["conf"]), dict(task.guest["snapshots"])
        name = task.intent["snapname"]
        vmstate = bool(task.intent.get("vmstate")) and self.qemu.status(vmid) == "running"
        await self._take(SNAPSHOT_SECONDS)
        snap = {k: v for k, v in conf.items() if k not in ("lock", "parent")}
        snap["snaptime"] = int(self.host.wall())
        if conf.get("parent"):
            snap["parent"] = conf["parent"]
        if vmstate:
            snap["vmstate"] = 1
        snaps[name] = snap
        conf["parent"] = name
        task.log(f"snapshot '{name}' of VM {vmid}" + (" with RAM" if vmstate else ""))
        return Outcome(configs={vmid: conf}, snapshots={vmid: snaps})

    async def rollback(self, task: TaskRun) -> Outcome:
        vmid, snaps, name = task.vmid, task.guest["snapshots"], task.intent["snapname"]
        if name not in snaps:
            await self._take(SNAPSHOT_SECONDS)
            raise TaskFailed(f"snapshot '{name}' does not exist")
        snap = snaps[name]
        new = {k: v for k, v in snap.items() if k not in SNAPSHOT_META}
        new["parent"] = name
        start = bool(snap.get("vmstate") or task.intent.get("start"))
        await self.qemu.op(vmid, "stop")
        if start:  # a snapshot with RAM: restore it and run
            await self.qemu.op(vmid, "start")
        task.log(f"rolled back VM {vmid} to snapshot '{name}'")
        return Outcome(configs={vmid: new}, power={vmid: "running" if start else "stopped"})

    async def delsnapshot(self, task: TaskRun) -> Outcome:
        vmid, name = task.vmid, task.intent["snapname"]
        await self._take(SNAPSHOT_SECONDS)
        if name not in task.guest["snapshots"]:
            raise TaskFailed(f"snapshot '{name}' does not exist")
        conf, snaps = drop_snapshot(dict(task.guest["conf"]), dict(task.guest["snapshots"]), name)
        task.log(f"deleted snapshot '{name}'")
        return Outcome(configs={vmid: conf}, snapshots={vmid: snaps})

    # ---- clone and migration ----------------------------------------------------------------------
    async def clone(self, task: TaskRun) -> Outcome:
        vmid, conf = task.vmid, task.guest["conf"]
        newid = int(task.intent["newid"])
        copy = {k: v for k, v in conf.items() if k not in ("lock", "parent", "template")}
        for key in sorted(k for k in copy if k.startswith("scsi")):
            copy[key] = str(copy[key]).replace(f"vm-{vmid}-", f"vm-{newid}-").replace(f":{vmid}/", f":{newid}/")
            task.log(f"{key}: full clone to '{copy[key]}'")
        copy["name"] = task.intent.get("name") or f"Copy-of-VM-{conf.get('name', vmid)}"
        node = task.intent.get("target") or task.guest["node"]
        await self._take(CLONE_SECONDS)
        return Outcome(created=[{"vmid": newid, "node": node, "config": copy}])

    async def migrate(self, task: TaskRun) -> Outcome:
        """Offline: hand the guest over. Online: a paused QEMU waits on the target, memory is copied, and at
        the end the source stops as the target runs (hypervisor/operations.py's QMP steps, as one switch)."""
        vmid, target = task.vmid, task.intent["target"]
        if not self.qemu.running(vmid):
            await self._take(MIGRATE_SECONDS)
            task.log(f"VM {vmid} now belongs to node '{target}'")
            return Outcome(moved={vmid: target})
        if not task.intent.get("online"):
            raise TaskFailed("can't migrate running VM without --online")
        dest = self.host.world.nodes[target]
        if not dest.up:
            raise TaskFailed(f"online migrate failure - node '{target}' is not reachable")
        if dest.qemu.running(vmid):
            raise TaskFailed(f"online migrate failure - VM {vmid} already running on '{target}'")
        incoming = dest.qemu.incoming(vmid)
        source = self.qemu.guests[vmid].generation
        try:
            await self._take(MIGRATE_SECONDS)
        except BaseException:  # aborted, or this daemon died: the target's QEMU is stopped
            dest.qemu.discard(vmid, incoming)
            raise
        if not (dest.up and dest.qemu.guests.get(vmid) is incoming and incoming.status == "incoming"
                and self.qemu.guests[vmid].generation == source):
            dest.qemu.discard(vmid, incoming)
            raise TaskFailed("online migrate failure - the source or the target QEMU went away")
        incoming.status = "running"  # the target QEMU resumes
        self.qemu.crash(vmid, counted=False)  # the source QEMU quits after handing over
        self._maybe_killed_now()
        task.log(f"migration finished; VM {vmid} now runs on node '{target}'")
        return Outcome(moved={vmid: target}, power={vmid: "running"})


async def watch_guests(process) -> None:
    """`hypervisor/watch.py`: a guest whose power differs from the log outside this node's tasks (a crash,
    a guest's own power-off, one found running after a restart) is reported with `ObserveGuest`."""
    host, reported = process.host, set()

    async def observe(vmid: int, status: str) -> None:
        reason = "crashed" if status == "stopped" else "running"
        await process.submit_until_done(cmd.ObserveGuest(
            request_id=f"observe/{host.name}/{vmid}/{host.wall():.3f}", ts=host.wall(), node=host.name, vmid=vmid,
            status=status, reason=reason))
        reported.discard(vmid)

    async with trio.open_nursery() as nursery:
        while True:
            await trio.sleep(WATCH_SECONDS)
            busy = {run.vmid for run, _ in process.reconciler.active.values()}
            with process.read() as s:
                mine = sorted((v, g.get("status", "stopped")) for v, g in s.guests.items() if g["node"] == host.name)
            for vmid, status in mine:
                seen = host.qemu.status(vmid)
                if vmid not in busy and vmid not in reported and seen in ("running", "stopped") and seen != status:
                    reported.add(vmid)
                    nursery.start_soon(observe, vmid, seen)
