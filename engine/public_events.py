"""The public event types, mapped from the log's internal events in this one module (pure).

Every consumer (the `/v1/events` API, gRPC `WatchStatus`, webhooks) sees only these types and shapes:

| type                | data                                                                     |
|---------------------|--------------------------------------------------------------------------|
| `vm.created`        | `vmid`, `node`, `name`                                                   |
| `vm.config.changed` | `vmid`, `node`, `changes`: {key: {`old`, `new`}} (absent side = unset);   |
|                     | a change left pending: `changes` {} and `pending`: {key: {`old`, `new`,  |
|                     | `delete`}} (the pending value before and after; `delete` 1 or 2 if set)  |
| `vm.status.changed` | `vmid`, `node`, `old_status`, `new_status` (`running` / `stopped`)       |
| `vm.started`        | `vmid`, `node`                                                           |
| `vm.stopped`        | `vmid`, `node`                                                           |
| `vm.locked`         | `vmid`, `node`, `lock` (Proxmox's lock names), `old_lock`                |
| `vm.unlocked`       | `vmid`, `node`, `old_lock`                                               |
| `vm.migrated`       | `vmid`, `old_node`, `node`                                               |
| `vm.deleted`        | `vmid`, `node`                                                           |
| `snapshot.created`  | `vmid`, `node`, `snapname`                                               |
| `snapshot.deleted`  | `vmid`, `node`, `snapname`                                               |
| `task.started`      | `upid`, `node`, `type`, `id`, `user`, `vmid`                              |
| `task.finished`     | `upid`, `node`, `type`, `id`, `user`, `vmid`, `exitstatus`               |
| `node.joined`       | `node`, `nodeid`, `ip`                                                   |
| `node.removed`      | `node`                                                                   |

No secret leaves: access-control events (users, tokens, passwords, the cluster's keys) have no public
type at all, and config values of secret keys (`cipassword`) are masked as Proxmox masks them.
"""

from __future__ import annotations

from functools import singledispatch

from engine import events as ev
from engine.cloudinit import MASK
from engine.state import State

SECRET_CONFIG_KEYS = frozenset({"cipassword"})
# The documented types, for validation of subscription filters.
PUBLIC_TYPES = ("vm.created", "vm.config.changed", "vm.status.changed", "vm.started", "vm.stopped", "vm.locked",
                "vm.unlocked", "vm.migrated", "vm.deleted", "snapshot.created", "snapshot.deleted", "task.started",
                "task.finished", "node.joined", "node.removed")

Public = tuple[str, dict]  # (type, data)


def _shown(key: str, value):
    return MASK if key in SECRET_CONFIG_KEYS and value is not None else value


@singledispatch
def describe(event: ev.Event, before: State) -> list[Public]:
    """The public events for one internal event, given the state just before it applies."""
    return []


@describe.register
def _guest_created(e: ev.GuestCreated, before: State) -> list[Public]:
    return [("vm.created", {"vmid": e.vmid, "node": e.node, "name": e.config.get("name", f"VM {e.vmid}")})]


@describe.register
def _guest_config_changed(e: ev.GuestConfigChanged, before: State) -> list[Public]:
    guest = before.guests.get(e.vmid)
    if guest is None:
        return []
    old, new = guest["conf"], e.config
    changes = {}
    for key in sorted(set(old) | set(new)):
        if key == "lock" or old.get(key) == new.get(key):
            continue  # lock changes are vm.locked / vm.unlocked
        changes[key] = {side: _shown(key, conf[key]) for side, conf in (("old", old), ("new", new)) if key in conf}
    out: list[Public] = []
    if changes:
        out.append(("vm.config.changed", {"vmid": e.vmid, "node": guest["node"], "changes": changes}))
    if old.get("lock") != new.get("lock"):
        out += _lock_events(e.vmid, guest["node"], old.get("lock"), new.get("lock"))
    return out


@describe.register
def _guest_pending_changed(e: ev.GuestPendingChanged, before: State) -> list[Public]:
    guest = before.guests.get(e.vmid)
    if guest is None:
        return []
    old, new = guest.get("pending") or {}, e.pending
    old_del, new_del = guest.get("pending_delete") or {}, e.pending_delete
    changed = {}
    for key in sorted(set(old) | set(new) | set(old_del) | set(new_del)):
        if old.get(key) == new.get(key) and old_del.get(key) == new_del.get(key):
            continue
        entry = {side: _shown(key, vals[key]) for side, vals in (("old", old), ("new", new)) if key in vals}
        if key in new_del:
            entry["delete"] = 2 if new_del[key] else 1
        changed[key] = entry
    if not changed:
        return []
    return [("vm.config.changed", {"vmid": e.vmid, "node": guest["node"], "changes": {}, "pending": changed})]


