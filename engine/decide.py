"""`decide(state, command)`: validate a command against the state at its log position.

Runs on every replica at the same log index, so checks such as "VMID free", "digest matches" or
"lock free" cannot race. Pure: time is the command's timestamp, ids come with the command.
"""

from __future__ import annotations

import re
from functools import singledispatch

from engine import commands as cmd
from engine import events as ev
from engine import pending, tasks
from engine.errors import Rejection, bad_request, conflict, locked, not_found
from engine.state import VMID_MAX, VMID_MIN, State, guest_digest
from engine.volumes import alloc_requests

# Test-only switches to plant known bugs (the simulator must catch them). Never set in production.
PLANTED_BUGS: set[str] = set()

Decision = tuple[list[ev.Event], dict]


@singledispatch
def decide(command: cmd.Command, state: State) -> Decision:
    raise TypeError(f"no decide for {type(command).__name__}")


def conf_path(node: str, vmid: int) -> str:
    return f"nodes/{node}/qemu-server/{vmid}.conf"


def _guest(state: State, vmid: int, node: str | None = None) -> dict:
    guest = state.guests.get(vmid)
    if guest is None or (node is not None and guest["node"] != node):
        shown = node if node is not None else (guest or {}).get("node", "localhost")
        raise Rejection(404, f"Configuration file '{conf_path(shown, vmid)}' does not exist")
    return guest


def _changeable_guest(s: State, vmid: int, node: str, skiplock: bool, digest: str | None,
                      shared: bool = False) -> dict:
    """The guest, if it exists on `node`, is not locked nor held shared by tasks (unless `shared`: the caller
    shares it too) and (given a digest) was not changed meanwhile."""
    return _check_changeable(s, _guest(s, vmid, node), skiplock, digest, shared)


def _check_changeable(s: State, guest: dict, skiplock: bool, digest: str | None, shared: bool = False) -> dict:
    _check_unlocked(s, guest, skiplock, shared)
    if digest and digest != guest_digest(guest):
        raise bad_request("detected modified configuration - file changed by other user? Try again.")
    return guest


def _check_unlocked(s: State, guest: dict, skiplock: bool = False, shared: bool = False) -> None:
    """423 `VM N is locked (lock)` for a config lock (unless `skiplock`), and, unless the caller holds the guest
    shared too, while tasks hold it shared (engine/tasks.py `check_not_shared`)."""
    lock = guest["conf"].get("lock")
    if lock and not skiplock:
        raise locked(f"VM {guest['vmid']} is locked ({lock})")
    if not shared and "ignore-shared-clones" not in PLANTED_BUGS:
        tasks.check_not_shared(s, guest["vmid"])


@decide.register
def _(c: cmd.InitCluster, s: State) -> Decision:
    if s.cluster_name:
        return [], {"cluster_name": s.cluster_name}
    event = ev.ClusterInitialized(cluster_name=c.cluster_name, ticket_key_pem=c.ticket_key_pem,
                                  csrf_secret=c.csrf_secret)
    return [event], {"cluster_name": c.cluster_name}


@decide.register
def _(c: cmd.RegisterNode, s: State) -> Decision:
    if c.admitted_at >= 0 and s.removed_nodes.get(c.name, -1) >= c.admitted_at:
        # an admission that outlived the node's removal (found by the simulator, --membership seed 15: a member's
        # admission, stalled without quorum, added the node back after it had left)
        raise conflict(f"node '{c.name}' was removed after its admission began")
    known = s.nodes.get(c.name)
    fingerprint = c.fingerprint or (known or {}).get("fingerprint", "")
    static = c.static or (known or {}).get("static", {})
    if known and (known["ip"], known["api_port"], known["raft_addr"], known.get("fingerprint", ""),
                  known.get("static", {})) == (c.ip, c.api_port, c.raft_addr, fingerprint, static):
        return [], {"nodeid": known["nodeid"]}
    clash = next((n for n in s.nodes.values() if n["raft_addr"] == c.raft_addr and n["name"] != c.name), None)
    if clash:
        raise conflict(f"raft address {c.raft_addr} is already used by node '{clash['name']}'")
    nodeid = known["nodeid"] if known else 1 + max((n["nodeid"] for n in s.nodes.values()), default=0)
    return [ev.NodeRegistered(name=c.name, nodeid=nodeid, ip=c.ip, api_port=c.api_port, raft_addr=c.raft_addr,
                              fingerprint=fingerprint, static=static)], {"nodeid": nodeid}


