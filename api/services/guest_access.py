"""Who may write which guest config keys, with which volumes and devices: Proxmox's privilege model for
guest configs, declared once for every transport.

Source: qemu-server `PVE/API2/Qemu.pm`: `$check_vm_modify_config_perm` and its option groups
(`$cpuoptions`, `$memoryoptions`, `$hwtypeoptions`, `$generaloptions`, `$vmpoweroptions`,
`$diskoptions`, `$cloudinitoptions`), `$check_storage_access`, `check_vm_create_serial_perm`,
`check_usb_perm`, `check_hostpci_perm`, `check_rng_perm`, `check_dir_perm`, `$check_cpu_model_access`,
`$check_storage_access_clone`, and the create, update, clone, resize and migrate endpoints; pve-storage
`check_volume_access`; pve-guest-common `check_hookscript`.

Every check takes `held`, a privilege lookup (ACL path -> what the caller holds there; `held_in`), and
the caller's id. Only root@pam itself passes the root-only checks (its API tokens do not, as in
Proxmox). Values are checked first, for everyone (ParamErrors, 400: `unable to parse volume ID '…'`,
a cicustom part outside snippets), privileges after (ApiError 403: `Permission denied - missing
'VM.Config.Memory' on '/vms/100'`, `only root can set 'args' config`, `Only root can pass arbitrary
filesystem paths.`). Nothing here writes anything: a refusal leaves the config as it was.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from api.errors import ApiError, forbidden
from api.schema import ParamErrors, Permission
from engine.cloudinit import CloudinitError, check_value
from engine.pending import HOTPLUG_FEATURES
from engine.roles import privileges_on
from engine.volumes import (
    Drive,
    Volume,
    VolumeError,
    drive_props,
    is_cdrom,
    is_cloudinit,
    is_host_path,
    parse_drive,
    parse_import_source,
    parse_volume,
    property_string,
    volume_of,
)

Held = Callable[[str], frozenset[str]]
ROOT = "root@pam"
CONFIG_PRIVILEGES = ("VM.Config.Disk", "VM.Config.CDROM", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network",
                     "VM.Config.HWType", "VM.Config.Options", "VM.Config.Cloudinit")


@dataclass(frozen=True)
class KeyRule:
    """Keys (`numa[n]` is a family) that need `privileges` on the guest, any one of them if `any`, and the
    (privilege, ACL path) pairs in `extra` besides."""

    keys: tuple[str, ...]
    privileges: tuple[str, ...]
    any: bool = False
    extra: tuple[tuple[str, str], ...] = ()


KEY_RULES = (
    KeyRule(("cores", "cpu", "cpulimit", "cpuunits", "numa", "numa[n]", "smp", "sockets", "vcpus"), ("VM.Config.CPU",)),
    KeyRule(("memory", "balloon", "shares", "allow-ksm"), ("VM.Config.Memory",)),
    KeyRule(("acpi", "hotplug", "kvm", "machine", "scsihw", "smbios1", "tablet", "vga", "watchdog", "audio0", "rng0"),
            ("VM.Config.HWType",)),
    KeyRule(("agent", "autostart", "bios", "description", "keyboard", "localtime", "migrate_downtime", "migrate_speed",
             "name", "onboot", "ostype", "protection", "reboot", "startdate", "tdf", "template", "tags"),
            ("VM.Config.Options",)),
    KeyRule(("startup",), ("VM.Config.Options",), extra=(("Sys.Modify", "/"),)),  # it changes host behaviour
    KeyRule(("freeze",), ("VM.PowerMgmt",)),
    KeyRule(("boot", "bootdisk", "vmstatestorage"), ("VM.Config.Disk",)),
    KeyRule(("net[n]",), ("VM.Config.Network",)),
    KeyRule(("cicustom", "cipassword", "citype", "ciuser", "ciupgrade", "nameserver", "searchdomain", "sshkeys",
             "ipconfig[n]"), ("VM.Config.Cloudinit", "VM.Config.Network"), any=True),
)
DRIVE_KEY = re.compile(r"(ide|sata|scsi|virtio)\d+|efidisk0|tpmstate0")
BY_VALUE = re.compile(r"(unused|serial|usb|hostpci|virtiofs)\d+")  # their privileges depend on the value
DEVICE_KEY = re.compile(r"(usb|hostpci|virtiofs)\d+|rng0")
# Every other key (args, hookscript, affinity, parallelN, lock, vmgenid, hugepages, ivshmem, arch, ...) is root's.
CICUSTOM_PARTS = ("meta", "network", "user", "vendor")
_RULES = {key: rule for rule in KEY_RULES for key in rule.keys}


def key_rule(key: str) -> KeyRule | None:
    """The rule of a plain config key; None for drives and value-dependent keys, and for root-only keys."""
    return _RULES.get(key) or _RULES.get(re.sub(r"\d+$", "[n]", key))


def describe() -> str:
    """The per-key rules in words, for the endpoints' permission descriptions (and so the OpenAPI document)."""
    groups = "; ".join(f"{'|'.join(r.privileges) if r.any else ', '.join(r.privileges)}"
                       f"{''.join(f' + {p} on {path}' for p, path in r.extra)}: {', '.join(r.keys)}"
                       for r in KEY_RULES)
    return (f"Each key needs its privilege on /vms/{{vmid}}: {groups}. Disks need VM.Config.Disk (CD-ROMs "
            "VM.Config.CDROM), new volumes Datastore.AllocateSpace on /storage/STORAGE, existing volumes what "
            "pve-storage's check_volume_access asks; serialN=socket, usbN=spice and mapped devices need "
            "VM.Config.HWType (and Mapping.Use on the mapping); host devices, absolute paths and every other key "
            "(args, hookscript, affinity, parallelN, lock, ...) are root@pam's only.")


