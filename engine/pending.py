"""Pending config changes: what a change to a running guest leaves for its next start (Proxmox's `[PENDING]`).

Proxmox writes every config change into the `[PENDING]` section first, then applies what it can at once
(qemu-server `PVE/API2/Qemu.pm` update_vm_api): all of it when the guest does not run (`vmconfig_apply_pending`);
on a running guest (`vmconfig_hotplug_pending`) the "fast plug" keys, a few more that need no restart, and NICs
and disks by hotplug when the guest's `hotplug` option allows it. The rest waits for the guest's next start or
stop (`vm_start`, `vm_stop_cleanup`), or for `revert`.

The state: a guest record (engine/state.py) may carry two fields, both absent when nothing is pending:

    "pending":        {key: value}    values set but not in the running config (`conf`) yet
    "pending_delete": {key: force}    keys to delete; force (bool) is Proxmox's `!key`: the disk's volume is
                                      destroyed instead of kept as `unusedN`

A key is in at most one of the two, and never pending with the value it has in `conf` (`cleanup`).
Everything here is pure: `plan` decides, `commit` applies; the node's task handler does what needs QEMU.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.errors import bad_request
from engine.volumes import DISK_KEY, is_cdrom, is_cloudinit, owned_volumes, property_string, volume_of

# Applied at once on a running guest: they change nothing QEMU runs (qemu-server's $fast_plug_option, and every
# cloud-init key, which only the next cloud-init image reads).
FAST_PLUG = frozenset({"description", "hookscript", "lock", "migrate_downtime", "migrate_speed", "name", "onboot",
                       "protection", "shares", "startup", "tags", "vmstatestorage", "cicustom", "cipassword",
                       "citype", "ciupgrade", "ciuser", "nameserver", "searchdomain", "sshkeys"})
CLOUDINIT_IPCONFIG = re.compile(r"ipconfig\d+")
HOTPLUG_FEATURES = ("network", "disk", "cpu", "memory", "usb", "cloudinit")
HOTPLUG_DEFAULT = frozenset({"network", "disk", "usb"})
NET_KEY = re.compile(r"net\d+")
# Drive options a running QEMU cannot change (qemu-server's vmconfig_update_disk): pending until the next start.
COLD_DRIVE_OPTIONS = ("aio", "discard", "iothread", "queues", "product", "cache", "ssd", "vendor", "ro")
NOW, PLUG = "now", "plug"


@dataclass(frozen=True)
class Pending:
    """A guest's pending changes: `values` {key: value} and `deletes` {key: force}."""

    values: dict = field(default_factory=dict)
    deletes: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.values or self.deletes)

    def keys(self) -> list[str]:
        return sorted(set(self.values) | set(self.deletes))

    def entry(self, key: str) -> list | None:
        """`["value", v]`, `["delete", force]` or None: what is pending for `key`."""
        if key in self.values:
            return ["value", self.values[key]]
        if key in self.deletes:
            return ["delete", bool(self.deletes[key])]
        return None


def of(guest: dict) -> Pending:
    """The guest record's pending changes (copies)."""
    return Pending(dict(guest.get("pending") or {}), dict(guest.get("pending_delete") or {}))


def is_fast_plug(key: str) -> bool:
    return key in FAST_PLUG or bool(CLOUDINIT_IPCONFIG.fullmatch(key))


def is_drive(key: str) -> bool:
    return bool(DISK_KEY.fullmatch(key))


def hotplug_features(value) -> frozenset[str]:
    """The guest's `hotplug` option: `0` none, `1` or unset the default `network,disk,usb`, else the listed ones
    (qemu-server's parse_hotplug_features; unknown words are ignored here, refused when set)."""
    text = "1" if value is None else str(value).strip()
    if text == "0":
        return frozenset()
    if text == "1":
        return HOTPLUG_DEFAULT
    return frozenset(f for f in re.split(r"[,;\s]+", text) if f in HOTPLUG_FEATURES)