@decide.register
def _(c: cmd.RemoveNode, s: State) -> Decision:
    if c.name not in s.nodes:
        raise not_found(f"no such cluster node '{c.name}'")
    owned = sorted(v for v, g in s.guests.items() if g["node"] == c.name)
    if owned:
        raise conflict(f"node '{c.name}' still owns guests ({', '.join(map(str, owned))}) - move or remove them first")
    # A task recorded for the node only ends through that node's daemon: removed, it would run forever
    # (found by the simulator, --membership seed 32: a migration moved the guest away under a shutdown). A task of
    # another node that puts a guest on it (a migration's or a clone's `target`) would leave that guest on a node
    # that is gone (--membership seed 47: the outcome could not move the guest, which ran on the removed host too).
    running = sorted(u for u in s.running_tasks
                     if c.name in (s.tasks[u]["node"], s.tasks[u].get("intent", {}).get("target")))
    if running:
        raise conflict(f"node '{c.name}' still has running tasks ({', '.join(running[:3])}) - wait for them first")
    # the Raft address the removal goes on with: a retry is answered from the request memory once the node is gone
    return [ev.NodeRemoved(name=c.name)], {"raft_addr": s.nodes[c.name]["raft_addr"]}


@decide.register
def _(c: cmd.Barrier, s: State) -> Decision:
    return [], {}


@decide.register
def _(c: cmd.SetClusterName, s: State) -> Decision:
    if len(s.nodes) > 1:
        raise bad_request("cluster config already exists: this node is part of a cluster of "
                          f"{len(s.nodes)} nodes")
    if not re.fullmatch(r"[A-Za-z0-9\-]{1,15}", c.cluster_name):
        raise bad_request("Parameter verification failed", {"clustername": "value does not match the regex pattern"})
    return [ev.ClusterNamed(cluster_name=c.cluster_name)], {"cluster_name": c.cluster_name}


@decide.register
def _(c: cmd.ReserveVmid, s: State) -> Decision:
    expired = [ev.VmidReleased(vmid=v) for v, r in sorted(s.reservations.items()) if r["expires"] <= c.ts]
    if c.vmid is None:
        vmid = s.next_free_vmid(c.ts)
        if vmid is None:
            raise conflict("no free VMID left")
    else:
        vmid = c.vmid
        if s.vmid_taken(vmid, c.ts, c.user):
            raise conflict(f"VM {vmid} already exists" if vmid in s.guests else f"VMID {vmid} is reserved")
    return expired + [ev.VmidReserved(vmid=vmid, user=c.user, expires=c.ts + c.lease)], {"vmid": vmid}


