"""Events: the facts `decide` produces and `apply` folds into the state."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.codec import Record


@dataclass(frozen=True, kw_only=True)
class Event(Record):
    pass


@dataclass(frozen=True, kw_only=True)
class ClusterInitialized(Event):
    TYPE = "cluster.initialized"
    cluster_name: str
    ticket_key_pem: str
    csrf_secret: str


@dataclass(frozen=True, kw_only=True)
class NodeRegistered(Event):
    TYPE = "node.registered"
    name: str
    nodeid: int
    ip: str
    api_port: int
    raft_addr: str
    fingerprint: str = ""
    static: dict = field(default_factory=dict)  # cpus, memory, cgroup-mode (RegisterNode.static)


@dataclass(frozen=True, kw_only=True)
class NodeRemoved(Event):
    TYPE = "node.removed"
    name: str


@dataclass(frozen=True, kw_only=True)
class ClusterNamed(Event):
    TYPE = "cluster.named"
    cluster_name: str


@dataclass(frozen=True, kw_only=True)
class VmidReserved(Event):
    TYPE = "vmid.reserved"
    vmid: int
    user: str
    expires: float


@dataclass(frozen=True, kw_only=True)
class VmidReleased(Event):
    TYPE = "vmid.released"
    vmid: int


@dataclass(frozen=True, kw_only=True)
class GuestCreated(Event):
    TYPE = "guest.created"
    vmid: int
    node: str
    config: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class GuestConfigChanged(Event):
    TYPE = "guest.config_changed"
    vmid: int
    config: dict


@dataclass(frozen=True, kw_only=True)
class GuestPendingChanged(Event):
    """A guest's pending changes, whole (engine/pending.py): values set, and keys to delete (key -> forced)."""

    TYPE = "guest.pending_changed"
    vmid: int
    pending: dict = field(default_factory=dict)
    pending_delete: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class GuestMoved(Event):
    TYPE = "guest.moved"
    vmid: int
    node: str


@dataclass(frozen=True, kw_only=True)
class GuestDeleted(Event):
    TYPE = "guest.deleted"
    vmid: int


@dataclass(frozen=True, kw_only=True)
class GuestLockChanged(Event):
    TYPE = "guest.lock_changed"
    vmid: int
    lock: str | None


@dataclass(frozen=True, kw_only=True)
class TaskStarted(Event):
    TYPE = "task.started"
    upid: str
    node: str
    type: str
    id: str
    user: str
    starttime: int
    vmid: int | None = None
    lock: str | None = None  # the guest lock this task holds until it ends
    intent: dict = field(default_factory=dict)  # what the owning node's reconciler is to do
    shared: bool = False  # holds its guest shared, with others so, instead of under a lock (engine/tasks.py)


@dataclass(frozen=True, kw_only=True)
class TaskAbortRequested(Event):
    TYPE = "task.abort_requested"
    upid: str


@dataclass(frozen=True, kw_only=True)
class GuestPowerChanged(Event):
    TYPE = "guest.power_changed"
    vmid: int
    status: str  # running | stopped


@dataclass(frozen=True, kw_only=True)
class GuestCloudinitMade(Event):
    """The image of the guest's cloud-init drive was made from these config values (engine/cloudinit.py
    `tracked`): `GET …/cloudinit` shows them as its current values."""

    TYPE = "guest.cloudinit_made"
    vmid: int
    values: dict


@dataclass(frozen=True, kw_only=True)
class GuestSnapshotsChanged(Event):
    TYPE = "guest.snapshots_changed"
    vmid: int
    snapshots: dict


@dataclass(frozen=True, kw_only=True)
class ClusterLogged(Event):
    TYPE = "cluster.logged"
    time: int
    node: str
    severity: str
    tag: str
    msg: str


@dataclass(frozen=True, kw_only=True)
class TaskFinished(Event):
    TYPE = "task.finished"
    upid: str
    endtime: int
    exitstatus: str
    log: list = field(default_factory=list)