def _text(value) -> str:
    """Config values compared as Proxmox compares them: as the text of the config file."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def same(a, b) -> bool:
    return _text(a) == _text(b)


# ---- unused volumes ------------------------------------------------------------------------------
def keep_unused(vmid: int, conf: dict, value: str) -> dict:
    """`conf` with the volume of drive `value` kept as the lowest free `unusedN`, if it is the guest's own image and
    not referenced already (qemu-server's vmconfig_register_unused_drive and add_unused_volume)."""
    if is_cdrom(value) or not owned_volumes(vmid, {"scsi0": value}):
        return conf
    volid = volume_of(value)
    if any((is_drive(k) or k.startswith("unused")) and volume_of(str(v)) == volid for k, v in conf.items()):
        return conf
    taken = {int(k[6:]) for k in conf if re.fullmatch(r"unused\d+", k)}
    n = next((i for i in range(256) if i not in taken), None)
    if n is None:
        raise bad_request("Too many unused volumes - please delete them first.")
    return {**conf, f"unused{n}": volid}


def drop_reattached(conf: dict) -> dict:
    """`unusedN` entries whose volume a drive uses again go (qemu-server's write_vm_config)."""
    used = {volume_of(str(v)) for k, v in conf.items() if is_drive(k)}
    return {k: v for k, v in conf.items() if not (k.startswith("unused") and str(v) in used)}


# ---- writing changes into pending ------------------------------------------------------------------
def cleanup(conf: dict, pend: Pending) -> Pending:
    """Proxmox's cleanup_pending: a value equal to the current one, or a delete of an unset key, is not pending."""
    return Pending({k: v for k, v in pend.values.items() if not (k in conf and same(conf[k], v))},
                   {k: f for k, f in pend.deletes.items() if k in conf})


def stage(vmid: int, conf: dict, pend: Pending, values: dict, delete: Iterable[str] = (),
          revert: Iterable[str] = (), force: bool = False) -> tuple[dict, Pending]:
    """A config request written into pending, as Proxmox's update_vm_api writes it (before anything is applied).
    Returns the config (a disk volume that a dropped pending value named is kept as `unusedN`; `unusedN` and
    `vmstate` are deleted at once, as Proxmox does) and the new pending changes.
    `revert` drops a key's pending change; `force` marks the deletes as forced."""
    conf, vals, dels = dict(conf), dict(pend.values), dict(pend.deletes)

    def drop_value(key: str) -> None:
        nonlocal conf
        old = vals.pop(key, None)
        if old is not None and is_drive(key):
            conf = keep_unused(vmid, conf, str(old))

    for key in revert:
        drop_value(key)
        dels.pop(key, None)
    for key in delete:
        if re.fullmatch(r"unused\d+", key) or key == "vmstate":
            conf.pop(key, None)
            continue
        drop_value(key)
        if key in conf:
            dels[key] = bool(force)
    for key, value in values.items():
        if key in vals and same(vals[key], value):
            continue
        drop_value(key)
        vals[key] = value
        dels.pop(key, None)
    return conf, cleanup(conf, Pending(vals, dels))


# ---- what applies now ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """Of a guest's pending keys: `now` apply without QEMU, `plug` apply through QEMU (hotplug, unplug, a CD-ROM's
    medium; they stay pending if that fails); the others wait for the next start."""

    now: tuple[str, ...] = ()
    plug: tuple[str, ...] = ()


def plan(conf: dict, pend: Pending, running: bool, selection: Iterable[str] | None = None) -> Plan:
    """What of `pend` applies now. A guest that does not run takes everything (vmconfig_apply_pending). A running
    one takes the fast-plug keys, and of the keys in `selection` (those the request changed; None: all) what
    vmconfig_hotplug_pending applies, within its `hotplug` features."""
    keys = pend.keys()
    if not running:
        return Plan(now=tuple(keys))
    chosen = None if selection is None else set(selection)
    features = hotplug_features(conf.get("hotplug"))
    now, plug = [], []
    for key in keys:
        if is_fast_plug(key):
            now.append(key)
            continue
        if chosen is not None and key not in chosen:
            continue
        action = hot_action(key, conf.get(key), pend.values.get(key), key in pend.deletes, features)
        if action == NOW:
            now.append(key)
        elif action == PLUG:
            plug.append(key)
    return Plan(tuple(now), tuple(plug))


def _props(value, default_key: str | None = None) -> dict[str, str]:
    return property_string(str(value), default_key, strict=False)


def _features_with(value, *wanted: str) -> bool:
    return bool(set(wanted) & hotplug_features(value)) if value is not None else False


def hot_action(key: str, old, new, deleting: bool, features: frozenset[str]) -> str | None:
    """How a running guest takes one change of `key` (from `old`, None: unset) to `new` (or its deletion):
    NOW (nothing QEMU runs changes), PLUG (through QMP) or None (at the next start). qemu-server's
    vmconfig_hotplug_pending, vmconfig_update_net and vmconfig_update_disk; gpve has no CPU, memory or USB
    hotplug, and re-plugs a changed NIC where Proxmox re-attaches its tap in place."""
    if is_fast_plug(key):
        return NOW
    if key == "hotplug":  # turning CPU or memory hotplug on or off needs a restart
        if _features_with(old, "cpu", "memory") or (not deleting and _features_with(new, "cpu", "memory")):
            return None
        return NOW
    if key in ("cpuunits", "cpulimit"):  # Proxmox changes the cgroup; gpve enforces neither
        return NOW
    if key == "balloon":  # the target is free; adding or removing the balloon device is not
        had = old is None or _text(old) != "0"
        if deleting:
            return NOW if had else None
        return NOW if had == (_text(new) != "0") else None
    if key == "agent":  # only fstrim_cloned_disks changes at runtime (vmconfig_update_agent)
        if deleting or not old:
            return None
        strip = ("fstrim_cloned_disks",)
        a = {k: v for k, v in _props(old, "enabled").items() if k not in strip}
        b = {k: v for k, v in _props(new, "enabled").items() if k not in strip}
        return NOW if a == b else None
    if NET_KEY.fullmatch(key):
        return PLUG if "network" in features else None
    if is_drive(key):
        return _drive_action(key, old, new, deleting, features)
    return None


def _drive_action(key: str, old, new, deleting: bool, features: frozenset[str]) -> str | None:
    bus = re.match(r"[a-z]+", key).group()  # type: ignore[union-attr]
    if bus in ("efidisk", "tpmstate"):
        return None
    pluggable = "disk" in features and bus not in ("ide", "sata")
    if deleting or old is None:
        return PLUG if pluggable else None
    if is_cloudinit(str(old)) or is_cloudinit(str(new)):  # a cloud-init drive plugs as a disk does
        return PLUG if pluggable else None
    if is_cdrom(str(old)) or is_cdrom(str(new)):
        return PLUG  # a CD-ROM's medium changes on any bus (a change of media type fails there)
    if volume_of(str(old)) != volume_of(str(new)):
        return PLUG if pluggable else None
    a, b = _props(old, "file"), _props(new, "file")
    if any(a.get(opt) != b.get(opt) for opt in COLD_DRIVE_OPTIONS):
        return None
    return NOW  # size, backup, serial, throttling, ...: gpve's QEMU command line does not use them


# ---- applying ------------------------------------------------------------------------------------
def _detached(vmid: int, conf: dict, old: str, force: bool) -> tuple[dict, list[str]]:
    """A drive value that leaves the config: its volume kept as `unusedN`, or returned to be destroyed when the
    delete is forced or it is a cloud-init drive (vmconfig_register_unused_drive frees those)."""
    if force or is_cloudinit(old):
        return conf, owned_volumes(vmid, {"scsi0": old})
    return keep_unused(vmid, conf, old), []


def commit(vmid: int, conf: dict, pend: Pending, keys: Iterable[str]) -> tuple[dict, Pending, list[str]]:
    """Move `keys` from pending into the config (one entry each, as vmconfig_apply_pending applies it). A disk
    replaced or deleted keeps its volume as `unusedN`; a forced delete, or a cloud-init drive, instead returns the
    volume, for the caller to destroy (it checks first that no snapshot uses a forced delete's). Returns (config,
    pending, volumes to destroy)."""
    conf, vals, dels = dict(conf), dict(pend.values), dict(pend.deletes)
    doomed: list[str] = []
    for key in keys:
        if key in dels:
            force = dels.pop(key)
            old = conf.pop(key, None)
            if old is not None and is_drive(key):
                conf, gone = _detached(vmid, conf, str(old), bool(force))
                doomed += gone
        elif key in vals:
            new = vals.pop(key)
            old = conf.get(key)
            conf[key] = new
            if old is not None and is_drive(key) and volume_of(str(old)) != volume_of(str(new)):
                conf, gone = _detached(vmid, conf, str(old), False)
                doomed += gone
    conf = drop_reattached(conf)
    return conf, cleanup(conf, Pending(vals, dels)), doomed


def destroys(vmid: int, conf: dict, pend: Pending, key: str) -> bool:
    """Whether applying `key`'s pending change destroys a volume (a forced delete, a cloud-init drive replaced or
    deleted): work for the guest's node, never for the log alone."""
    return bool(commit(vmid, conf, pend, [key])[2])