@decide.register
def _(c: cmd.CreateGuest, s: State) -> Decision:
    if not VMID_MIN <= c.vmid <= VMID_MAX:
        raise bad_request("Parameter verification failed", {"vmid": f"value must be between {VMID_MIN} "
                                                            f"and {VMID_MAX}"})
    if c.node not in s.nodes:
        raise not_found(f"no such cluster node '{c.node}'")
    if c.vmid in s.guests and "skip-vmid-check" not in PLANTED_BUGS:
        raise conflict(f"unable to create VM {c.vmid} - VM {c.vmid} already exists")
    if s.vmid_taken(c.vmid, c.ts, c.user) and "skip-vmid-check" not in PLANTED_BUGS:
        raise conflict(f"unable to create VM {c.vmid} - VMID {c.vmid} is reserved")
    config = dict(c.config)
    allocs = alloc_requests(config)
    start = c.start
    joined: list[ev.Event] = []
    if c.pool:
        from engine.access import pool_with_guest  # engine.access registers itself here: imported late

        joined = [pool_with_guest(s, c.pool, c.vmid)]
    if allocs or start:  # the owning node allocates volumes (and starts the guest); locked meanwhile
        config["lock"] = "create"
        intent = {"alloc": sorted(allocs), "start": start}
        return [ev.GuestCreated(vmid=c.vmid, node=c.node, config=config), *joined,
                ev.TaskStarted(upid=c.upid, node=c.node, type="qmcreate", id=str(c.vmid), user=c.user,
                               starttime=c.starttime, vmid=c.vmid, lock="create", intent=intent)], \
            {"upid": c.upid, "vmid": c.vmid}
    events: list[ev.Event] = [
        ev.TaskStarted(upid=c.upid, node=c.node, type="qmcreate", id=str(c.vmid), user=c.user,
                       starttime=c.starttime, vmid=c.vmid),
        ev.GuestCreated(vmid=c.vmid, node=c.node, config=config), *joined,
        ev.TaskFinished(upid=c.upid, endtime=int(c.ts), exitstatus="OK", log=["TASK OK"]),
    ]
    return events, {"upid": c.upid, "vmid": c.vmid}


def config_events(guest: dict, conf: dict, pend: pending.Pending) -> list[ev.Event]:
    """The events that take `guest` to `conf` and `pend`: only what changed."""
    events: list[ev.Event] = []
    if conf != guest["conf"]:
        events.append(ev.GuestConfigChanged(vmid=guest["vmid"], config=conf))
    if pend != pending.of(guest):
        events.append(ev.GuestPendingChanged(vmid=guest["vmid"], pending=pend.values, pending_delete=pend.deletes))
    return events


@decide.register
def _(c: cmd.UpdateGuestConfig, s: State) -> Decision:
    """A config change without volumes to allocate or destroy and without QEMU to drive: written into pending, then
    applied as far as no QEMU is needed (engine/pending.py): all of it on a guest that does not run, the keys that
    need no restart on one that does. A key that would need a hotplug stays pending (the services send those to a
    `qmconfig` task; this is the fallback when the guest started meanwhile)."""
    guest = _changeable_guest(s, c.vmid, c.node, c.skiplock, c.digest)
    overlap = sorted(set(c.set) & set(c.delete))
    if overlap:
        raise bad_request("Parameter verification failed",
                          {k: "unable to delete and set the same option" for k in overlap})
    both = sorted(set(c.revert) & (set(c.set) | set(c.delete)))
    if both:
        raise bad_request("Parameter verification failed",
                          {"delete": f"you can't use '-{both[0]}' and '-revert {both[0]}' at the same time"})
    tasks.check_config_change(s, guest, {"delete": c.delete, "force": c.force})
    conf, pend = pending.stage(c.vmid, guest["conf"], pending.of(guest), c.set, c.delete, c.revert, force=c.force)
    chosen = pending.plan(conf, pend, pending.is_live(s, guest), [*c.set, *c.delete, *c.revert])
    keys = [k for k in chosen.now if not pending.destroys(c.vmid, conf, pend, k)]  # destroying volumes: a task's
    conf, pend, _ = pending.commit(c.vmid, conf, pend, keys)
    return config_events(guest, conf, pend), {}