@describe.register
def _guest_lock_changed(e: ev.GuestLockChanged, before: State) -> list[Public]:
    guest = before.guests.get(e.vmid)
    if guest is None:
        return []
    return _lock_events(e.vmid, guest["node"], guest["conf"].get("lock"), e.lock)


def _lock_events(vmid: int, node: str, old: str | None, new: str | None) -> list[Public]:
    if old == new:
        return []
    if new is None:
        return [("vm.unlocked", {"vmid": vmid, "node": node, "old_lock": old})]
    return [("vm.locked", {"vmid": vmid, "node": node, "lock": new, "old_lock": old})]


@describe.register
def _guest_power_changed(e: ev.GuestPowerChanged, before: State) -> list[Public]:
    guest = before.guests.get(e.vmid)
    if guest is None or guest.get("status", "stopped") == e.status:
        return []
    data = {"vmid": e.vmid, "node": guest["node"]}
    out: list[Public] = [("vm.status.changed", {**data, "old_status": guest.get("status", "stopped"),
                                                "new_status": e.status})]
    if e.status in ("running", "stopped"):
        out.append((f"vm.{'started' if e.status == 'running' else 'stopped'}", data))
    return out


@describe.register
def _guest_moved(e: ev.GuestMoved, before: State) -> list[Public]:
    guest = before.guests.get(e.vmid)
    if guest is None or guest["node"] == e.node:
        return []
    return [("vm.migrated", {"vmid": e.vmid, "old_node": guest["node"], "node": e.node})]


@describe.register
def _guest_deleted(e: ev.GuestDeleted, before: State) -> list[Public]:
    guest = before.guests.get(e.vmid)
    return [] if guest is None else [("vm.deleted", {"vmid": e.vmid, "node": guest["node"]})]


@describe.register
def _guest_snapshots_changed(e: ev.GuestSnapshotsChanged, before: State) -> list[Public]:
    guest = before.guests.get(e.vmid)
    if guest is None:
        return []
    old, new = set(guest.get("snapshots", {})), set(e.snapshots)
    data = {"vmid": e.vmid, "node": guest["node"]}
    return ([("snapshot.created", {**data, "snapname": n}) for n in sorted(new - old)]
            + [("snapshot.deleted", {**data, "snapname": n}) for n in sorted(old - new)])


def _task_data(task: dict) -> dict:
    return {k: task.get(k) for k in ("upid", "node", "type", "id", "user", "vmid")}


@describe.register
def _task_started(e: ev.TaskStarted, before: State) -> list[Public]:
    return [("task.started", _task_data({"upid": e.upid, "node": e.node, "type": e.type, "id": e.id,
                                         "user": e.user, "vmid": e.vmid}))]


@describe.register
def _task_finished(e: ev.TaskFinished, before: State) -> list[Public]:
    task = before.tasks.get(e.upid)
    if task is None or task["status"] != "running":
        return []
    return [("task.finished", {**_task_data(task), "exitstatus": e.exitstatus})]


@describe.register
def _node_registered(e: ev.NodeRegistered, before: State) -> list[Public]:
    if e.name in before.nodes:
        return []  # a re-registration (new certificate, restart) is not a join
    return [("node.joined", {"node": e.name, "nodeid": e.nodeid, "ip": e.ip})]


@describe.register
def _node_removed(e: ev.NodeRemoved, before: State) -> list[Public]:
    return [("node.removed", {"node": e.name})] if e.name in before.nodes else []


def type_matches(patterns: list[str], event_type: str) -> bool:
    """Event type filters (`/v1/events` `types`, webhook `events`): exact types or `prefix.*`; none: all."""
    return not patterns or any(event_type == p or (p.endswith(".*") and event_type.startswith(p[:-1]))
                               for p in patterns)


def unknown_types(patterns: list[str]) -> list[str]:
    """The patterns no public event type matches."""
    return [p for p in patterns if not any(type_matches([p], t) for t in PUBLIC_TYPES)]
