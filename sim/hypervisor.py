"""A simulated hypervisor and the node runtime that drives it from the log.

`SimQemu` keeps each guest's power state and makes operations take time as QEMU does (boot, hard
stop, ACPI shutdown that may time out); guests can crash. QEMU processes outlive a crash of the gpve
daemon, but not a power loss of the host.

`SimReconciler` follows the protocol of `engine.reconciler.Reconciler`: it picks up running tasks the
log addresses to its node, runs them (here against `SimQemu`), and appends their outcome as
`FinishTask` with request id `finish/<upid>`, retried until the cluster takes it; a task found after a
restart that started before it is closed as interrupted; an abort request cancels the run. It also
reports guest power changes seen outside tasks (`ObserveGuest`), as the guest watcher does.

Task kinds: create, start, stop, shutdown, and the config-changing ones whose outcomes mirror
`hypervisor/operations.py` (snapshot, rollback, snapshot delete, clone, offline migration); storage is not
modelled, only the config, snapshot table, ownership and power changes they report.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from engine import commands as cmd
from engine.snapshots import drop_snapshot

BOOT_SECONDS = (0.5, 3.0)
STOP_SECONDS = (0.05, 0.5)
SHUTDOWN_SECONDS = (0.5, 12.0)
ALLOC_SECONDS = (0.05, 0.4)
SNAPSHOT_SECONDS = (0.1, 2.0)
CLONE_SECONDS = (0.2, 3.0)
MIGRATE_SECONDS = (0.5, 5.0)
SNAPSHOT_TASKS = ("qmsnapshot", "qmrollback", "qmdelsnapshot")
SNAPSHOT_META = ("snaptime", "vmstate", "description", "parent")  # as hypervisor/operations.py


class GuestError(Exception):
    pass


@dataclass
class Guest:
    status: str = "stopped"  # stopped | starting | running | stopping
    generation: int = 0


class SimQemu:
    def __init__(self, loop, rng: random.Random) -> None:
        self.loop, self.rng = loop, rng
        self.guests: dict[int, Guest] = {}
        self.crashes = 0

    def status(self, vmid: int) -> str:
        return self.guests.get(vmid, Guest()).status

    def run(self, vmid: int, op: str, done: Callable[[str | None], None], timeout: float = 10.0) -> None:
        """Start an operation; `done(error or None)` when it completes."""
        guest = self.guests.setdefault(vmid, Guest())
        if op == "start":
            if guest.status != "stopped":
                done(f"VM {vmid} already running")
                return
            guest.status = "starting"
            took = self.rng.uniform(*BOOT_SECONDS)
            self.loop.after(took, self._settle, vmid, guest.generation, "running", done, None)
        elif op in ("stop", "shutdown"):
            if guest.status == "stopped":
                done(None)
                return
            took = self.rng.uniform(*(STOP_SECONDS if op == "stop" else SHUTDOWN_SECONDS))
            if op == "shutdown" and took > timeout:
                self.loop.after(timeout, done, f"VM {vmid} qmp command 'system_powerdown' failed - got timeout")
                return
            guest.status = "stopping"
            self.loop.after(took, self._settle, vmid, guest.generation, "stopped", done, None)
        else:
            done(f"unknown operation {op}")

    def _settle(self, vmid: int, generation: int, status: str, done, error) -> None:
        guest = self.guests.get(vmid)
        if guest is None or guest.generation != generation:
            done(f"VM {vmid} quit unexpectedly")
            return
        guest.status = status
        done(error)

    def crash(self, vmid: int) -> bool:
        guest = self.guests.get(vmid)
        if guest is None or guest.status == "stopped":
            return False
        guest.status, guest.generation = "stopped", guest.generation + 1
        self.crashes += 1
        return True

    def power_loss(self) -> None:
        for vmid in sorted(self.guests):
            self.crash(vmid)


@dataclass
class Run:
    upid: str
    generation: int
    cancelled: bool = False
    lines: list[str] = field(default_factory=list)


class SimReconciler:
    """One per node incarnation: dies with the daemon process."""

    def __init__(self, node) -> None:
        self.node = node
        self.loop = node.world.loop
        self.qemu: SimQemu = node.qemu
        self.incarnation = node.incarnation
        self.started_at = int(node.wall())
        self.active: dict[str, Run] = {}
        self._scan_scheduled = False
        self.observing: set[int] = set()
        self.loop.after(1.0, self._periodic)

    def alive(self) -> bool:
        return self.node.up and self.node.incarnation == self.incarnation

    def state_changed(self) -> None:
        if not self._scan_scheduled:
            self._scan_scheduled = True
            self.loop.soon(self._scan)

    def _periodic(self) -> None:
        if self.alive():
            self._scan()
            self._watch()
            self.loop.after(1.0, self._periodic)

    def _scan(self) -> None:
        self._scan_scheduled = False
        if not self.alive():
            return
        state = self.node.machine.state
        for upid, task in list(state.tasks.items()):
            if task["status"] != "running" or task["node"] != self.node.name:
                continue
            run = self.active.get(upid)
            if run is not None:
                if task["abort"] and not run.cancelled:
                    run.cancelled = True
                    self.loop.soon(self._finish, run, task, "received interrupt", {})
                continue
            run = Run(upid, 0)
            self.active[upid] = run
            guest = state.guests.get(task.get("vmid")) or {}
            self._execute(run, dict(task, intent=dict(task["intent"])), dict(guest.get("conf", {})),
                          {k: dict(v) for k, v in sorted(guest.get("snapshots", {}).items())}, guest.get("node"))

    def _execute(self, run: Run, task: dict, conf: dict, snaps: dict, owner: str | None) -> None:
        vmid, kind = task.get("vmid"), task["type"]
        self.started_at = min(self.started_at, int(self.node.wall()))  # as the engine: a clock stepped back
        if task["starttime"] < self.started_at:
            self._finish(run, task, "task interrupted - node restarted while it ran", {})
            return
        if kind == "qmcreate":
            keys = list(task["intent"].get("alloc", []))
            took = sum(self.node.rng.uniform(*ALLOC_SECONDS) for _ in keys)
            for i, key in enumerate(keys):
                conf[key] = f"local:{vmid}/vm-{vmid}-disk-{i}.raw,size=1G"
                run.lines.append(f"{key}: allocated volume 'local:{vmid}/vm-{vmid}-disk-{i}.raw' (1G)")
            if task["intent"].get("start"):
                conf.pop("lock", None)
                self.loop.after(took, self.qemu.run, vmid, "start",
                                lambda err: self._finish(run, task, err, {"configs": {vmid: conf},
                                                                          "power": {vmid: "running"}}))
            else:
                self.loop.after(took, self._finish, run, task, None, {"configs": {vmid: conf}})
        elif kind in ("qmstart", "qmstop", "qmshutdown"):
            op = kind[2:]
            power = "running" if op == "start" else "stopped"
            self.qemu.run(vmid, op, lambda err: self._finish(run, task, err, {"power": {vmid: power}}),
                          timeout=float(task["intent"].get("timeout") or 10))
        elif kind in SNAPSHOT_TASKS:
            took = self.node.rng.uniform(*SNAPSHOT_SECONDS)
            try:
                changes = getattr(self, f"_{kind}")(run, task, vmid, conf, snaps)
            except GuestError as exc:
                self.loop.after(took, self._finish, run, task, str(exc), {})
                return
            if changes.pop("start", False):  # a rollback to a snapshot with RAM: stop, restore, start
                self.qemu.run(vmid, "stop", lambda err: self.qemu.run(
                    vmid, "start", lambda err2: self._finish(run, task, err or err2, changes)))
            elif kind == "qmrollback":
                self.qemu.run(vmid, "stop", lambda err: self._finish(run, task, err, changes))
            else:
                self.loop.after(took, self._finish, run, task, None, changes)
        elif kind == "qmclone":
            newid = int(task["intent"]["newid"])
            clone = {k: v for k, v in conf.items() if k not in ("lock", "parent", "template")}
            for key in sorted(k for k in clone if k.startswith("scsi")):
                clone[key] = str(clone[key]).replace(f"vm-{vmid}-", f"vm-{newid}-").replace(f":{vmid}/", f":{newid}/")
                run.lines.append(f"{key}: full clone to '{clone[key]}'")
            clone["name"] = task["intent"].get("name") or f"Copy-of-VM-{conf.get('name', vmid)}"
            node = task["intent"].get("target") or owner
            took = self.node.rng.uniform(*CLONE_SECONDS)
            self.loop.after(took, self._finish, run, task, None,
                            {"created": [{"vmid": newid, "node": node, "config": clone}]})
        elif kind == "qmigrate":
            target = task["intent"]["target"]
            if self.qemu.status(vmid) != "stopped":
                self._finish(run, task, "live migration of local disks is not supported yet - migrate offline", {})
                return
            run.lines.append(f"VM {vmid} now belongs to node '{target}'")
            took = self.node.rng.uniform(*MIGRATE_SECONDS)
            self.loop.after(took, self._finish, run, task, None, {"moved": {vmid: target}})
        else:
            self._finish(run, task, f"unknown task type '{kind}'", {})

    # ---- snapshots, as hypervisor/operations.py computes them ---------------------------------------
    def _qmsnapshot(self, run: Run, task: dict, vmid: int, conf: dict, snaps: dict) -> dict:
        name = task["intent"]["snapname"]
        vmstate = bool(task["intent"].get("vmstate")) and self.qemu.status(vmid) == "running"
        snap = {k: v for k, v in conf.items() if k not in ("lock", "parent")}
        snap["snaptime"] = int(self.node.wall())
        if conf.get("parent"):
            snap["parent"] = conf["parent"]
        if vmstate:
            snap["vmstate"] = 1
        snaps[name] = snap
        conf["parent"] = name
        run.lines.append(f"snapshot '{name}' of VM {vmid}" + (" with RAM" if vmstate else ""))
        return {"configs": {vmid: conf}, "snapshots": {vmid: snaps}}

    def _qmrollback(self, run: Run, task: dict, vmid: int, conf: dict, snaps: dict) -> dict:
        name = task["intent"]["snapname"]
        if name not in snaps:
            raise GuestError(f"snapshot '{name}' does not exist")
        snap = snaps[name]
        new = {k: v for k, v in snap.items() if k not in SNAPSHOT_META}
        new["parent"] = name
        run.lines.append(f"rolled back VM {vmid} to snapshot '{name}'")
        start = bool(snap.get("vmstate") or task["intent"].get("start"))
        return {"configs": {vmid: new}, "power": {vmid: "running" if start else "stopped"}, "start": start}

    def _qmdelsnapshot(self, run: Run, task: dict, vmid: int, conf: dict, snaps: dict) -> dict:
        name = task["intent"]["snapname"]
        if name not in snaps:
            raise GuestError(f"snapshot '{name}' does not exist")
        conf, snaps = drop_snapshot(conf, snaps, name)
        run.lines.append(f"deleted snapshot '{name}'")
        return {"configs": {vmid: conf}, "snapshots": {vmid: snaps}}

    def _finish(self, run: Run, task: dict, error: str | None, changes: dict) -> None:
        if not self.alive() or self.active.get(run.upid) is not run:
            return
        if run.cancelled and error != "received interrupt":
            return  # the interrupt already closed it
        if error is not None:
            changes = {}
            run.lines.append(f"TASK ERROR: {error}")
            exitstatus = error
        else:
            run.lines.append("TASK OK")
            exitstatus = "OK"
        finish = cmd.FinishTask(request_id=f"finish/{run.upid}", ts=self.node.wall(), user=task["user"],
                                upid=run.upid, exitstatus=exitstatus, log=run.lines, **changes)
        self.node.world.submit_until_done(self.node, finish, lambda: self.active.pop(run.upid, None))

    def _watch(self) -> None:
        """Guest power seen outside tasks (a crash, a guest's own poweroff) goes into the log."""
        state = self.node.machine.state
        busy = {t.get("vmid") for t in state.tasks.values() if t["status"] == "running"}
        for vmid, guest in sorted(state.guests.items()):
            if guest["node"] != self.node.name or vmid in busy:
                continue
            seen = self.qemu.status(vmid)
            if seen in ("running", "stopped") and seen != guest.get("status", "stopped") \
                    and vmid not in self.observing:
                self.observing.add(vmid)
                reason = "crashed" if seen == "stopped" else "running"
                observe = cmd.ObserveGuest(request_id=f"observe/{self.node.name}/{vmid}/{self.node.wall():.3f}",
                                           ts=self.node.wall(), node=self.node.name, vmid=vmid, status=seen,
                                           reason=reason)
                self.node.world.submit_until_done(self.node, observe, lambda v=vmid: self.observing.discard(v))