@decide.register
def _(c: cmd.StartTask, s: State) -> Decision:
    task_kind = tasks.kind(c.type)
    guest = _guest(s, c.vmid, c.node)
    shared = tasks.shares(s, task_kind, guest)  # beside other clones of a guest that does not run
    if not task_kind.alongside:
        _check_changeable(s, guest, c.skiplock, c.digest, shared)
    task_kind.check_intent(c.intent, c.user)
    if task_kind.power and guest["conf"].get("template"):
        raise bad_request("you can't start a vm if it's a template" if c.type == "qmstart"
                          else f"VM {c.vmid} is a template")
    if task_kind.precheck is not None:
        task_kind.precheck(s, guest, c.intent)
    events: list[ev.Event] = []
    if c.newid is not None:
        if s.vmid_taken(c.newid, c.ts, c.user):
            raise conflict(f"unable to create VM {c.newid}: config file already exists")
        # Held for the task, not for its user: the same user must not create or reserve the VMID meanwhile
        # (Proxmox writes the clone's locked config at once). Found by the simulator, seed 8 (sim/README.md).
        events.append(ev.VmidReserved(vmid=c.newid, user=f"task:{c.upid}", expires=c.ts + 86400 * 365))
    lock = None if shared else task_kind.lock
    if lock:
        events.append(ev.GuestLockChanged(vmid=c.vmid, lock=lock))
    if c.type == "qmstop" and c.intent.get("overrule-shutdown"):  # as Proxmox: abort the shutdowns under way
        events += [ev.TaskAbortRequested(upid=u) for u in s.running_tasks
                   if s.tasks[u].get("vmid") == c.vmid and s.tasks[u]["type"] == "qmshutdown"]
    intent = dict(c.intent)
    if c.newid is not None:
        intent["newid"] = c.newid
    events.append(ev.TaskStarted(upid=c.upid, node=c.node, type=c.type, id=str(c.vmid), user=c.user,
                                 starttime=c.starttime, vmid=c.vmid, lock=lock, intent=intent, shared=shared))
    return events, {"upid": c.upid}


def _keeping_lock(s: State, vmid: int, conf: dict) -> dict:
    """A task's outcome never sets or drops the guest's lock itself; the lock goes when the task ends."""
    held = s.guests.get(vmid, {}).get("conf", {}).get("lock")
    conf = dict(conf)
    conf.pop("lock", None)
    if held:
        conf["lock"] = held
    return conf


@decide.register
def _(c: cmd.FinishTask, s: State) -> Decision:
    task = s.tasks.get(c.upid)
    if task is None or task["status"] != "running":
        return [], {}
    events: list[ev.Event] = []
    for item in c.created:
        vmid = int(item["vmid"])
        if vmid not in s.guests:
            events.append(ev.GuestCreated(vmid=vmid, node=item["node"], config=dict(item["config"])))
    for vmid, conf in sorted((int(k), v) for k, v in c.configs.items()):
        if vmid in s.guests or any(int(i["vmid"]) == vmid for i in c.created):
            events.append(ev.GuestConfigChanged(vmid=vmid, config=_keeping_lock(s, vmid, conf)))
    for vmid in sorted({int(k) for k in c.patches} | {int(k) for k in c.pending}):
        guest = s.guests.get(vmid)
        if guest is None:
            continue
        conf = dict(guest["conf"])
        patch = c.patches.get(vmid, c.patches.get(str(vmid), {}))
        conf.update(patch.get("set", {}))
        for key in patch.get("delete", []):
            conf.pop(key, None)
        conf = _keeping_lock(s, vmid, conf)
        pend = pending.patch(conf, pending.of(guest), c.pending.get(vmid, c.pending.get(str(vmid), {})))
        events += config_events(guest, conf, pend)
    for vmid, snaps in sorted((int(k), v) for k, v in c.snapshots.items()):
        events.append(ev.GuestSnapshotsChanged(vmid=vmid, snapshots=dict(snaps)))
    for vmid, values in sorted((int(k), v) for k, v in c.cloudinit.items()):
        if vmid in s.guests:
            events.append(ev.GuestCloudinitMade(vmid=vmid, values=dict(values)))
    for vmid, node in sorted((int(k), v) for k, v in c.moved.items()):
        if vmid in s.guests and node in s.nodes:
            events.append(ev.GuestMoved(vmid=vmid, node=node))
    for vmid, status in sorted((int(k), v) for k, v in c.power.items()):
        events.append(ev.GuestPowerChanged(vmid=vmid, status=status))
    vmid = task.get("vmid")
    keep_lock = c.keep_lock and "release-migration-lock" not in PLANTED_BUGS
    if task.get("lock") and vmid in s.guests and vmid not in c.deleted and not keep_lock:
        events.append(ev.GuestLockChanged(vmid=vmid, lock=None))
    newid = task.get("intent", {}).get("newid")
    if newid is not None and newid in s.reservations:
        events.append(ev.VmidReleased(vmid=newid))
    for vmid in sorted(int(v) for v in c.deleted):
        events.append(ev.GuestDeleted(vmid=vmid))
    events.append(ev.TaskFinished(upid=c.upid, endtime=int(c.ts), exitstatus=c.exitstatus, log=list(c.log)))
    return events, {}


