"""Storage definitions (Proxmox's cluster-wide `storage.cfg`) and the tasks a node runs on its storages, as log
commands (pure).

A definition is `{type, path, content, nodes, shared, disable, ...}` (pve-storage `PVE/Storage/Plugin.pm`,
`DirPlugin.pm`): gpve runs the `dir` type only. `local` always exists, as in Proxmox (`Plugin::parse_config`
brings it back when it is missing): a `dir` storage in each node's data directory, never restricted to some
nodes; what the log holds for it is what was changed, and deleting it brings back its defaults.

Node tasks (`imgcopy` for uploads, `download`, `imgdel`) are declared here and registered with the guest task
kinds (engine/tasks.py); they name a storage rather than a guest (Proxmox's `fork_worker` with a storage id).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from engine import pending, tasks
from engine.access import AccessChanged
from engine.commands import Command
from engine.decide import Decision, decide
from engine.errors import bad_request, conflict, not_found
from engine.events import Event, TaskStarted
from engine.state import State, apply, put_record
from engine.volumes import STORAGE_ID, VolumeError, parse_volume

# What a `dir` storage can hold (DirPlugin `plugindata`), and what it holds when `content` is not given.
DIR_CONTENT = ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "none", "import")
DIR_DEFAULT_CONTENT = "images,rootdir"
# The options of a `dir` storage gpve honours (DirPlugin `options`); `path` is fixed once created.
DIR_OPTIONS = ("path", "content", "nodes", "shared", "disable", "prune-backups", "max-protected-backups", "format",
               "create-base-path", "create-subdirs", "mkdir")
FIXED = ("path",)
LOCAL = "local"
# `local` as Proxmox makes it; its path is each node's own (`DATA_DIR/storage/local`), so the log holds none.
LOCAL_DEFAULTS = {"type": "dir", "content": "backup,images,iso,snippets,vztmpl", "prune-backups": "keep-all=1"}
DIR_PATH = re.compile(r"/[-/a-zA-Z0-9_.@]+")  # DirPlugin `check_config`
NODE_TASK_ID = re.compile(r"[^:\s]*")  # the UPID's id field


# ---- commands ----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SetStorage(Command):
    """Create (`create`) or change a storage definition: `options` set (already normalized), `delete` names options
    to drop; `digest` (of every definition, as `GET /storage/{storage}` answers it) guards a change."""

    TYPE = "storage.set"
    storage: str
    create: bool = False
    options: dict = field(default_factory=dict)
    delete: list = field(default_factory=list)
    digest: str | None = None


@dataclass(frozen=True, kw_only=True)
class DeleteStorage(Command):
    TYPE = "storage.delete"
    storage: str


@dataclass(frozen=True, kw_only=True)
class StartNodeTask(Command):
    """A task for node `node` on storage `storage` (upload, download, volume deletion): its kind's intent, checked
    as a guest task's is. `vmid`: the guest a volume belongs to (the task then waits for that guest's tasks)."""

    TYPE = "task.start_node"
    node: str
    upid: str
    starttime: int
    type: str
    storage: str
    task_id: str = ""
    vmid: int | None = None
    intent: dict = field(default_factory=dict)


# ---- events ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class StorageChanged(Event):
    """A storage definition's new options (None: removed)."""

    TYPE = "storage.changed"
    storage: str
    value: dict | None


@apply.register
def _(e: StorageChanged, s: State) -> State:
    put_record(s.storage, e.storage, e.value)
    return s


# ---- views -------------------------------------------------------------------------------------
def definitions(s: State) -> dict[str, dict]:
    """Every storage definition, `local` included (its defaults under what was changed, never node-restricted), with
    the content a `dir` storage holds when none is given."""
    out = {LOCAL: {**LOCAL_DEFAULTS, **s.storage.get(LOCAL, {})}}
    out[LOCAL].pop("nodes", None)
    for sid, conf in s.storage.items():
        if sid != LOCAL:
            out[sid] = dict(conf)
    for conf in out.values():
        conf.setdefault("content", DIR_DEFAULT_CONTENT)
    return dict(sorted(out.items()))


def split(value) -> list[str]:
    return [v for v in re.split(r"[,;\s]+", str(value or "")) if v]


def contents(conf: dict) -> list[str]:
    return [c for c in split(conf.get("content")) if c != "none"]


