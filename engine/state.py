"""The cluster state: a projection of the log, folded by `apply`.

`apply` mutates the state in place (10,000 guests must not be copied per event) but is otherwise
pure: no clock, no randomness, no I/O. Everything here is plain dicts, lists and scalars so that a
snapshot is a msgpack document.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import singledispatch

from engine import events as ev
from engine import pending
from engine.volumes import DISK_KEY, is_cloudinit

TASK_HISTORY_PER_NODE = 1000
CLUSTER_LOG_SIZE = 500
VMID_MIN = 100
VMID_MAX = 999_999_999


@dataclass
class State:
    cluster_name: str = ""
    ticket_key_pem: str = ""
    csrf_secret: str = ""
    version: int = 0
    nodes: dict[str, dict] = field(default_factory=dict)
    guests: dict[int, dict] = field(default_factory=dict)
    reservations: dict[int, dict] = field(default_factory=dict)
    tasks: dict[str, dict] = field(default_factory=dict)
    # request id -> [command timestamp, result, or None for {"ok": {}}]; insertion ordered, pruned from the front
    # (engine.machine: `remembered`, REQUEST_MEMORY_MAX)
    requests: dict[str, list] = field(default_factory=dict)
    cluster_log: list[dict] = field(default_factory=list)
    # access control: kind (user, group, role, pool, acl) -> key -> record
    access: dict[str, dict] = field(default_factory=dict)
    datacenter: dict[str, str] = field(default_factory=dict)  # Proxmox's datacenter.cfg: key -> value
    webhooks: dict[str, dict] = field(default_factory=dict)  # engine/webhooks.py
    storage: dict[str, dict] = field(default_factory=dict)  # storage id -> its definition (engine/storage.py)
    vclusters: dict[str, dict] = field(default_factory=dict)  # vCluster id -> its record (engine/vclusters.py)
    removed_nodes: dict[str, int] = field(default_factory=dict)  # node name -> `applied` when it was last removed
    applied: int = 0

    def __post_init__(self) -> None:
        # Derived, not part of the snapshot: the running tasks, so that a node's reconciler, woken at every
        # applied change, need not scan the whole task history (an ordered dict: iteration must not depend on
        # string hashing).
        self.running_tasks: dict[str, None] = {u: None for u, t in self.tasks.items() if t["status"] == "running"}

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict) -> State:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    # ---- views -------------------------------------------------------------------------
    def guest(self, vmid: int) -> dict | None:
        return self.guests.get(vmid)

    def vmid_taken(self, vmid: int, now: float, user: str | None = None) -> bool:
        """Taken by a guest, or reserved (unexpired) by someone other than `user`."""
        if vmid in self.guests:
            return True
        res = self.reservations.get(vmid)
        return res is not None and res["expires"] > now and res["user"] != user

    def next_free_vmid(self, now: float, start: int = VMID_MIN) -> int | None:
        vmid = start
        while vmid <= VMID_MAX:
            if not self.vmid_taken(vmid, now):
                return vmid
            vmid += 1
        return None


def _render_section(conf: dict) -> list[str]:
    lines = []
    desc = conf.get("description")
    if desc:
        lines.extend("#" + line for line in str(desc).split("\n"))
    for key in sorted(conf):
        if key == "description":
            continue
        lines.append(f"{key}: {conf[key]}")
    return lines


def render_guest_config(conf: dict, snapshots: dict | None = None, pending: dict | None = None,
                        cloudinit: dict | None = None) -> str:
    """The guest's config file text, as Proxmox writes `qemu-server/<vmid>.conf` (write_vm_config): the config,
    its pending changes as a `[PENDING]` section (engine/pending.py `section`), the values its cloud-init image was
    made from as `[special:cloudinit]` (given only while it has a cloud-init drive), then the snapshots."""
    lines = _render_section(conf)
    if pending:
        lines += ["", "[PENDING]"] + _render_section(pending)
    if cloudinit is not None:
        lines += ["", "[special:cloudinit]"] + _render_section(cloudinit)
    for name in sorted(snapshots or {}):
        lines += ["", f"[{name}]"] + _render_section(snapshots[name])
    return "\n".join(lines) + "\n"


def config_digest(conf: dict, snapshots: dict | None = None, pending: dict | None = None,
                  cloudinit: dict | None = None) -> str:
    return hashlib.sha1(render_guest_config(conf, snapshots, pending, cloudinit).encode()).hexdigest()


def guest_digest(guest: dict) -> str:
    """The SHA-1 of the guest's whole config file, pending and cloud-init sections included (what `digest`
    guards; Proxmox writes `[special:cloudinit]` only while the config has a cloud-init drive)."""
    made = guest.get("cloudinit")
    if made is not None and not any(DISK_KEY.fullmatch(k) and is_cloudinit(str(v)) for k, v in guest["conf"].items()):
        made = None
    return config_digest(guest["conf"], guest.get("snapshots"), pending.section(pending.of(guest)), made)


# ---- apply ---------------------------------------------------------------------------------
def put_record(table: dict, key: str, value: dict | None) -> None:
    """A keyed table's record set to a copy of `value`, or removed (None): what a record-changed event applies."""
    if value is None:
        table.pop(key, None)
    else:
        table[key] = dict(value)


@singledispatch
def apply(event: ev.Event, state: State) -> State:
    raise TypeError(f"no apply for {type(event).__name__}")


@apply.register
def _(e: ev.ClusterInitialized, s: State) -> State:
    s.cluster_name, s.ticket_key_pem, s.csrf_secret = e.cluster_name, e.ticket_key_pem, e.csrf_secret
    s.version += 1
    return s


