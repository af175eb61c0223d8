"""Task kinds, declared once: each names its lock (or when it holds its guest shared), the fields of its intent,
and its precheck (pure).

`decide` (StartTask), the reconciler and the API look a kind up here; nothing else chooses a task's lock
or accepts intent fields. A field the node cannot honour is not declared, so it is refused (400) instead
of being recorded and dropped; fields Proxmox reserves for root@pam answer 403 to others.
Lock names and root-only parameters follow qemu-server's `PVE/API2/Qemu.pm`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from engine import pending
from engine.errors import Rejection, bad_request, conflict, locked, not_found
from engine.volumes import DISK_KEY, destroyed_volumes, owned_volumes

ROOT = "root@pam"
_B = (int, bool)  # booleans arrive as 0/1
Precheck = Callable[[object, dict, dict], None]  # (state, guest, intent) -> None, raises Rejection


@dataclass(frozen=True)
class TaskKind:
    type: str  # Proxmox's task type: the UPID's type field
    lock: str | None = None  # the guest lock held while the task runs
    intent: dict[str, type | tuple[type, ...]] = field(default_factory=dict)  # fields and types; others refused
    root_only: tuple[str, ...] = ()  # fields only root@pam may give (Proxmox: "Only root may use this option.")
    precheck: Precheck | None = None
    power: bool = False  # acts on a guest's power state (refused for templates)
    # once begun, runs to its end: again after a restart instead of failing as interrupted, and an abort does not
    # stop it (its steps are idempotent; stopped half-way, it left a config naming what was gone); a function of
    # the intent for kinds that do so only for some intents
    to_the_end: bool | Callable[[dict], bool] = False
    # runs beside the guest's other tasks, whatever lock the guest holds, and keeps none of them waiting: a console
    # proxy (Proxmox's `vncproxy` worker takes no config lock; it ends when its connection closes)
    alongside: bool = False
    # when this holds for the guest, the task holds it shared instead of under `lock` (Proxmox's `lock_config_shared`
    # flock, which its config does not show): tasks holding it so run at once, and nothing that needs the guest to
    # itself starts until the last of them has ended (`check_not_shared`)
    shared: Callable[[dict], bool] | None = None
    description: str = ""

    def runs_to_the_end(self, intent: dict) -> bool:
        return bool(self.to_the_end(intent) if callable(self.to_the_end) else self.to_the_end)

    def intent_from(self, params: dict) -> dict:
        """An intent from request parameters: an undeclared one that asks for nothing (0, "", None: the
        default) is left out; any other stays, to be checked."""
        return {k: v for k, v in params.items() if k in self.intent or v not in (None, 0, "", False)}

    def check_intent(self, intent: dict, user: str) -> None:
        """Raises 400 for a field this kind does not declare or of the wrong type, 403 for a root-only field
        given by anyone but root@pam."""
        unknown = sorted(k for k in intent if k not in self.intent)
        if unknown:
            raise bad_request("Parameter verification failed",
                              {k: f"'{k}' is not supported by gpve for {self.type}" for k in unknown})
        wrong = sorted(k for k, v in intent.items() if v is not None and not isinstance(v, self.intent[k]))
        if wrong:
            raise bad_request("Parameter verification failed", {k: "type check failed" for k in wrong})
        given = [k for k in self.root_only if intent.get(k) not in (None, 0, "", False)]
        if given and user != ROOT:
            raise Rejection(403, f"Permission denied - only root@pam may use '{given[0]}'",
                            {k: "Only root may use this option." for k in given})


def _running(guest: dict) -> bool:
    return guest.get("status") == "running"


def check_no_task(s, vmid: int, doing: str) -> None:
    """Destroying a guest waits for its running tasks: a task without a lock (start, resize, ...) would otherwise
    go on for a guest that is gone (found by the simulator: a resize whose guest vanished under it)."""
    busy = next((u for u in s.running_tasks if s.tasks[u].get("vmid") == vmid
                 and not getattr(KINDS.get(s.tasks[u]["type"]), "alongside", False)), None)
    if busy is not None:
        raise conflict(f"VM {vmid} has a running task ({busy}) - {doing} failed")


def sharing(s, vmid: int) -> list[str]:
    """The UPIDs of the running tasks that hold guest `vmid` shared, in log order."""
    return [u for u in s.running_tasks if s.tasks[u].get("vmid") == vmid and s.tasks[u].get("shared")]


def holding_alone(s, vmid: int) -> list[str]:
    """The UPIDs of the running tasks that hold guest `vmid` to themselves (neither shared nor `alongside`), in log
    order."""
    return [u for u in s.running_tasks if s.tasks[u].get("vmid") == vmid and not s.tasks[u].get("shared")
            and not getattr(KINDS.get(s.tasks[u]["type"]), "alongside", False)]


def shares(s, task_kind: TaskKind, guest: dict) -> bool:
    """Whether a task of `task_kind` starting now holds `guest` shared: its kind shares it so (a clone of a guest that
    does not run), and no task that holds the guest to itself is under way or waiting (after those, a clone takes
    the kind's lock and waits its turn, as before)."""
    if task_kind.shared is None or not task_kind.shared(guest):
        return False
    return not holding_alone(s, guest["vmid"])


def check_not_shared(s, vmid: int) -> None:
    """What needs guest `vmid` to itself (a config change, lock, destroy, power action, snapshot, migration, template
    conversion, an exclusive task of any kind) is refused while tasks hold it shared: Proxmox's exclusive config
    flock waits for the shared one (10 s) and fails `can't lock file '/var/lock/qemu-server/lock-N.conf' - got
    timeout` (pve-common `lock_file_full`); gpve answers that at once, with 423. `skiplock` does not help: it skips
    the config's `lock`, not the flock. Raises Rejection(423)."""
    if sharing(s, vmid):
        raise locked(f"can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")


def _protected(guest: dict, what: str) -> None:
    """AbstractConfig's `check_protection`."""
    if guest["conf"].get("protection") not in (None, 0, "0"):
        raise bad_request(f"{what} - protection mode enabled")


def _destroy(s, guest: dict, intent: dict) -> None:
    _protected(guest, f"can't remove VM {guest['vmid']}")
    if _running(guest):
        raise conflict(f"VM {guest['vmid']} is running - destroy failed")
    check_no_task(s, guest["vmid"], "destroy")
    if guest["conf"].get("template"):
        _bases_unused(s, guest)


def _bases_unused(s, template: dict) -> None:
    """A template's base volumes go only when no linked clone is built on them (pve-storage's
    `volume_is_base_and_used`; Proxmox's wording)."""
    bases = [v for v in owned_volumes(template["vmid"], template["conf"]) if "/base-" in v]
    for vmid, guest in s.guests.items():
        if vmid == template["vmid"]:
            continue
        for conf in (guest["conf"], *guest.get("snapshots", {}).values()):
            for value in conf.values():
                used = next((b for b in bases if str(value).startswith(b + "/")), None)
                if used:
                    raise conflict(f"base volume '{used}' is still in use by linked cloned")


def check_config_change(s, guest: dict, intent: dict) -> None:
    """Disks deleted from a protected guest, and volumes destroyed while still in use (by another disk, a snapshot
    or a pending change), are refused (qemu-server's `update_vm_api` and `try_deallocate_drive`); nothing is changed
    then. A key is judged by its value, current or pending. The `qmconfig` task's precheck, and decide's for a config
    change that needs no task (`intent`: {"delete": [keys], "force": 0|1})."""
    known = {**pending.of(guest).values, **guest["conf"]}
    for key in intent.get("delete", []):
        if key in known and key.startswith("unused"):
            _protected(guest, f"can't remove unused disk '{known[key]}'")
        elif key in known and DISK_KEY.fullmatch(key):
            _protected(guest, f"can't remove drive '{key}'")
    for _, volid, in_use in destroyed_volumes(guest["vmid"], guest["conf"], pending.sections(guest), intent):
        if in_use:
            raise bad_request(f"unable to delete '{volid}' - volume is still in use (snapshot?)")


def _config_to_the_end(intent: dict) -> bool:
    """A config change that destroys volumes, or may hot-plug or unplug a NIC or disk, runs to its end: stopped
    half-way, the config named volumes gone, or a running QEMU lacked a device its config named (found by the
    simulator, 5-node seed 43: a daemon killed once QEMU had unplugged `net0` closed the task as interrupted, and the
    config kept `net0`). Its steps are idempotent (hypervisor/hotplug.py: a device present is not plugged again, one
    gone not unplugged, a disk plugged with the volume a first run allocated is replaced by the one allocated anew,
    the first orphaned). Proxmox writes the request into `[PENDING]` first, so its interrupted worker leaves the
    change pending for the next attempt; gpve writes the config once, when the task ends, and so makes that attempt
    itself."""
    delete, changed = intent.get("delete", []), [*intent.get("set", {}), *intent.get("delete", [])]
    return any(k.startswith("unused") for k in delete) or bool(intent.get("force") and delete) or \
        any(pending.NET_KEY.fullmatch(k) or pending.is_drive(k) for k in changed)


def _cloudinit(s, guest: dict, intent: dict) -> None:
    """Proxmox regenerates under the config lock, synchronously: the request does not wait behind another task."""
    check_no_task(s, guest["vmid"], "regenerating the cloud-init drive")


def _template(s, guest: dict, intent: dict) -> None:
    if _running(guest):
        raise conflict("you can't convert a running VM to a template")


def _clone(s, guest: dict, intent: dict) -> None:
    if intent.get("linked") and not guest["conf"].get("template"):
        raise bad_request("Linked clone feature is not supported for this VM - it is not a template")


def _migrate(s, guest: dict, intent: dict) -> None:
    target = intent.get("target")
    if target not in s.nodes or target == guest["node"]:
        raise bad_request("Parameter verification failed", {"target": f"invalid target node '{target}'"})
    if _running(guest) and not intent.get("online"):
        raise bad_request("can't migrate running VM without --online")


def _new_snapshot(s, guest: dict, intent: dict) -> None:
    name = intent.get("snapname")
    if name == "current" or name in guest.get("snapshots", {}):
        raise bad_request(f"snapshot name '{name}' already used")


def _existing_snapshot(s, guest: dict, intent: dict) -> None:
    if intent.get("snapname") not in guest.get("snapshots", {}):
        raise not_found(f"snapshot '{intent.get('snapname')}' does not exist")


_KINDS = [
    TaskKind("qmcreate", "create", {"alloc": list, "start": _B}, description="create a guest: allocate volumes, start"),
    TaskKind("qmstart", None, {"timeout": int, "keepActive": _B}, root_only=("keepActive",), power=True),
    TaskKind("qmstop", None, {"timeout": int, "keepActive": _B, "overrule-shutdown": _B}, root_only=("keepActive",),
             power=True),
    TaskKind("qmshutdown", None, {"timeout": int, "forceStop": _B, "keepActive": _B}, root_only=("keepActive",),
             power=True),
    TaskKind("qmreboot", None, {"timeout": int}, power=True),
    TaskKind("qmreset", None, {}, power=True),
    TaskKind("qmsuspend", None, {}, power=True),
    TaskKind("qmresume", None, {"nocheck": _B}, root_only=("nocheck",), power=True),
    # destroy, snapshot delete and template conversion run to their end: interrupted half-way, they left a guest
    # whose config named disks (or snapshots) that were gone (found by the simulator)
    TaskKind("qmdestroy", "destroyed", {"purge": _B, "destroy-unreferenced-disks": _B}, precheck=_destroy,
             to_the_end=True),
    # deleting `unusedN` (or a disk with `force`) destroys its volume; NICs and disks may be hot-plugged
    TaskKind("qmconfig", None, {"set": dict, "delete": list, "revert": list, "force": _B},
             precheck=check_config_change, to_the_end=_config_to_the_end),
    TaskKind("resize", None, {"disk": str, "size": str}),
    TaskKind("qmsnapshot", "snapshot", {"snapname": str, "description": str, "vmstate": _B}, precheck=_new_snapshot),
    TaskKind("qmrollback", "rollback", {"snapname": str, "start": _B}, precheck=_existing_snapshot),
    TaskKind("qmdelsnapshot", "snapshot-delete", {"snapname": str, "force": _B}, precheck=_existing_snapshot,
             to_the_end=True),
    # qemu-server's `clone_vm`: a guest that does not run (a template, say) is held shared, so that clones of it run
    # in parallel; a running one exclusively (gpve shows that as `lock: clone`; Proxmox writes no lock into the
    # source's config in either case, only into the new guest's, whose VMID gpve reserves instead)
    TaskKind("qmclone", "clone", {"name": str, "description": str, "linked": _B, "storage": str, "format": str,
                                  "target": str},
             precheck=_clone, shared=lambda guest: not _running(guest)),
    TaskKind("qmtemplate", None, {"disk": str}, precheck=_template, to_the_end=True),
    TaskKind("qmcloudinit", None, {}, precheck=_cloudinit,
             description="make the cloud-init drive's image anew (PUT …/cloudinit)"),
    TaskKind("qmigrate", "migrate", {"target": str, "online": _B, "with-local-disks": _B}, precheck=_migrate),
    # a console proxy (vncproxy and termproxy alike, as Proxmox names both): waits for its one WebSocket client on
    # `port` (a key of the node's console sessions, hypervisor/console.py), bridges it, ends when it closes
    TaskKind("vncproxy", None, {"port": int}, alongside=True, description="console proxy (VNC or serial)"),
]
KINDS: dict[str, TaskKind] = {k.type: k for k in _KINDS}
POWER_TYPES = tuple(k.type for k in _KINDS if k.power)


def kind(task_type: str) -> TaskKind:
    """The declared kind; 400 for a task type gpve does not run."""
    try:
        return KINDS[task_type]
    except KeyError:
        raise bad_request(f"unknown task type '{task_type}'") from None