def on_node(conf: dict, node: str) -> bool:
    """The definition applies to `node` (Proxmox's `storage_check_node`)."""
    nodes = split(conf.get("nodes"))
    return not nodes or node in nodes


def enabled_on(conf: dict, node: str) -> bool:
    """Not disabled and applying to `node` (Proxmox's `storage_check_enabled`)."""
    return not conf.get("disable") and on_node(conf, node)


def check_enabled(s: State, storage: str, node: str) -> dict:
    """The definition of `storage` if it may be used on `node`; else Proxmox's refusal."""
    conf = definitions(s).get(storage)
    if conf is None:
        raise not_found(f"storage '{storage}' does not exist")
    if conf.get("disable"):
        raise bad_request(f"storage '{storage}' is disabled")
    if not on_node(conf, node):
        raise bad_request(f"storage '{storage}' is not available on node '{node}'")
    return conf


def render(defs: dict[str, dict]) -> str:
    """The definitions as Proxmox writes storage.cfg (sections `TYPE: ID`, one tab-indented option a line)."""
    out = []
    for sid, conf in defs.items():
        out.append(f"{conf['type']}: {sid}")
        out += [f"\t{k} {v}" for k, v in sorted(conf.items()) if k != "type"]
        out.append("")
    return "\n".join(out)


def digest(s: State) -> str:
    """The SHA-1 of storage.cfg as the log defines it (Proxmox's section config `digest`)."""
    return hashlib.sha1(render(definitions(s)).encode()).hexdigest()


def volume_users(s: State, volid: str) -> list[tuple[int, str, str | None, bool]]:
    """Who uses volume `volid`: (vmid, key, snapshot name or None, as a linked clone's base) for every guest config
    and snapshot naming it as a drive, an `unusedN`, a VM state or inside a property (`cicustom`), and every pending
    change (a disk allocated for the guest's next start)."""
    users = []
    for vmid, guest in sorted(s.guests.items()):
        for snap, conf in [(None, guest["conf"]), (None, pending.of(guest).values),
                           *sorted(guest.get("snapshots", {}).items())]:
            for key, value in sorted(conf.items()):
                parts = [p.partition("=")[2] if "=" in p else p for p in str(value).split(",")]
                if volid in parts:
                    users.append((vmid, key, snap, False))
                elif any(p.startswith(volid + "/") for p in parts):
                    users.append((vmid, key, snap, True))
    return users


def check_unused(s: State, volid: str) -> None:
    """A volume no guest or snapshot uses (409 otherwise, in qemu-server's and pve-storage's words)."""
    users = volume_users(s, volid)
    if any(base for *_, base in users):
        raise conflict(f"base volume '{volid.partition(':')[2]}' is still in use by linked clones")
    if users:
        vmid, key, snap, _ = users[0]
        where = f"snapshot '{snap}'" if snap else key
        raise conflict(f"unable to delete '{volid}' - volume is still in use by VM {vmid} ({where})")


# ---- decide ------------------------------------------------------------------------------------
def check_options(sid: str, options: dict, create: bool) -> None:
    unknown = sorted(k for k in options if k not in DIR_OPTIONS)
    if unknown:
        raise bad_request("Parameter verification failed", {unknown[0]: f"unexpected property '{unknown[0]}'"})
    if not create:
        fixed = next((k for k in FIXED if k in options), None)
        if fixed:
            raise bad_request(f"can't change value of fixed parameter '{fixed}'")
    elif sid != LOCAL and not options.get("path"):
        raise bad_request("missing value for required option 'path'")
    if "path" in options and not DIR_PATH.fullmatch(str(options["path"])):
        raise bad_request(f"illegal path for directory storage: {options['path']}")
    content = split(options.get("content"))
    bad = next((c for c in content if c not in DIR_CONTENT), None)
    if bad:
        raise bad_request("Parameter verification failed", {"content": f"invalid format - invalid content type "
                                                                       f"'{bad}'"})
    if "none" in content and len(content) > 1:
        raise bad_request("unable to combine 'none' with other content types")