@apply.register
def _(e: ev.NodeRegistered, s: State) -> State:
    s.nodes[e.name] = {"name": e.name, "nodeid": e.nodeid, "ip": e.ip, "api_port": e.api_port,
                       "raft_addr": e.raft_addr, "fingerprint": e.fingerprint, "static": dict(e.static)}
    s.version += 1
    return s


@apply.register
def _(e: ev.NodeRemoved, s: State) -> State:
    s.nodes.pop(e.name, None)
    s.removed_nodes[e.name] = s.applied
    s.version += 1
    return s


@apply.register
def _(e: ev.ClusterNamed, s: State) -> State:
    s.cluster_name = e.cluster_name
    s.version += 1
    return s


@apply.register
def _(e: ev.VmidReserved, s: State) -> State:
    s.reservations[e.vmid] = {"user": e.user, "expires": e.expires}
    return s


@apply.register
def _(e: ev.VmidReleased, s: State) -> State:
    s.reservations.pop(e.vmid, None)
    return s


@apply.register
def _(e: ev.GuestCreated, s: State) -> State:
    s.guests[e.vmid] = {"vmid": e.vmid, "node": e.node, "conf": dict(e.config), "status": "stopped",
                        "snapshots": {}}
    s.reservations.pop(e.vmid, None)
    return s


@apply.register
def _(e: ev.GuestConfigChanged, s: State) -> State:
    s.guests[e.vmid]["conf"] = dict(e.config)
    return s


@apply.register
def _(e: ev.GuestPendingChanged, s: State) -> State:
    """A guest's pending changes (engine/pending.py): the fields go when nothing is pending."""
    guest = s.guests.get(e.vmid)
    if guest is not None:
        for name, value in (("pending", e.pending), ("pending_delete", e.pending_delete)):
            if value:
                guest[name] = dict(value)
            else:
                guest.pop(name, None)
    return s


@apply.register
def _(e: ev.GuestMoved, s: State) -> State:
    if e.vmid in s.guests:
        s.guests[e.vmid]["node"] = e.node
    return s


@apply.register
def _(e: ev.GuestDeleted, s: State) -> State:
    """A guest goes with its permissions (Proxmox's `remove_vm_access`): its ACL subtree and its pool
    membership, so that a later guest with the same VMID does not inherit them."""
    s.guests.pop(e.vmid, None)
    acl = s.access.get("acl", {})
    for path in [p for p in acl if p == f"/vms/{e.vmid}" or p.startswith(f"/vms/{e.vmid}/")]:
        del acl[path]
    pools = s.access.get("pool", {})
    for name, pool in list(pools.items()):
        if e.vmid in pool["vms"]:
            pools[name] = {**pool, "vms": [v for v in pool["vms"] if v != e.vmid]}
    return s


@apply.register
def _(e: ev.GuestLockChanged, s: State) -> State:
    conf = s.guests[e.vmid]["conf"]
    if e.lock is None:
        conf.pop("lock", None)
    else:
        conf["lock"] = e.lock
    return s


@apply.register
def _(e: ev.TaskStarted, s: State) -> State:
    s.tasks[e.upid] = {"upid": e.upid, "node": e.node, "type": e.type, "id": e.id, "user": e.user,
                       "starttime": e.starttime, "status": "running", "log": [], "vmid": e.vmid, "lock": e.lock,
                       "intent": dict(e.intent), "abort": False, "shared": e.shared}
    s.running_tasks[e.upid] = None
    if len(s.tasks) > (TASK_HISTORY_PER_NODE + TASK_HISTORY_PER_NODE // 10) * max(1, len(s.nodes)):
        _forget_old_tasks(s)  # now and then, not per task: keeps apply O(1) on average
    return s


def _forget_old_tasks(s: State) -> None:
    """Keep the newest TASK_HISTORY_PER_NODE finished tasks of each node (the log has them in order)."""
    finished: dict[str, list[str]] = {}
    for upid, task in s.tasks.items():
        if task["status"] == "stopped":
            finished.setdefault(task["node"], []).append(upid)
    for upids in finished.values():
        for upid in upids[: max(0, len(upids) - TASK_HISTORY_PER_NODE)]:
            del s.tasks[upid]


@apply.register
def _(e: ev.TaskFinished, s: State) -> State:
    task = s.tasks.get(e.upid)
    s.running_tasks.pop(e.upid, None)
    if task is not None:
        task.update(status="stopped", endtime=e.endtime, exitstatus=e.exitstatus, log=list(e.log))
    return s


@apply.register
def _(e: ev.TaskAbortRequested, s: State) -> State:
    if e.upid in s.tasks:
        s.tasks[e.upid]["abort"] = True
    return s


@apply.register
def _(e: ev.GuestPowerChanged, s: State) -> State:
    if e.vmid in s.guests:
        s.guests[e.vmid]["status"] = e.status
    return s


@apply.register
def _(e: ev.GuestCloudinitMade, s: State) -> State:
    if e.vmid in s.guests:
        s.guests[e.vmid]["cloudinit"] = dict(e.values)
    return s


@apply.register
def _(e: ev.GuestSnapshotsChanged, s: State) -> State:
    if e.vmid in s.guests:
        s.guests[e.vmid]["snapshots"] = dict(e.snapshots)
    return s


@apply.register
def _(e: ev.ClusterLogged, s: State) -> State:
    s.cluster_log.append({"time": e.time, "node": e.node, "severity": e.severity, "tag": e.tag, "msg": e.msg})
    del s.cluster_log[: max(0, len(s.cluster_log) - CLUSTER_LOG_SIZE)]
    return s
