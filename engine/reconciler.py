"""The node's reconciler: runs the tasks the log addresses to this node and records their outcomes.

A task is an intent in the log (`StartTask`); the owning node picks it up, runs its handler, and
appends the outcome (`FinishTask`) with what it changed. Any node's API can so accept any request,
and a node that restarts finds its interrupted tasks and closes them: those it had begun (`tasks-begun` in its
data directory, written durably before a handler runs, as Proxmox's `tasks/active`) and not seen end.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
import trio

from engine import commands as cmd
from engine import pending, tasks
from engine.bridge import NoQuorum
from engine.private import write_private

log = structlog.get_logger("gpve.reconciler")

BEGUN_FILE = "tasks-begun"  # in the node's data directory: UPIDs begun here whose end was not seen, one a line


@dataclass
class Outcome:
    """What a task changed; becomes a FinishTask."""

    power: dict = field(default_factory=dict)
    configs: dict = field(default_factory=dict)
    snapshots: dict = field(default_factory=dict)
    # vmid (the task's guest) -> its pending changes after the task (engine/pending.py Pending); recorded as what
    # changed from the copy the task was given, so that a change staged while it ran survives
    pending: dict = field(default_factory=dict)
    cloudinit: dict = field(default_factory=dict)  # vmid -> the config values its cloud-init image was made from
    created: list = field(default_factory=list)
    deleted: list = field(default_factory=list)
    moved: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    keep_lock: bool = False  # the guest's state is unknown: its lock stays until an admin unlocks it
    then: Callable[[], Awaitable[None]] | None = None  # once the outcome is in the log (a migration's source volumes)


@dataclass
class TaskRun:
    upid: str
    type: str
    vmid: int | None
    user: str
    intent: dict
    guest: dict | None  # a copy of the guest's record when the task was picked up
    lines: list[str] = field(default_factory=list)
    aborted: bool = False  # someone asked to stop the task (its handler is cancelled, if `abortable`)
    abortable: bool = True  # False while the handler does what it cannot take back (a migration's handover)
    shared: bool = False  # holds its guest shared: other tasks doing so run beside it (engine/tasks.py)

    def log(self, line: str) -> None:
        self.lines.append(line)


class TaskFailed(Exception):
    """A task ended with an error; the message becomes `TASK ERROR: <message>`.

    `outcome` carries what the failed task still changed (say, a half-created guest removed).
    """

    def __init__(self, message: str, outcome: Outcome | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome or Outcome()


Handler = Callable[[TaskRun], Awaitable[Outcome]]


class Reconciler:
    """`runs(vmid)` tells whether the guest's QEMU runs on this host (the driver's pidfile check, as qemu-server's
    `check_running`); without it an interrupted task leaves its guest's recorded power state as it was."""

    def __init__(self, node, handlers: dict[str, Handler], runs: Callable[[int], bool] | None = None) -> None:
        self.node = node
        self.handlers = handlers
        self.runs = runs
        self.active: dict[str, tuple[TaskRun, trio.CancelScope]] = {}
        self._begun_path = os.path.join(node.spec.data_dir, BEGUN_FILE)
        self.begun = _read_lines(self._begun_path)
        # Begun by an earlier start of this daemon and not ended: interrupted. Which node's clock wrote a task's
        # start time says nothing here (the simulator found a task re-run after a restart: it had been accepted
        # by a node whose clock was ahead, so it looked younger than the daemon).
        self.interrupted = frozenset(self.begun)

    def live_log(self, upid: str) -> list[str] | None:
        """Lines of a task still running here (the log holds them only once it ends)."""
        entry = self.active.get(upid)
        return list(entry[0].lines) if entry else None

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Start the tasks the log gives this node, one at a time per guest, in log order: a guest's second
        task waits for its first, as Proxmox's config lock makes it wait (found by the simulator: a start and a
        template conversion ran together and left a running template that nothing could stop). Tasks that hold
        the guest shared (clones of a template) run at once, as Proxmox's shared flock lets them."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            await self._caught_up()
            while True:
                changed = self.node.state_changed()
                busy: dict[int, bool] = {}  # vmid -> whether only tasks holding it shared have it (or wait for it)
                for run, _ in self.active.values():
                    if run.vmid is not None and not getattr(tasks.KINDS.get(run.type), "alongside", False):
                        busy[run.vmid] = busy.get(run.vmid, True) and run.shared
                for task in self._mine():
                    upid = task["upid"]
                    if upid in self.active:
                        run, scope = self.active[upid]
                        if task["abort"]:
                            run.aborted = True
                            if run.abortable:
                                scope.cancel()
                        continue
                    vmid = task.get("vmid")
                    alongside = getattr(tasks.KINDS.get(task["type"]), "alongside", False)
                    shared = bool(task.get("shared"))
                    if vmid is not None and not alongside:
                        waits = vmid in busy and not (shared and busy[vmid])
                        busy[vmid] = busy.get(vmid, True) and shared
                        if waits and not task["abort"]:
                            continue  # waits for the guest's earlier task (an aborted one just ends)
                    run = TaskRun(upid, task["type"], task.get("vmid"), task["user"], task["intent"], task["guest"],
                                  abortable=not _to_the_end(task), shared=shared)
                    self.active[upid] = (run, trio.CancelScope())  # at once: the next scan must not start it again
                    nursery.start_soon(self._execute, task, *self.active[upid])
                with trio.move_on_after(1.0):
                    await changed.wait()

    async def _caught_up(self) -> None:
        """Wait until the local state holds every entry committed before this daemon started (a log barrier): a
        restarted node replays only up to the commit index its disk kept, so a task that had ended could look
        running and run again (found by the simulator: after a power loss, a migration ran a second time for a
        guest already moved, and found its source volumes gone)."""
        while True:
            try:
                await self.node.read_barrier()
                return
            except NoQuorum:
                await trio.sleep(1.0)

    def _mine(self) -> list[dict]:
        with self.node.read() as s:
            ended = [u for u in self.begun if u not in self.active and u in s.tasks and u not in s.running_tasks]
            if ended:  # finished before this start could record it (or closed by another node's admin)
                self._record(self.begun.difference(ended))
            out = []
            for task in map(s.tasks.__getitem__, s.running_tasks):
                if task["node"] == self.node.name:
                    copy = dict(task, intent=dict(task["intent"]))
                    guest = s.guests.get(task["vmid"]) if task.get("vmid") is not None else None
                    copy["guest"] = _copy_guest(guest)
                    out.append(copy)
            return out

    async def _execute(self, task: dict, run: TaskRun, scope: trio.CancelScope) -> None:
        upid = task["upid"]
        structlog.contextvars.bind_contextvars(upid=upid)
        outcome, error = Outcome(), None
        try:
            resumed = _to_the_end(task) and upid in self.interrupted  # begun before a restart: runs again, to its end
            if upid in self.interrupted and not resumed:
                if task["type"] == "qmigrate":  # the guest may run on the target already: as Proxmox, stay locked
                    raise TaskFailed("task interrupted - node restarted while it ran; VM stays locked (migrate): "
                                     "check where it runs, then unlock it", Outcome(keep_lock=True))
                raise TaskFailed("task interrupted - node restarted while it ran", self._as_found(task))
            if task["abort"] and not resumed:
                raise TaskFailed("received interrupt")
            handler = self.handlers.get(task["type"])
            if handler is None:
                raise TaskFailed(f"unknown task type '{task['type']}'")
            self._record(self.begun | {upid})  # durable before the handler changes anything
            with scope:
                outcome = await handler(run)
            if scope.cancelled_caught:
                raise TaskFailed("received interrupt")
        except TaskFailed as exc:
            error, outcome = str(exc), exc.outcome
        except Exception as exc:  # a handler bug must still end the task
            log.exception("task failed", task_type=task["type"])
            error = str(exc) or type(exc).__name__
        if error is not None:
            run.log(f"TASK ERROR: {error}")
            exitstatus = error
        elif outcome.warnings:
            for w in outcome.warnings:
                run.log(f"WARN: {w}")
            run.log(f"TASK WARNINGS: {len(outcome.warnings)}")
            exitstatus = f"WARNINGS: {len(outcome.warnings)}"
        else:
            run.log("TASK OK")
            exitstatus = "OK"
        log.info("task finished", task_type=task["type"], exitstatus=exitstatus)
        configs, patches = _as_patches(outcome.configs, run)
        pend = {vmid: pending.diff(pending.of(run.guest), after) for vmid, after in outcome.pending.items()
                if run.guest is not None and vmid == run.vmid}
        finish = cmd.FinishTask(request_id=f"finish/{upid}", ts=self.node.wall(), user=task["user"], upid=upid,
                                exitstatus=exitstatus, log=run.lines, power=outcome.power, configs=configs,
                                patches=patches, pending=pend, snapshots=outcome.snapshots,
                                cloudinit=outcome.cloudinit, created=outcome.created, deleted=outcome.deleted,
                                moved=outcome.moved, keep_lock=outcome.keep_lock)
        await self.node.submit_until_done(finish)
        if outcome.then is not None and error is None:
            try:
                await outcome.then()
            except Exception as exc:  # the outcome stands; what is left over is only unused
                log.warning("cleanup after the task failed", task_type=task["type"], error=str(exc))
        if upid in self.begun:
            self._record(self.begun - {upid})
        self.active.pop(upid, None)
        self.node.wake_waiters()  # the guest's next task may start

    def _as_found(self, task: dict) -> Outcome:
        """What an interrupted task records: its guest running when this host finds its QEMU running. A start (or
        a create with `start`) interrupted once QEMU ran left the log saying stopped with the lock gone, so a
        config change applied at once what the running QEMU lacked (found by the simulator, contention seed 53: a
        NIC added to the config and not to QEMU). A QEMU gone while the log says running is the watcher's to
        report, with its reason (hypervisor/watch.py); meanwhile changes only wait as pending."""
        vmid, guest = task.get("vmid"), task.get("guest")
        if self.runs is None or guest is None or guest["node"] != self.node.name or guest["status"] == "running":
            return Outcome()
        return Outcome(power={vmid: "running"}) if self.runs(vmid) else Outcome()

    def _record(self, begun: set[str]) -> None:
        self.begun = set(begun)
        write_private(self._begun_path, "".join(f"{u}\n" for u in sorted(self.begun)).encode())