def held_in(state, user: str) -> Held:
    """The caller's privileges on each ACL path in `state` (use it while the state is held)."""
    return functools.cache(lambda path: privileges_on(state, user, path))


# ---- privilege checks --------------------------------------------------------------------------
def _satisfied(have: frozenset[str], privileges: Iterable[str], any_: bool) -> bool:
    wanted = set(privileges)
    return bool(wanted & have) if any_ else wanted <= have


def _require(held: Held, privileges: tuple[str, ...], path: str, any_: bool = False) -> None:
    have = held(path)
    if not _satisfied(have, privileges, any_):
        raise forbidden("|".join(privileges) if any_ else next(p for p in privileges if p not in have), path)


def _require_vm(held: Held, vmid: int, pool: str | None, privileges: tuple[str, ...], any_: bool = False) -> None:
    """Proxmox's `check_vm_perm`: on the pool the new guest goes into, or else on the guest."""
    if pool and _satisfied(held(f"/pool/{pool}"), privileges, any_):
        return
    _require(held, privileges, f"/vms/{vmid}", any_)


def _root_only(user: str, message: str) -> None:
    if user != ROOT:
        raise ApiError(403, message)


def check_keys(held: Held, user: str, vmid: int, keys: Iterable[str], pool: str | None = None) -> None:
    """`$check_vm_modify_config_perm`: each plain key needs its group's privilege; unknown keys are root's."""
    if user == ROOT:
        return
    for key in sorted(keys):
        if DRIVE_KEY.fullmatch(key) or BY_VALUE.fullmatch(key):
            continue
        rule = key_rule(key)
        if rule is None:
            raise ApiError(403, f"only root can set '{key}' config")
        _require_vm(held, vmid, pool, rule.privileges, rule.any)
        for privilege, path in rule.extra:
            _require(held, (privilege,), path)


def check_volume_access(held: Held, user: str, vmid: int | None, volid: str, content: str | None = None) -> None:
    """pve-storage `check_volume_access`: may the caller use this existing volume (or host path)? root@pam may;
    a snippet needs Datastore.Allocate on its storage (it may hold another guest's secrets)."""
    if user == ROOT:
        return
    if is_host_path(volid):
        _root_only(user, "Only root can pass arbitrary filesystem paths.")
        return
    volume = parse_volume(volid)
    if content and volume.vtype != content:
        raise ApiError(400, f"unable to use volume {volid} - content type needs to be '{content}'")
    path = f"/storage/{volume.storage}"
    if "Datastore.Allocate" in held(path):
        return
    if volume.vtype in ("iso", "vztmpl", "import"):  # templates, ISOs, images to import may be sensitive: read access
        _require(held, ("Datastore.AllocateSpace", "Datastore.Audit"), path, any_=True)
    elif volume.owner is not None and volume.owner == vmid:
        return
    elif volume.vtype == "backup" and volume.owner:
        _require(held, ("Datastore.AllocateSpace",), path)
        _require(held, ("VM.Backup",), f"/vms/{volume.owner}")
    elif volume.vtype == "images" and volume.owner:
        _require(held, ("Datastore.Audit",), path)
        _require(held, ("VM.Config.Disk",), f"/vms/{volume.owner}")
    elif volume.vtype == "snippets":
        _require(held, ("Datastore.Allocate",), path)
    else:
        raise ApiError(403, f"missing privileges to access {volid}")


