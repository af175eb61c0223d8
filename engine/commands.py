"""Commands: what a client asks for, as pure data.

A command carries everything `decide` needs from the outside world: the proposer's request id
(retries reuse it, so a command applies at most once), its timestamp and the acting user.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.codec import Record

# Proxmox's guest lock names (PVE::QemuServer / PVE::AbstractConfig).
LOCK_NAMES = (
    "backup", "clone", "create", "migrate", "rollback", "snapshot", "snapshot-delete",
    "suspending", "suspended",
)


@dataclass(frozen=True, kw_only=True)
class Command(Record):
    request_id: str
    ts: float
    user: str = "root@pam"


@dataclass(frozen=True, kw_only=True)
class InitCluster(Command):
    """First write of a new cluster: its name and the shared auth secrets (made by the proposer)."""

    TYPE = "cluster.init"
    cluster_name: str
    ticket_key_pem: str
    csrf_secret: str


@dataclass(frozen=True, kw_only=True)
class RegisterNode(Command):
    TYPE = "node.register"
    name: str
    ip: str
    api_port: int
    raft_addr: str
    fingerprint: str = ""
    # the node's host facts, as Proxmox's `static-info` node key: `cpus`, `memory` (bytes), `cgroup-mode`
    static: dict = field(default_factory=dict)
    # for a member's admission of a joining node: the admitting member's `State.applied` when it began (-1: the
    # node's own registration); refused if the node was removed since
    admitted_at: int = -1


@dataclass(frozen=True, kw_only=True)
class RemoveNode(Command):
    """Take a node out of the cluster; refused while it owns guests."""

    TYPE = "node.remove"
    name: str


@dataclass(frozen=True, kw_only=True)
class SetClusterName(Command):
    """Name the cluster (`POST /cluster/config`), while it has a single node."""

    TYPE = "cluster.set_name"
    cluster_name: str


@dataclass(frozen=True, kw_only=True)
class Barrier(Command):
    """Changes nothing: once its answer is back, the proposer has applied everything committed before it."""

    TYPE = "log.barrier"


@dataclass(frozen=True, kw_only=True)
class ReserveVmid(Command):
    """Reserve a VMID for `lease` seconds: the lowest free one, or the given one if free."""

    TYPE = "vmid.reserve"
    vmid: int | None = None
    lease: float = 60.0


@dataclass(frozen=True, kw_only=True)
class CreateGuest(Command):
    TYPE = "guest.create"
    node: str
    vmid: int
    config: dict = field(default_factory=dict)
    upid: str
    starttime: int
    start: bool = False
    pool: str | None = None  # joined in the same step, so a crash never leaves the guest outside its pool


@dataclass(frozen=True, kw_only=True)
class UpdateGuestConfig(Command):
    TYPE = "guest.update_config"
    node: str
    vmid: int
    set: dict = field(default_factory=dict)
    delete: list = field(default_factory=list)
    digest: str | None = None
    skiplock: bool = False
    revert: list = field(default_factory=list)  # keys whose pending change is dropped (engine/pending.py)
    force: bool = False  # the deletes are forced: a disk's volume is destroyed when its delete applies


@dataclass(frozen=True, kw_only=True)
class DeleteGuest(Command):
    TYPE = "guest.delete"
    node: str
    vmid: int
    upid: str
    starttime: int
    skiplock: bool = False


@dataclass(frozen=True, kw_only=True)
class LockGuest(Command):
    """Take a guest config lock; fails with 423 if another lock is held."""

    TYPE = "guest.lock"
    vmid: int
    lock: str


@dataclass(frozen=True, kw_only=True)
class UnlockGuest(Command):
    """Release a lock; with `lock` set, only if that very lock is held."""

    TYPE = "guest.unlock"
    vmid: int
    lock: str | None = None


@dataclass(frozen=True, kw_only=True)
class StartTask(Command):
    """An intent for the owning node: run task `type` on guest `vmid`, holding its kind's lock meanwhile, or the
    guest shared where the kind says so (engine/tasks.py; `lock` is kept only so that logs written before task
    kinds still decode)."""

    TYPE = "task.start"
    node: str
    upid: str
    starttime: int
    type: str
    vmid: int
    lock: str | None = None
    intent: dict = field(default_factory=dict)
    newid: int | None = None  # a VMID the task will create (clone): reserved until it ends
    skiplock: bool = False
    digest: str | None = None  # the config digest the caller saw, for changes that need it


@dataclass(frozen=True, kw_only=True)
class FinishTask(Command):
    """The owning node's outcome of a task, with what it changed."""

    TYPE = "task.finish"
    upid: str
    exitstatus: str
    log: list = field(default_factory=list)
    power: dict = field(default_factory=dict)  # vmid -> running | stopped
    configs: dict = field(default_factory=dict)  # vmid -> full new config
    # vmid -> {"set": {key: value}, "delete": [key]}: what the task changed in its guest's config, applied over the
    # config of the moment, so that an edit made while the task ran is kept (a full config would undo it)
    patches: dict = field(default_factory=dict)
    snapshots: dict = field(default_factory=dict)  # vmid -> full snapshot table
    # vmid -> what the task changed in the guest's pending changes (engine/pending.py `diff`), applied over the
    # pending changes of the moment: an entry the task took in goes only if it is still what the task saw
    pending: dict = field(default_factory=dict)
    cloudinit: dict = field(default_factory=dict)  # vmid -> the config values its cloud-init image was made from
    created: list = field(default_factory=list)  # [{vmid, node, config}]
    deleted: list = field(default_factory=list)  # [vmid]
    moved: dict = field(default_factory=dict)  # vmid -> the node that owns it now (migration)
    keep_lock: bool = False  # the guest's state is unknown (an interrupted migration): its lock stays for an admin


@dataclass(frozen=True, kw_only=True)
class AbortTask(Command):
    TYPE = "task.abort"
    upid: str


@dataclass(frozen=True, kw_only=True)
class ObserveGuest(Command):
    """The owning node saw a guest's power state change outside any task (a crash, a guest poweroff)."""

    TYPE = "guest.observe"
    node: str
    vmid: int
    status: str
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class SetSnapshots(Command):
    """Replace a guest's snapshot table (metadata only, such as a description)."""

    TYPE = "guest.set_snapshots"
    vmid: int
    snapshots: dict = field(default_factory=dict)