def _to_the_end(task: dict) -> bool:
    kind = tasks.KINDS.get(task["type"])
    return kind is not None and kind.runs_to_the_end(task["intent"])


def _read_lines(path: str) -> set[str]:
    try:
        with open(path) as f:
            return {line.strip() for line in f if line.strip()}
    except FileNotFoundError:
        return set()


def _as_patches(configs: dict, run: TaskRun) -> tuple[dict, dict]:
    """The task's guest's new config as the keys the handler changed from the copy it was given: an edit of
    other keys made while the task ran must survive its outcome (found by the simulator: a resize undid a
    memory change acknowledged meanwhile). Configs of other guests stay whole."""
    whole, patches = {}, {}
    for vmid, conf in configs.items():
        if run.guest is None or vmid != run.vmid:
            whole[vmid] = conf
            continue
        base = run.guest["conf"]
        patches[vmid] = {"set": {k: v for k, v in conf.items() if k != "lock" and base.get(k) != v},
                         "delete": sorted(k for k in base if k not in conf and k != "lock")}
    return whole, patches


def _copy_guest(guest: dict | None) -> dict | None:
    if guest is None:
        return None
    copy = {"vmid": guest["vmid"], "node": guest["node"], "conf": dict(guest["conf"]),
            "status": guest.get("status", "stopped"),
            "snapshots": {k: dict(v) for k, v in guest.get("snapshots", {}).items()}}
    for name in ("pending", "pending_delete"):
        if guest.get(name):
            copy[name] = dict(guest[name])
    return copy