# ---- values --------------------------------------------------------------------------------
def _snippet(volid: str, message: str) -> None:
    if parse_volume(volid).vtype != "snippets":
        raise VolumeError(message)


def _props(value: str, default_key: str | None) -> dict[str, str]:
    """A device's property string, read as QEMU reads it (the last of a key wins); its leading bare value is
    `default_key` (`usb0=spice` is `host=spice`)."""
    return property_string(value, default_key, strict=False)


def _check_value(key: str, value: str) -> None:
    if DRIVE_KEY.fullmatch(key):
        if parse_drive(value, key).kind == "cloudinit" and key in ("efidisk0", "tpmstate0"):  # a CD-ROM bus only
            raise VolumeError("unable to parse directory volume name 'cloudinit'")
    elif key.startswith("unused"):
        file = drive_props(value).get("file", "")
        if not file or is_host_path(file):
            raise VolumeError(f"not a valid volid: {file}")
        if parse_volume(file).vtype != "images":
            raise VolumeError(f"unable to use volume {file} - content type needs to be 'images'")
    elif key == "cicustom":
        for part, volid in _props(value, None).items():
            if part not in CICUSTOM_PARTS:
                raise VolumeError(f"property '{part}' is not defined (one of {', '.join(CICUSTOM_PARTS)})")
            _snippet(volid, f"{volid} is not in the snippets directory")
    elif key == "hookscript":
        _snippet(str(value), f"'{value}' is not in the snippets directory")
    elif re.fullmatch(r"(usb|hostpci)\d+", key):
        props = _props(value, "host")
        if not props.get("host") and not props.get("mapping"):
            raise VolumeError("either 'host' or 'mapping' must be set.")
    elif re.fullmatch(r"virtiofs\d+", key) and not _props(value, "dirid").get("dirid"):
        raise VolumeError("property 'dirid' is missing")
    elif key == "hotplug" and value not in ("0", "1"):  # qemu-server's parse_hotplug_features
        wrong = [f for f in re.split(r"[,;\s]+", value.strip()) if f not in HOTPLUG_FEATURES]
        if wrong:
            raise VolumeError(f"invalid format - invalid hotplug feature '{wrong[0]}'")
    else:
        check_value(key, value)  # ipconfigN, sshkeys, nameserver


def check_values(values: dict, conf: dict | None = None, delete: Iterable[str] = ()) -> None:
    """Every value that names a volume, a path or a device parses (for root@pam too), and cloud-init values
    have their formats; ParamErrors names each bad key. With the guest's `conf` (and the keys deleted), a second
    cloud-init drive is refused (ApiError 400 with qemu-server's message)."""
    errors = {}
    for key, value in sorted(values.items()):
        try:
            _check_value(key, str(value))
        except (VolumeError, CloudinitError) as exc:
            errors[key] = str(exc)
    if errors:
        raise ParamErrors(errors)
    present = sorted(k for k, v in (conf or {}).items() if DRIVE_KEY.fullmatch(k) and is_cloudinit(str(v))
                     and k not in values and k not in delete)
    for key in sorted(k for k, v in values.items() if DRIVE_KEY.fullmatch(k) and is_cloudinit(str(v))):
        if present:
            raise ApiError(400, f"{key} - cloud-init drive is already attached at '{present[0]}'")
        present.append(key)


# ---- value-dependent privileges ------------------------------------------------------------------
def _drive_storage(held: Held, user: str, vmid: int, drive: Drive) -> None:
    """`$check_storage_access` for one drive; an `import-from` source needs VM.Clone on the guest owning it (an
    `images` volume), what `check_volume_access` asks (an `import` volume), or root@pam (a host path)."""
    if drive.kind == "host-cdrom":
        _require(held, ("Sys.Console",), "/")
    elif drive.kind == "alloc":
        _require(held, ("Datastore.AllocateSpace",), f"/storage/{drive.file.partition(':')[0]}")
    elif drive.kind in ("path", "volume"):
        check_volume_access(held, user, vmid, drive.file)
    if drive.import_from is not None:
        source = parse_import_source(drive.import_from)
        if source is not None and source.owner is not None:
            _require(held, ("VM.Clone",), f"/vms/{source.owner}")
        else:
            check_volume_access(held, user, vmid, drive.import_from)


