"""Invariants, checked while the simulation runs and once it has settled.

Each names a promise the engine makes: one leader per term; every replica applies the same entry
(and gets the same results) at each log index; a request id is decided once; no two guests share a
VMID; a guest lock has one holder, and a guest held shared (by clones) none; a write acknowledged to a
client is in every replica's final state; every task ends; after the faults stop the cluster converges
within `CONVERGE_BOUND`.
"""

from __future__ import annotations

import hashlib
import os
import re

from engine import access, pending, tasks
from engine import commands as cmd
from engine.codec import packb
from engine.machine import REQUEST_MEMORY_SECONDS, remembered
from engine.state import State
from engine.volumes import alloc_requests, is_disk_key, owned_volumes, volume_of
from sim import images

# After the last fault: reconnect (0.5 s retry), elections (0.4-1.4 s, a returning node with a higher
# term may force one more), client retries (4 s bridge deadline, then 0.5-1.5 s), the longest guest
# operation (12 s ACPI shutdown bounded by its 10 s timeout, 3 s boot) and the outcome's commit.
CONVERGE_BOUND = 20.0
# Locks only tasks take in the simulated workload (clients lock with backup/migrate/snapshot): none may
# remain once every task has ended.
TASK_ONLY_LOCKS = ("clone", "create", "destroyed", "rollback", "snapshot-delete")
UPDATES_KEPT = 16  # per guest, for the lost-update check (a task overlapping more edits of its guest is rare)
# commands that need their guest alone (Proxmox's exclusive config flock), or share it (a clone that does not run)
ALONE_COMMANDS = (cmd.UpdateGuestConfig, cmd.LockGuest, cmd.DeleteGuest, cmd.SetSnapshots, cmd.StartTask)
# every command `engine/access.py` defines (a new one is checked without being listed here)
ACCESS_COMMANDS = tuple(c for c in vars(access).values()
                        if isinstance(c, type) and issubclass(c, cmd.Command) and c.__module__ == access.__name__)


def digest(obj) -> str:
    return hashlib.sha1(packb(obj)).hexdigest()