def released(vmid: int, conf: dict, pend: Pending, conf_after: dict, pend_after: Pending) -> list[str]:
    """The guest's cloud-init volumes that its config or pending changes named and name no more (a pending
    cloud-init drive reverted or replaced before it applied): freed, as vmconfig_register_unused_drive frees them."""
    def named(c: dict, p: Pending) -> set[str]:
        return {v for v in owned_volumes(vmid, c) + owned_volumes(vmid, p.values) if is_cloudinit(v)}
    return sorted(named(conf, pend) - named(conf_after, pend_after))


def applied(conf: dict, pend: Pending) -> dict:
    """The config with its pending changes applied: what `GET …/config` shows (AbstractConfig load_current_config)."""
    out = {**conf, **pend.values}
    for key in pend.deletes:
        out.pop(key, None)
    return out


def sections(guest: dict) -> dict:
    """The guest's snapshots and its pending values (as `[PENDING]`, a name no snapshot has): where else than its
    config a volume of the guest may be named (engine/volumes.py `volume_in_use` scans them)."""
    pend = of(guest)
    return {**guest.get("snapshots", {}), **({"[PENDING]": pend.values} if pend.values else {})}


def is_live(state, guest: dict) -> bool:
    """Whether a change to `guest` must wait: it runs, or a start of it is under way (its QEMU may be launched
    with the config the start task read)."""
    if guest.get("status") == "running":
        return True
    vmid = guest["vmid"]
    return any(state.tasks[u].get("vmid") == vmid and state.tasks[u]["type"] == "qmstart"
               for u in state.running_tasks)