def _check_storage(held: Held, user: str, vmid: int, values: dict) -> None:
    for key, value in sorted(values.items()):
        if DRIVE_KEY.fullmatch(key):
            _drive_storage(held, user, vmid, parse_drive(str(value), key))
        elif key.startswith("unused"):
            check_volume_access(held, user, vmid, drive_props(str(value))["file"], "images")
    if values.get("vmstatestorage"):
        _require(held, ("Datastore.AllocateSpace",), f"/storage/{values['vmstatestorage']}")
    if values.get("cicustom") is not None:  # before the snippets' existence is checked: no oracle
        for volid in _props(str(values["cicustom"]), None).values():
            check_volume_access(held, user, vmid, volid)


def _check_mapping(held: Held, user: str, key: str, value: str) -> None:
    """`check_mapping_access`: host USB and PCI devices are root@pam's; mapped devices (and the host's hardware
    RNG, and shared directories) need Mapping.Use on their mapping."""
    if user == ROOT:
        return
    props = _props(value, "host")
    if re.fullmatch(r"usb\d+", key) and props.get("host") and props["host"].lower() != "spice":
        raise ApiError(403, f"only root can set '{key}' config for real devices")
    if re.fullmatch(r"hostpci\d+", key) and props.get("host"):
        raise ApiError(403, f"only root can set '{key}' config for non-mapped devices")
    if re.fullmatch(r"(usb|hostpci)\d+", key) and props.get("mapping"):
        _require(held, ("Mapping.Use",), f"/mapping/{'usb' if key.startswith('usb') else 'pci'}/{props['mapping']}")
    if key == "rng0" and _props(value, "source").get("source") == "/dev/hwrng":
        _require(held, ("Mapping.Use",), "/mapping/hwrng")
    if re.fullmatch(r"virtiofs\d+", key):
        _require(held, ("Mapping.Use",), f"/mapping/dir/{_props(value, 'dirid').get('dirid')}")


def _check_device(held: Held, user: str, vmid: int, pool: str | None, key: str, value: str) -> None:
    """usbN, hostpciN, rng0, virtiofsN (`check_usb_perm`, `check_hostpci_perm`, `check_rng_perm`,
    `check_dir_perm`): the mapping rules, and VM.Config.HWType (VM.Config.Disk for a shared directory)."""
    if user == ROOT or not DEVICE_KEY.fullmatch(key):
        return
    _check_mapping(held, user, key, value)
    _require_vm(held, vmid, pool, ("VM.Config.Disk",) if key.startswith("virtiofs") else ("VM.Config.HWType",))
    if key.startswith("hostpci") and "romfile" in _props(value, "host"):
        raise ParamErrors({key: "only root@pam can set 'romfile' option"})


def _check_cpu_model(held: Held, new: dict, old: dict | None = None) -> None:
    """`$check_cpu_model_access`: a custom CPU model needs Mapping.Use on it, unless it is unchanged."""
    def model(conf: dict | None) -> str:
        return _props(str((conf or {}).get("cpu", "")), "cputype").get("cputype", "")
    cputype = model(new)
    if cputype.startswith("custom-") and cputype != model(old):
        _require(held, ("Mapping.Use",), f"/mapping/cpu/{cputype.removeprefix('custom-')}")


def _drive_privileges(value: str) -> tuple[str, ...]:
    """A cloud-init drive needs both VM.Config.Cloudinit and VM.Config.CDROM (update_vm's check_drive_perms)."""
    if is_cloudinit(value):
        return ("VM.Config.Cloudinit", "VM.Config.CDROM")
    return ("VM.Config.CDROM",) if is_cdrom(value) else ("VM.Config.Disk",)