@decide.register
def _(c: cmd.SetSnapshots, s: State) -> Decision:
    guest = _guest(s, c.vmid)
    _check_unlocked(s, guest)
    if sorted(c.snapshots) != sorted(guest.get("snapshots", {})):
        raise conflict("snapshot list changed - try again")
    return [ev.GuestSnapshotsChanged(vmid=c.vmid, snapshots=dict(c.snapshots))], {}


@decide.register
def _(c: cmd.AbortTask, s: State) -> Decision:
    task = s.tasks.get(c.upid)
    if task is None:
        raise not_found(f"no such task '{c.upid}'")
    if task["status"] != "running" or task["abort"]:
        return [], {}
    return [ev.TaskAbortRequested(upid=c.upid)], {}


@decide.register
def _(c: cmd.ObserveGuest, s: State) -> Decision:
    guest = s.guests.get(c.vmid)
    if guest is None or guest["node"] != c.node or guest.get("status") == c.status:
        return [], {}
    events: list[ev.Event] = [ev.GuestPowerChanged(vmid=c.vmid, status=c.status)]
    if c.reason:
        severity = "err" if c.reason.startswith("crash") else "info"
        events.append(ev.ClusterLogged(time=int(c.ts), node=c.node, severity=severity, tag=f"qemu/{c.vmid}",
                                       msg=f"VM {c.vmid} {c.reason}"))
    return events, {}


@decide.register
def _(c: cmd.DeleteGuest, s: State) -> Decision:
    guest = _guest(s, c.vmid, c.node)
    _check_unlocked(s, guest, c.skiplock)
    if guest.get("status") == "running":
        raise conflict(f"VM {c.vmid} is running - destroy failed")
    tasks.check_no_task(s, c.vmid, "destroy")
    return [
        ev.TaskStarted(upid=c.upid, node=c.node, type="qmdestroy", id=str(c.vmid), user=c.user,
                       starttime=c.starttime),
        ev.GuestDeleted(vmid=c.vmid),
        ev.TaskFinished(upid=c.upid, endtime=int(c.ts), exitstatus="OK",
                        log=[f"destroyed VM {c.vmid}", "TASK OK"]),
    ], {"upid": c.upid}


@decide.register
def _(c: cmd.LockGuest, s: State) -> Decision:
    if c.lock not in cmd.LOCK_NAMES:
        raise bad_request("Parameter verification failed", {"lock": f"value '{c.lock}' does not have a "
                                                            "value in the enumeration"})
    guest = _guest(s, c.vmid)
    _check_unlocked(s, guest)
    return [ev.GuestLockChanged(vmid=c.vmid, lock=c.lock)], {"lock": c.lock}


@decide.register
def _(c: cmd.UnlockGuest, s: State) -> Decision:
    guest = _guest(s, c.vmid)
    held = guest["conf"].get("lock")
    if held is None:
        return [], {}
    if c.lock is not None and held != c.lock:
        raise locked(f"VM {c.vmid} is locked ({held})")
    return [ev.GuestLockChanged(vmid=c.vmid, lock=None)], {}