# ---- the config file and the API -----------------------------------------------------------------
def render_delete(deletes: dict) -> str:
    """`{a: False, b: True}` -> `a,!b` (AbstractConfig print_pending_delete)."""
    return ",".join(("!" if deletes[k] else "") + k for k in sorted(deletes))


def parse_delete(text: str) -> dict:
    """`a,!b` -> {a: False, b: True} (AbstractConfig parse_pending_delete)."""
    out = {}
    for entry in re.split(r"[,;\s]+", str(text or "").strip()):
        if entry:
            out[entry.lstrip("!")] = entry.startswith("!")
    return out


def section(pend: Pending) -> dict:
    """The `[PENDING]` section of the config file: the pending values and a `delete:` line."""
    out = dict(pend.values)
    if pend.deletes:
        out["delete"] = render_delete(pend.deletes)
    return out


def rows(conf: dict, pend: Pending) -> list[dict]:
    """`GET …/pending`: one row per key, `{key, value?, pending?, delete?}` (GuestHelpers config_with_pending_array;
    delete 1, or 2 when forced). `conf` may carry `digest`, which Proxmox lists too."""
    out = []
    for key in sorted(conf):
        row = {"key": key, "value": conf[key]}
        if key in pend.values:
            row["pending"] = pend.values[key]
        if key in pend.deletes:
            row["delete"] = 2 if pend.deletes[key] else 1
        out.append(row)
    out += [{"key": k, "pending": v} for k, v in sorted(pend.values.items()) if k not in conf]
    out += [{"key": k, "delete": 2 if f else 1} for k, f in sorted(pend.deletes.items()) if k not in conf]
    return out


# ---- a task's outcome as a patch ---------------------------------------------------------------------
def diff(before: Pending, after: Pending) -> dict:
    """What a task changed in a guest's pending changes, from the copy it was given (`before`) to its result:
    `{"values": {k: v}, "deletes": {k: force}, "applied": {k: entry}}`; `applied` names the entries it took in (or
    dropped) as it saw them, so that a change staged meanwhile survives (`patch`)."""
    out: dict = {"values": {}, "deletes": {}, "applied": {}}
    for key in sorted(set(before.keys()) | set(after.keys())):
        was, now = before.entry(key), after.entry(key)
        if now is None and was is not None:
            out["applied"][key] = was
        elif now is not None and now != was:
            out["values" if now[0] == "value" else "deletes"][key] = now[1]
    return out


def patch(conf: dict, pend: Pending, change: dict) -> Pending:
    """`pend` (the guest's pending changes now) with a task's `diff` applied over it, then cleaned up against
    the guest's new `conf`. An applied entry goes only if it is still what the task saw."""
    vals, dels = dict(pend.values), dict(pend.deletes)
    for key, seen in change.get("applied", {}).items():
        if Pending(vals, dels).entry(key) == list(seen):
            vals.pop(key, None)
            dels.pop(key, None)
    for key, value in change.get("values", {}).items():
        vals[key] = value
        dels.pop(key, None)
    for key, force in change.get("deletes", {}).items():
        dels[key] = bool(force)
        vals.pop(key, None)
    return cleanup(conf, Pending(vals, dels))