# ---- the operations ------------------------------------------------------------------------------
CREATE_PERMISSION = Permission(
    "VM.Allocate", "/vms/{vmid}", alternative=Permission("VM.Allocate", "/pool/{pool}"),
    description="VM.Allocate on /vms/{vmid} or on the pool /pool/{pool}; Datastore.AllocateSpace on 'storage'; "
                "VM.PowerMgmt for 'start'; new disks need Datastore.AllocateSpace on their storage. " + describe())
CONFIG_PERMISSION = Permission(CONFIG_PRIVILEGES, "/vms/{vmid}", description=describe())
CLONE_PERMISSION = Permission(
    "VM.Clone", "/vms/{vmid}",
    also=Permission("VM.Allocate", "/vms/{newid}", alternative=Permission("VM.Allocate", "/pool/{pool}")),
    description="VM.Clone on /vms/{vmid} and VM.Allocate on /vms/{newid} (or on /pool/{pool}); "
                "Datastore.AllocateSpace on the storage of every disk copied (the target 'storage' if given); "
                "host USB and PCI devices are root@pam's only, mapped ones need Mapping.Use.")
RESIZE_PERMISSION = Permission("VM.Config.Disk", "/vms/{vmid}",
                               description="and Datastore.AllocateSpace on the disk's storage")


def resolve_cdrom_alias(values: dict, delete: Iterable[str] = ()) -> tuple[dict, list[str]]:
    """Proxmox's `$resolve_cdrom_alias`: `cdrom=X` is `ide2=X,media=cdrom` (set or deleted)."""
    values = dict(values)
    if "cdrom" in values:
        value = str(values.pop("cdrom"))
        values["ide2"] = value if "media=" in value else f"{value},media=cdrom"
    return values, ["ide2" if key == "cdrom" else key for key in delete]


def check_create(held: Held, user: str, vmid: int, config: dict, pool: str | None = None,
                 storage: str | None = None, start: bool = False) -> None:
    """Create (`POST /nodes/{node}/qemu`), after CREATE_PERMISSION: `config` holds the keys the caller gave."""
    check_values(config)
    if storage:
        _require(held, ("Datastore.AllocateSpace",), f"/storage/{storage}")
    if start:
        _require_vm(held, vmid, pool, ("VM.PowerMgmt",))
    _check_storage(held, user, vmid, config)
    check_keys(held, user, vmid, config, pool)
    for key, value in sorted(config.items()):
        if re.fullmatch(r"serial\d+", key) and user != ROOT:
            if value != "socket":
                raise ApiError(403, f"only root can set '{key}' config for real devices")
            _require_vm(held, vmid, pool, ("VM.Config.HWType",))
        _check_device(held, user, vmid, pool, key, str(value))
    _check_cpu_model(held, config)


def _destroyed(held: Held, vmid: int, old: str) -> None:
    """qemu-server's `try_deallocate_drive`: destroying a volume the guest owns needs Datastore.AllocateSpace on
    its storage (a volume of another owner only leaves the config)."""
    volid = volume_of(old)
    try:
        volume = parse_volume(volid)
    except VolumeError:
        return
    if volume.vtype == "images" and volume.owner == vmid:
        _require(held, ("Datastore.AllocateSpace",), f"/storage/{volume.storage}")


def check_update(held: Held, user: str, vmid: int, changes: dict, delete: Iterable[str], conf: dict,
                 force: bool = False) -> None:
    """PUT/POST `…/config` (and `…/unlink`), after CONFIG_PERMISSION: keys set (`changes`) and deleted, against
    the current `conf` (deleting a disk or changing a device is judged by its old value too). Deleting `unusedN`,
    or a disk with `force`, destroys the volume: VM.Config.Disk and, for the guest's own volume,
    Datastore.AllocateSpace on its storage (`vmconfig_delete_or_detach_drive`, `try_deallocate_drive`)."""
    delete = list(delete)
    check_values(changes, conf, delete)
    check_keys(held, user, vmid, delete)
    check_keys(held, user, vmid, changes)
    _check_storage(held, user, vmid, changes)
    _check_cpu_model(held, changes, conf)
    for key in delete:
        old = conf.get(key)
        if old is None:
            continue
        if key.startswith("unused"):
            _require(held, ("VM.Config.Disk",), f"/vms/{vmid}")
            _destroyed(held, vmid, str(old))
        elif DRIVE_KEY.fullmatch(key):
            _require(held, _drive_privileges(str(old)), f"/vms/{vmid}")
            if force and not is_cdrom(str(old)):
                _require(held, ("VM.Config.Disk",), f"/vms/{vmid}")
                _destroyed(held, vmid, str(old))
        elif re.fullmatch(r"serial\d+", key):
            if old == "socket":
                _require(held, ("VM.Config.HWType",), f"/vms/{vmid}")
            else:
                _root_only(user, f"only root can delete '{key}' config for real devices")
        else:
            _check_device(held, user, vmid, None, key, str(old))
    for key, value in sorted(changes.items()):
        old = conf.get(key)
        if DRIVE_KEY.fullmatch(key):
            if old is not None:
                _require(held, _drive_privileges(str(old)), f"/vms/{vmid}")
            _require(held, _drive_privileges(str(value)), f"/vms/{vmid}")
        elif re.fullmatch(r"serial\d+", key):
            if old in (None, "socket") and value == "socket":
                _require(held, ("VM.Config.HWType",), f"/vms/{vmid}")
            else:
                _root_only(user, f"only root can modify '{key}' config for real devices")
        else:
            if old is not None:
                _check_device(held, user, vmid, None, key, str(old))
            _check_device(held, user, vmid, None, key, str(value))