class Checker:
    def __init__(self, world) -> None:
        self.world = world
        self.violations: list[str] = []
        self._seen: set[str] = set()
        self.leader_of_term: dict[int, str] = {}
        self.canonical: dict[int, tuple[str, str, bytes, list]] = {}  # index -> (digests, node, payload, results)
        self.decided_at: dict[str, int] = {}
        self.acked: dict[str, dict] = {}
        self.unlogged = 0  # final answers refused before any command (nothing in the log to compare with)
        self.entries_checked = 0
        self.task_started_at: dict[str, int] = {}  # upid -> log index of its StartTask
        # vmid -> (index, request id, {key: (old, new)} of its config, {key: (old, new)} of its pending entries)
        self.updates: dict[int, list[tuple[int, str, dict, dict]]] = {}
        self._checked_after: set[str] = set()

    def violation(self, message: str) -> None:
        if self.world.finished:  # the run is judged; what its cancelled processes do while they end is not
            return
        if message not in self._seen:
            self._seen.add(message)
            self.violations.append(f"t={self.world.loop.now:.3f} {message}")
            self.world.trace(f"VIOLATION {message}")

    # ---- after every tick --------------------------------------------------------------------
    def ticked(self, node) -> None:
        """After a node's tick (every delivery is followed by one): a leadership it took is recorded."""
        log = node.replog
        if log._isLeader():
            term = log.raftCurrentTerm
            holder = self.leader_of_term.get(term)
            if holder is None:
                self.leader_of_term[term] = holder = node.name
                self.world.trace(f"leader {node.name} term {term} log {log.journal.entries[-1][1]} "
                                 f"commit {log.raftCommitIndex}")
            if holder != node.name:
                self.violation(f"two leaders in term {term}: {holder} and {node.name}")

    def hypervisors(self) -> None:
        """A guest runs in at most one QEMU of the cluster: two would write the same disks."""
        where: dict[int, list[str]] = {}
        for node in self.world.nodes.values():
            for vmid, proc in node.qemu.procs.items():
                if proc.holds_guest():
                    where.setdefault(vmid, []).append(node.name)
        for vmid, hosts in sorted(where.items()):
            if len(hosts) > 1:
                self.violation(f"VM {vmid} runs on {' and '.join(sorted(hosts))} at once")

    # ---- on every apply ------------------------------------------------------------------------
    def entry(self, node: str, index: int, payload: bytes, results: list[dict]) -> None:
        """The first replica to apply an index sets what every other must apply there (compared by value; the
        results are digested once per index, for the trace)."""
        self.entries_checked += 1
        first = self.canonical.get(index)
        if first is None:
            key = f"{hashlib.sha1(payload).hexdigest()[:16]} {digest(results)[:16]}"
            self.canonical[index] = first = (key, node, payload, results)
        elif first[2] != payload or first[3] != results:
            key = f"{hashlib.sha1(payload).hexdigest()[:16]} {digest(results)[:16]}"
            self.violation(f"replicas disagree at log index {index}: {first[1]} applied {first[0]}, "
                           f"{node} applied {key}")
        self.world.trace(f"apply {node} {index} {first[0]}")

    def before(self, state: State, command: cmd.Command) -> dict:
        """What the invariants need from the state a command is about to be decided against."""
        vmid = getattr(command, "vmid", None)
        if isinstance(command, cmd.FinishTask):
            vmid = state.tasks.get(command.upid, {}).get("vmid")
        guest = state.guests.get(vmid) if isinstance(vmid, int) else None
        changes = guest and isinstance(command, (cmd.UpdateGuestConfig, cmd.FinishTask))
        out = {"exists": guest is not None, "lock": guest["conf"].get("lock") if guest else None,
               "conf": dict(guest["conf"]) if changes else None, "pending": pending.of(guest) if changes else None}
        if isinstance(command, cmd.StartTask) and command.newid is not None:
            out["newid_exists"] = command.newid in state.guests
        if isinstance(command, ALONE_COMMANDS) and guest is not None:
            out["sharing"] = tasks.sharing(state, vmid)
            out["alone"] = tasks.holding_alone(state, vmid)
        if isinstance(command, cmd.FinishTask):
            task = state.tasks.get(command.upid)
            out["task"] = dict(task, intent=dict(task["intent"])) if task and task["status"] == "running" else None
            out["created_exist"] = sorted(int(i["vmid"]) for i in command.created if int(i["vmid"]) in state.guests)
        return out

    def fresh(self, node: str, index: int, command: cmd.Command, before: dict, result: dict,
              state: State | None = None) -> None:
        """A command decided for the first time on this replica (not answered from the request memory)."""
        rid = command.request_id
        first = self.decided_at.setdefault(rid, index)
        if first != index:
            self.violation(f"request {rid} decided twice: at log index {first} and {index}")
        if "ok" not in result:
            return
        if state is not None and rid not in self._checked_after:  # once per request: replicas agree anyway
            self._checked_after.add(rid)
            self._after(command, before, state, index)
        if isinstance(command, cmd.CreateGuest) and before["exists"]:
            self.violation(f"two guests share VMID {command.vmid}: create {rid} succeeded over an existing guest")
        if isinstance(command, cmd.ReserveVmid) and before["exists"] and command.vmid is not None:
            self.violation(f"VMID {command.vmid} reserved while a guest has it ({rid})")
        if isinstance(command, cmd.UpdateGuestConfig) and command.set.get("lock") and before["lock"] \
                and not command.skiplock:
            self.violation(f"lock on VM {command.vmid} taken by {rid} while '{before['lock']}' was held")
        task = state.tasks.get(command.upid) if isinstance(command, cmd.StartTask) and state is not None else None
        if task and task.get("lock") and before["lock"] and not command.skiplock:
            self.violation(f"task lock on VM {command.vmid} taken by {rid} while '{before['lock']}' was held")
        shared = bool(task and task.get("shared"))
        if before.get("sharing") and not shared and not (task and tasks.KINDS[task["type"]].alongside):
            self.violation(f"VM {command.vmid} taken alone by {rid} while {before['sharing'][0]} held it shared")
        if shared and (before["lock"] or before["alone"]):
            self.violation(f"VM {command.vmid} held shared by {rid} while "
                           f"{before['lock'] and repr(before['lock']) or before['alone'][0]} held it")

    def _after(self, command: cmd.Command, before: dict, state: State, index: int) -> None:
        """Invariants over the state a successful command left behind."""
        rid = command.request_id
        if isinstance(command, cmd.StartTask):
            self.task_started_at[command.upid] = index
        if isinstance(command, cmd.UpdateGuestConfig) and command.vmid in state.guests:
            after = state.guests[command.vmid]["conf"]
            changed = {k: (before["conf"].get(k), after.get(k)) for k in sorted(set(before["conf"]) | set(after))
                       if before["conf"].get(k) != after.get(k)}
            was, now = before["pending"], pending.of(state.guests[command.vmid])
            staged = {k: (was.entry(k), now.entry(k)) for k in sorted(set(was.keys()) | set(now.keys()))
                      if was.entry(k) != now.entry(k)}
            recent = self.updates.setdefault(command.vmid, [])
            recent.append((index, rid, changed, staged))
            del recent[:-UPDATES_KEPT]
        if isinstance(command, cmd.FinishTask) and before.get("task") and before["conf"] is not None:
            self._check_lost_updates(before["task"], before["conf"], before["pending"], state)
        if isinstance(command, (cmd.UpdateGuestConfig, cmd.FinishTask)) and before["conf"] is not None:
            vmid = command.vmid if isinstance(command, cmd.UpdateGuestConfig) else before["task"]["vmid"] \
                if before.get("task") else None
            if vmid in state.guests:
                self._check_pending(vmid, state.guests[vmid], rid)
        if isinstance(command, ACCESS_COMMANDS + (cmd.DeleteGuest, cmd.FinishTask)):
            gone = [command.vmid] if isinstance(command, cmd.DeleteGuest) else \
                [int(v) for v in command.deleted] if isinstance(command, cmd.FinishTask) else []
            self._check_access(state, rid, gone)
        if isinstance(command, (cmd.CreateGuest, cmd.FinishTask, cmd.RemoveNode)):
            for vmid, guest in sorted(state.guests.items()):
                if guest["node"] not in state.nodes:
                    self.violation(f"VM {vmid} belongs to node '{guest['node']}', not a cluster node ({rid})")
        if isinstance(command, cmd.StartTask) and before.get("newid_exists"):
            self.violation(f"clone {rid} reserved VMID {command.newid} that a guest has")
        if isinstance(command, cmd.FinishTask) and before.get("task"):
            task = before["task"]
            vmid = task.get("vmid")
            guest = state.guests.get(vmid)
            if task.get("lock") and guest is not None and guest["conf"].get("lock") and not command.keep_lock:
                self.violation(f"lock '{guest['conf']['lock']}' on VM {vmid} outlived task {task['upid']}")
            for newid in before["created_exist"]:
                self.violation(f"cloned VMID {newid} collides with an existing guest ({task['upid']})")
            if guest is not None:
                self._check_snapshots(vmid, guest, rid)

    def _check_lost_updates(self, task: dict, conf_before: dict, pending_before: pending.Pending,
                            state: State) -> None:
        """A task's outcome must not undo a config change acknowledged while it ran (a lost update), nor drop a
        change left pending meanwhile without applying it."""
        vmid = task.get("vmid")
        guest = state.guests.get(vmid)
        started = self.task_started_at.get(task["upid"])
        if guest is None or started is None:
            return
        after, pending_after = guest["conf"], pending.of(guest)
        for index, rid, changed, staged in self.updates.get(vmid, []):
            if index <= started:
                continue
            for key, (old, new) in changed.items():
                if key != "lock" and conf_before.get(key) == new and after.get(key) == old and old != new:
                    self.violation(f"task {task['upid']} undid {key}={new!r} of VM {vmid}, acknowledged to {rid} "
                                   "while the task ran (lost update)")
            for key, (_, entry) in staged.items():
                if entry is None or pending_before.entry(key) != entry or pending_after.entry(key) == entry:
                    continue
                taken = key not in after if entry[0] == "delete" else key in after and pending.same(after[key],
                                                                                                    entry[1])
                if not taken and pending_after.entry(key) is None:
                    self.violation(f"task {task['upid']} dropped the pending change {key}={entry!r} of VM {vmid}, "
                                   f"acknowledged to {rid} while the task ran, without applying it")

    def _check_pending(self, vmid: int, guest: dict, rid: str) -> None:
        """A guest's pending changes are clean (engine/pending.py): a key pending once, never with its current
        value, no delete of an unset key."""
        pend, conf = pending.of(guest), guest["conf"]
        both = sorted(set(pend.values) & set(pend.deletes))
        same = sorted(k for k, v in pend.values.items() if k in conf and pending.same(conf[k], v))
        unset = sorted(k for k in pend.deletes if k not in conf)
        for what, keys in (("both set and deleted", both), ("pending with its current value", same),
                           ("pending delete of an unset key", unset)):
            if keys:
                self.violation(f"VM {vmid}: {what}: {', '.join(keys)} ({rid})")

    def _check_access(self, state: State, rid: str, gone: list[int]) -> None:
        """Every ACL names an existing subject and role; groups, tokens and pools name what exists; a destroyed
        guest leaves no ACL or pool membership behind (Proxmox's `remove_vm_access`)."""
        from engine.roles import BUILTIN_ROLES

        tables = state.access
        users, groups = tables.get("user", {}), tables.get("group", {})
        roles = set(BUILTIN_ROLES) | set(tables.get("role", {}))
        for path, entries in sorted(tables.get("acl", {}).items()):
            for e in entries:
                userid, _, tokenid = e["ugid"].partition("!")
                exists = {"user": e["ugid"] in users or e["ugid"] == "root@pam", "group": e["ugid"] in groups,
                          "token": tokenid in users.get(userid, {}).get("tokens", {})}[e["type"]]
                if not exists or e["roleid"] not in roles:
                    self.violation(f"ACL on {path} names a missing {e['type']} or role: {e} ({rid})")
        for userid, user in sorted(users.items()):
            for group in user.get("groups", []):
                if group not in groups:
                    self.violation(f"user {userid} is in missing group {group} ({rid})")
        for poolid, pool in sorted(tables.get("pool", {}).items()):
            for vmid in pool["vms"]:
                if vmid not in state.guests:
                    self.violation(f"pool {poolid} holds VM {vmid}, which does not exist ({rid})")
        for vmid in gone:
            if vmid not in state.guests and f"/vms/{vmid}" in tables.get("acl", {}):
                self.violation(f"destroyed VM {vmid} left its ACL behind ({rid})")

    def _check_snapshots(self, vmid: int, guest: dict, rid: str) -> None:
        snaps = guest.get("snapshots", {})
        links = [("current", guest["conf"].get("parent"))] + [(n, s.get("parent")) for n, s in sorted(snaps.items())]
        for name, parent in links:
            if parent is not None and parent not in snaps:
                self.violation(f"VM {vmid}: '{name}' has parent '{parent}', which is no snapshot ({rid})")

    # ---- client side ---------------------------------------------------------------------------
    def ack(self, rid: str, result: dict) -> None:
        """A client's final answer to request `rid` (a command id) was backed by this log decision (`{"ok": …}` or
        `{"error": …}`); a refusal before any command is not acked (nothing in the log to compare it with)."""
        prior = self.acked.setdefault(rid, result)
        if prior != result:
            self.violation(f"request {rid} answered differently: {prior} then {result}")

    # ---- at the end ----------------------------------------------------------------------------
    def final(self) -> None:
        world = self.world
        nodes = world.up_nodes()
        if len(nodes) != len(world.names):
            self.violation("not every node is up at the end")
        for node in nodes:
            registered = sorted(node.machine.state.nodes)
            raft = sorted(n.id for n in node.replog.otherNodes)
            if registered != sorted(world.names) or raft != [n for n in sorted(world.names) if n != node.name]:
                self.violation(f"membership on {node.name}: registered {registered}, raft peers {raft}, "
                               f"expected {sorted(world.names)}")
        states = {n.name: digest(n.machine.state.to_dict()) for n in nodes}
        if len(set(states.values())) > 1:
            self.violation(f"final states differ: {sorted(states.items())}")
        for node in nodes:
            state = node.machine.state
            newest = max((r[0] for r in state.requests.values()), default=0.0)
            for rid, result in sorted(self.acked.items()):
                seen = remembered(state, rid)
                if seen is None:
                    if not world.request_ts.get(rid, newest) < newest - REQUEST_MEMORY_SECONDS:
                        self.violation(f"acknowledged request {rid} missing on {node.name}")
                elif seen != result:
                    self.violation(f"acknowledged request {rid} has another result on {node.name}: {seen}")
            for vmid, guest in sorted(state.guests.items()):
                if guest["conf"].get("lock") in TASK_ONLY_LOCKS:
                    self.violation(f"VM {vmid} still locked ({guest['conf']['lock']}) on {node.name} with no task")
                self._check_snapshots(vmid, guest, "final")
            running = sorted(u for u, t in state.tasks.items() if t["status"] == "running")
            if running:
                self.violation(f"tasks never ended on {node.name}: {running[:3]}")
        if nodes:
            self._check_disks(nodes[0].machine.state)
            self._check_running_devices(nodes[0].machine.state)
        if world.pending:
            self.violation(f"client requests never answered: {sorted(world.pending)[:5]}")

    def _check_disks(self, state: State) -> None:
        """A guest's disks, those of its config (its `unusedN` too) and those pending for its next start, are images
        on its node's storage, holding every snapshot its config lists for them (the production handlers made them,
        through the simulated qemu-img and QEMU; a volume destroyed leaves the config with it)."""
        for vmid, guest in sorted(state.guests.items()):
            storages = self.world.nodes[guest["node"]].storages
            drives = sorted(guest["conf"].items()) + sorted(pending.of(guest).values.items())
            for key, value in drives:
                if not is_disk_key(key) or not owned_volumes(vmid, {key: value}):
                    continue
                volid = volume_of(value)
                storage = storages.get(volid.partition(":")[0])
                path = storage.volume_path(volid) if storage else ""
                if not os.path.exists(path):
                    self.violation(f"VM {vmid}: {key} '{volid}' is not on {guest['node']}'s storage")
                    continue
                if key.startswith("unused"):  # a snapshot covers the drives of its time, not what was unused
                    continue
                held = {s["name"] for s in images.read(path)["snapshots"]}
                for name, snap in sorted(guest["snapshots"].items()):
                    if key in snap and volume_of(snap[key]) == volid and name not in held:
                        self.violation(f"VM {vmid}: snapshot '{name}' is not on {key} '{volid}'")

    def _check_running_devices(self, state: State) -> None:
        """A running guest's QEMU holds what its config says runs: its disks (the same files) and its NICs, no more;
        what waits for the next start is pending (hotplug through the production handlers and the simulated QMP)."""
        for vmid, guest in sorted(state.guests.items()):
            node = self.world.nodes[guest["node"]]
            proc = node.qemu.procs.get(vmid)
            if guest.get("status") != "running" or proc is None or not proc.holds_guest():
                continue
            conf, storages = guest["conf"], node.storages
            if alloc_requests(conf):
                # Not checked: a create interrupted by its node's restart after it started QEMU leaves `STORAGE:GiB`
                # in the config (no start could use it) while the QEMU runs on. A known gap of the create task.
                continue
            disks = {}
            for key, value in sorted(conf.items()):
                volid = volume_of(str(value))
                if is_disk_key(key) and not key.startswith("unused") and volid not in ("none", "cdrom", ""):
                    storage = storages.get(volid.partition(":")[0])
                    disks[f"drive-{key}"] = storage.volume_path(volid) if storage else volid
            held = {drive: path for drive, (path, _) in proc.drives.items()}
            if held != disks:
                self.violation(f"VM {vmid} runs with disks {sorted(held.items())}, its config says "
                               f"{sorted(disks.items())}")
            nets = sorted(k for k in conf if re.fullmatch(r"net\d+", k))
            plugged = sorted(d for d in proc.devices if re.fullmatch(r"net\d+", d))
            if nets != plugged:
                self.violation(f"VM {vmid} runs with NICs {plugged}, its config says {nets}")