@decide.register
def _(c: SetStorage, s: State) -> Decision:
    """As pve-storage `PVE::API2::Storage::Config::create` and `update`: the digest first, then the options."""
    if not re.fullmatch(STORAGE_ID, c.storage):
        raise bad_request("Parameter verification failed", {"storage": "invalid storage ID"})
    if c.digest and c.digest != digest(s):
        raise bad_request("detected modified configuration - file changed by other user? Try again.")
    defs = definitions(s)
    if c.create and c.storage in defs:
        raise conflict(f"create storage failed: storage ID '{c.storage}' already defined")
    if not c.create and c.storage not in defs:
        raise not_found(f"storage '{c.storage}' does not exist")
    check_options(c.storage, c.options, c.create)
    for key in c.delete:
        if key not in DIR_OPTIONS:
            raise bad_request(f"update storage failed: no such option '{key}'")
        if key in FIXED:
            raise bad_request(f"update storage failed: unable to delete fixed option '{key}'")
        if key in c.options:
            raise bad_request(f"update storage failed: cannot set and delete property '{key}' at the same time!")
    conf = {"type": "dir"} if c.create else dict(s.storage.get(c.storage, LOCAL_DEFAULTS if c.storage == LOCAL
                                                               else {}))
    conf.update(c.options)
    for key in c.delete:
        conf.pop(key, None)
    if c.storage == LOCAL:
        conf.pop("nodes", None)  # Proxmox drops node restrictions of `local`
    return [StorageChanged(storage=c.storage, value=conf)], {"storage": c.storage, "type": "dir"}


@decide.register
def _(c: DeleteStorage, s: State) -> Decision:
    """As pve-storage's `delete`, then pve-access-control's `remove_storage_access`: the storage's ACLs and pool
    memberships go with it. Deleting `local` brings back its defaults."""
    if c.storage not in definitions(s):
        raise not_found(f"storage '{c.storage}' does not exist")
    events: list[Event] = [StorageChanged(storage=c.storage, value=None)]
    path = f"/storage/{c.storage}"
    for acl_path in sorted(s.access.get("acl", {})):
        if acl_path == path or acl_path.startswith(path + "/"):
            events.append(AccessChanged(kind="acl", key=acl_path, value=None))
    for poolid, pool in sorted(s.access.get("pool", {}).items()):
        if c.storage in pool.get("storage", []):
            events.append(AccessChanged(kind="pool", key=poolid,
                                        value={**pool, "storage": [x for x in pool["storage"] if x != c.storage]}))
    return events, {}


@decide.register
def _(c: StartNodeTask, s: State) -> Decision:
    """Checked at its log position: the node, the storage (enabled there), the kind's intent and precheck."""
    if c.node not in s.nodes:
        raise not_found(f"no such cluster node '{c.node}'")
    kind = tasks.kind(c.type)
    if kind.type not in NODE_KINDS:
        raise bad_request(f"task type '{c.type}' is not a storage task")
    if not NODE_TASK_ID.fullmatch(c.task_id):
        raise bad_request(f"invalid task id '{c.task_id}'")
    kind.check_intent(c.intent, c.user)
    check_enabled(s, c.storage, c.node)
    if kind.precheck is not None:
        kind.precheck(s, None, {**c.intent, "storage": c.storage})
    return [TaskStarted(upid=c.upid, node=c.node, type=c.type, id=c.task_id, user=c.user, starttime=c.starttime,
                        vmid=c.vmid, intent={**c.intent, "storage": c.storage})], {"upid": c.upid}


def _volume_deletable(s: State, guest: dict | None, intent: dict) -> None:
    volid = str(intent.get("volume", ""))
    try:
        volume = parse_volume(volid)
    except VolumeError as exc:
        raise bad_request("Parameter verification failed", {"volume": str(exc)}) from None
    if volume.storage != intent.get("storage"):
        raise bad_request("Parameter verification failed",
                          {"volume": f"storage ID mismatch ({volume.storage} != {intent.get('storage')})"})
    check_unused(s, volid)


_FILE_INTENT = {"filename": str, "content": str, "checksum": str, "checksum-algorithm": str}
NODE_KINDS: dict[str, tasks.TaskKind] = {k.type: k for k in (
    tasks.TaskKind("imgcopy", None, {**_FILE_INTENT, "tmpfile": str, "size": int},
                   description="store an uploaded file (its temporary file in the storage) under its name"),
    tasks.TaskKind("download", None, {**_FILE_INTENT, "url": str, "verify-certificates": (int, bool),
                                      "compression": str},
                   description="download a file into a storage"),
    tasks.TaskKind("imgdel", None, {"volume": str}, precheck=_volume_deletable, description="delete a volume"),
)}
tasks.KINDS.update(NODE_KINDS)