def check_clone(held: Held, user: str, source: dict, storage: str | None = None) -> None:
    """Clone, after CLONE_PERMISSION: what copying `source` (the config or snapshot cloned) needs
    (`$check_storage_access_clone`, `check_mapping_access`, `$check_cpu_model_access`)."""
    for key, value in sorted(source.items()):
        if not DRIVE_KEY.fullmatch(key):
            continue
        file = volume_of(str(value))
        if not file or file == "none":
            continue
        if is_host_path(file):  # not cloned, not even for root (Proxmox's parse_volume_id refuses it)
            raise ApiError(400, f"unable to parse volume ID '{file}'")
        if is_cdrom(str(value)):  # a CD-ROM is shared with the clone as it is
            if file == "cdrom":
                _require(held, ("Sys.Console",), "/")
            continue
        try:
            volume = parse_volume(file)
        except VolumeError as exc:
            raise ApiError(400, str(exc)) from None
        _require(held, ("Datastore.AllocateSpace",), f"/storage/{storage or volume.storage}")
    if source.get("vmstatestorage"):
        _require(held, ("Datastore.AllocateSpace",), f"/storage/{source['vmstatestorage']}")
    for key, value in sorted(source.items()):
        _check_mapping(held, user, key, str(value))
    _check_cpu_model(held, source)


def check_resize(held: Held, vmid: int, disk: str, conf: dict) -> Volume:
    """Resize, after RESIZE_PERMISSION: the disk must be a volume (not a CD-ROM, not a host path) on a storage
    the caller may allocate on. Returns the volume."""
    if disk not in conf:
        raise ParamErrors({"disk": f"disk '{disk}' does not exist"})
    file = volume_of(str(conf[disk]))
    if not file or file == "none":
        raise ApiError(400, f"disk '{disk}' has no associated volume")
    if is_cdrom(str(conf[disk])):
        raise ApiError(400, "you can't resize a cdrom")
    try:
        volume = parse_volume(file)
    except VolumeError as exc:
        raise ApiError(400, f"unable to parse volume ID '{file}'" if is_host_path(file) else str(exc)) from None
    _require(held, ("Datastore.AllocateSpace",), f"/storage/{volume.storage}")
    return volume


def check_migrate(held: Held, user: str, vmid: int, params: dict) -> None:
    """Migrate: root-only options, and a `targetstorage` map needs VM.Config.Disk (unless it is the identity
    `1`) and Datastore.AllocateSpace on each target storage (`$check_storage_access_migrate`)."""
    root_only = {k: "Only root may use this option." for k in ("force", "migration_type", "migration_network")
                 if params.get(k) and user != ROOT}
    if root_only:
        raise ParamErrors(root_only)
    entries = [e for e in re.split(r"[,;\s]+", str(params.get("targetstorage") or "")) if e]
    if entries in ([], ["1"]):  # none, or the identity map: every disk stays on a storage of the same name
        return
    _require(held, ("VM.Config.Disk",), f"/vms/{vmid}")
    for target in sorted({e.rpartition(":")[2] for e in entries if e != "1"}):
        _require(held, ("Datastore.AllocateSpace",), f"/storage/{target}")
