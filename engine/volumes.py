"""Pure helpers about volumes and disks: strict volume-id parsing, which disks need allocating, what a
guest owns.

A volume id is `STORAGE:NAME` (pve-storage `parse_volume_id`); NAME belongs to one content type and
lies in that type's directory of the storage (the directory plugin's `parse_volname`):

    images    VMID/vm-VMID-disk-N.FMT, VMID/base-VMID-disk-N.FMT, linked: BASEVMID/base-…/VMID/vm-VMID-disk-N.FMT,
              VMID/vm-VMID-cloudinit.FMT (a cloud-init drive: a CD-ROM the guest owns)
    iso       iso/NAME.iso|img                     -> template/iso/NAME
    vztmpl    vztmpl/NAME.tar[.gz|.xz|.zst|.bz2]   -> template/cache/NAME
    backup    backup/NAME.vma|tar|tgz[.gz|…]       -> dump/NAME (vzdump-qemu-VMID-… names an owner)
    snippets  snippets/NAME                        -> snippets/NAME
    import    import/NAME.ova|ovf|qcow2|raw|vmdk   -> import/NAME (disk images and appliances to import, `import-from`)

Stricter than Proxmox where Proxmox's regexes let a name reach outside its directory: no `.` or `..`
component, no empty component, one file name per content directory; no blank, control character or
`%` (Proxmox's uploads never make them). Nothing is decoded here: percent-decoding happens once, at
the HTTP layer, and a literal `%2e%2e` is refused rather than ever read as `..`. An absolute path
(`/dev/sdb`) is not a volume; only root@pam may use one (api/services/guest_access.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STORAGE_ID = r"[a-z][a-z0-9\-_.]*[a-z0-9]"
CONTENT_DIRS = {"images": "images", "iso": "template/iso", "vztmpl": "template/cache", "snippets": "snippets",
                "backup": "dump", "import": "import"}
IMAGE_FILE = re.compile(r"(vm|base)-(\d+)-(?:disk-(\d+)|cloudinit)\.(qcow2|raw|vmdk)")  # group 3: None for cloud-init
FILES = {  # content type -> file names it holds (Proxmox's ISO_EXT_RE_0, VZTMPL_EXT_RE_1, BACKUP_EXT_RE_2)
    "iso": re.compile(r"[^/]+\.(?:iso|img)", re.I),
    "vztmpl": re.compile(r"[^/]+\.(?:tar|tar\.(?:gz|xz|zst|bz2))", re.I),
    "backup": re.compile(r"[^/]+\.(?:tgz|(?:tar|vma)(?:\.(?:gz|lzo|zst|bz2))?)"),
    "snippets": re.compile(r"[^/]+"),
    "import": re.compile(r"[a-zA-Z0-9\-.+=_]+\.(?:ova|ovf|qcow2|raw|vmdk)"),  # IMPORT_EXT_RE_1, SAFE_CHAR_CLASS_RE
}
UNSAFE = re.compile(r"[\x00-\x20\x7f%]")  # control characters, blanks, percent-encoding
DISK_KEY = re.compile(r"(ide|sata|scsi|virtio|efidisk|tpmstate)\d+")
ALLOC_SPEC = re.compile(rf"({STORAGE_ID}):(\d+(?:\.\d+)?)")
CLOUDINIT_SPEC = re.compile(rf"({STORAGE_ID}):cloudinit")  # a cloud-init drive to allocate (Proxmox's volname)
CLOUDINIT_VOLUME = re.compile(r"[:/](?:vm-\d+-)?cloudinit(?:\.(?:qcow2|raw|vmdk))?\Z")  # qemu-server drive_is_cloudinit
CLOUDINIT_GIB = 4 / 1024  # Proxmox allocates 4 MiB (CLOUDINIT_DISK_SIZE)


class VolumeError(ValueError):
    """A volume id or drive that does not parse; the message is Proxmox's wording."""


@dataclass(frozen=True)
class Volume:
    storage: str
    vtype: str  # images | iso | vztmpl | backup | snippets
    directory: str  # relative to the storage's path: `images/100`, `template/iso`, ...
    filename: str
    owner: int | None = None  # the guest an image (or a vzdump backup) belongs to
    base: str | None = None  # a linked clone's base volume name, `100/base-100-disk-0.qcow2`

    @property
    def relpath(self) -> str:
        return f"{self.directory}/{self.filename}"

    @property
    def format(self) -> str:
        """An image's format from its name (an `import` volume's from its extension); `raw` for other content."""
        m = IMAGE_FILE.fullmatch(self.filename)
        if m:
            return m.group(4)
        return self.filename.rsplit(".", 1)[-1] if self.vtype == "import" else "raw"


def split_volume_id(volid: str) -> tuple[str, str]:
    """`local:iso/x.iso` -> (`local`, `iso/x.iso`); VolumeError `unable to parse volume ID '…'` otherwise."""
    m = re.fullmatch(rf"({STORAGE_ID}):(.+)", str(volid), re.S)
    if not m:
        raise VolumeError(f"unable to parse volume ID '{volid}'")
    return m.group(1), m.group(2)


def _image(storage: str, parts: list[str]) -> Volume | None:
    if len(parts) == 4:  # a linked clone: BASEVMID/base-…/VMID/vm-…
        base = _image(storage, parts[:2])
        if base is None or not base.filename.startswith("base-"):
            return None
        own = _image(storage, parts[2:])
        return None if own is None else Volume(storage, "images", own.directory, own.filename, own.owner,
                                               "/".join(parts[:2]))
    m = IMAGE_FILE.fullmatch(parts[1]) if len(parts) == 2 and parts[0].isdigit() else None
    if m is None or int(m.group(2)) != int(parts[0]):
        return None
    return Volume(storage, "images", f"images/{int(parts[0])}", parts[1], int(parts[0]))


def parse_volume(volid: str) -> Volume:
    """The one parser of volume ids: raises VolumeError for anything that is not exactly one file of one
    content type inside its directory."""
    storage, name = split_volume_id(volid)
    parts = name.split("/")
    unsafe = UNSAFE.search(name) or any(p in ("", ".", "..") for p in parts)
    volume = None
    if not unsafe and parts[0].isdigit():
        volume = _image(storage, parts)
    elif not unsafe and len(parts) == 2 and parts[0] in FILES and FILES[parts[0]].fullmatch(parts[1]):
        owner = re.match(r"vzdump-(?:openvz|lxc|qemu)-(\d+)-", parts[1]) if parts[0] == "backup" else None
        volume = Volume(storage, parts[0], CONTENT_DIRS[parts[0]], parts[1], int(owner.group(1)) if owner else None)
    if volume is None:
        raise VolumeError(f"unable to parse directory volume name '{name}'")
    return volume


def is_host_path(value: str) -> bool:
    """An absolute path (`/dev/sdb`, `/srv/x.img`), which QEMU would open as given: root@pam only."""
    return str(value).startswith("/")


def property_string(value: str, default_key: str | None = None, aliases: dict[str, str] | None = None,
                    strict: bool = True) -> dict[str, str]:
    """`a,b=1,c=2` -> {default_key: a, b: 1, c: 2}. `strict`: a key given twice (after `aliases`) raises
    VolumeError with Proxmox's `duplicate key in comma-separated list property: KEY`; else the last wins,
    as on QEMU's command line."""
    out: dict[str, str] = {}
    for i, part in enumerate(p for p in str(value).split(",") if p != ""):
        key, sep, val = part.partition("=")
        if not sep:
            key, val = (default_key, key) if i == 0 and default_key is not None else (key, "1")
        key = (aliases or {}).get(key, key)
        if key in out and strict:
            raise VolumeError(f"duplicate key in comma-separated list property: {key}")
        out[key] = val
    return out


def drive_props(value: str) -> dict[str, str]:
    """A drive's property string as QEMU's command line reads it: the leading bare value (or `file=`, or its
    alias `volume=`) is `file`. Strict, so that no check reads another file than QEMU does."""
    return property_string(value, "file", {"volume": "file"})


def volume_of(value: str) -> str:
    """The file (volume id, path or `none`) of a drive value; the last one wins, as on QEMU's command line."""
    return property_string(value, "file", {"volume": "file"}, strict=False).get("file", "")


def is_cdrom(value: str) -> bool:
    return property_string(value, "file", strict=False).get("media") == "cdrom"


def is_cloudinit(value: str) -> bool:
    """A cloud-init drive: `STORAGE:cloudinit` to allocate, or its volume `STORAGE:VMID/vm-VMID-cloudinit.FMT`
    (qemu-server's `drive_is_cloudinit`, which reads the name only)."""
    return bool(CLOUDINIT_VOLUME.search(volume_of(value)))


@dataclass(frozen=True)
class Drive:
    """A drive's file and what it is: `none`, the host's CD-ROM drive (`cdrom`), a new volume to allocate
    (`STORAGE:GiB`; with `import_from`, a copy of that volume or host path), a host path (root@pam's only) or
    an existing volume."""

    file: str
    cdrom: bool
    kind: str  # none | host-cdrom | alloc | cloudinit (to allocate) | path | volume
    import_from: str | None = None  # a volume id (`images` or `import` content) or an absolute path


ENUMS = {"efitype": ("2m", "4m"), "pre-enrolled-keys": ("0", "1"), "ms-cert": ("2011", "2023", "2023w", "2023k"),
         "version": ("v1.2", "v2.0")}


def parse_import_source(source: str) -> Volume | None:
    """An `import-from` source: a volume of `images` or `import` content (the Volume), or an absolute path
    (None). Raises VolumeError with Proxmox's wording (qemu-server's `$check_storage_access`, `$import_from_volid`)."""
    if is_host_path(source):
        return None
    volume = parse_volume(source)
    if volume.vtype not in ("images", "import"):
        raise VolumeError(f"{source} has wrong type '{volume.vtype}' - needs to be 'images' or 'import'")
    if is_cloudinit(source):
        raise VolumeError(f"cannot import from '{source}' - cannot import from cloudinit disk")
    if volume.format in ("ova", "ovf"):
        raise VolumeError(f"cannot import from '{source}' - importing from an {volume.format.upper()} is not "
                          "supported yet (import its disk image)")
    return volume


def parse_drive(value: str, key: str = "") -> Drive:
    """A drive value of config key `key` (`ide2`, `scsi0`, `efidisk0`, ...), checked as Proxmox's `check_drive_param`
    with strict volume ids. Raises VolumeError."""
    props = drive_props(value)
    for name, allowed in ENUMS.items():
        if name in props and props[name] not in allowed:
            raise VolumeError(f"invalid format - {name}: value '{props[name]}' does not have a value in the "
                              f"enumeration '{', '.join(allowed)}'")
    cdrom = props.get("media") == "cdrom"
    file = props.get("file", "")
    if not file:
        raise VolumeError("drive has no volume")
    source = props.get("import-from")
    if source is not None:
        spec = ALLOC_SPEC.fullmatch(file)
        if cdrom or spec is None or float(spec.group(2)) != 0:
            raise VolumeError("'import-from' requires special syntax - use <storage ID>:0,import-from=<source>")
        required = {"efidisk0": ("efitype", "pre-enrolled-keys"), "tpmstate0": ("version",)}.get(key, ())
        missing = next((name for name in required if name not in props), None)
        if missing:
            raise VolumeError(f"need to specify '{missing}' when using 'import-from'")
        parse_import_source(source)
        return Drive(file, cdrom, "alloc", source)
    if file == "none":
        return Drive(file, cdrom, "none")
    if cdrom and file == "cdrom":
        return Drive(file, cdrom, "host-cdrom")
    if CLOUDINIT_SPEC.fullmatch(file):
        if props.get("format", "qcow2") not in ("qcow2", "raw"):
            raise VolumeError(f"unsupported format '{props['format']}' for a cloud-init drive")
        return Drive(file, True, "cloudinit")
    if not cdrom and ALLOC_SPEC.fullmatch(file):
        return Drive(file, cdrom, "alloc")
    if is_host_path(file):
        return Drive(file, cdrom, "path")
    volume = parse_volume(file)
    if volume.vtype not in ("images", "iso"):
        raise VolumeError("content type needs to be 'images' or 'iso'")
    if volume.vtype == "iso" and not cdrom:
        raise VolumeError("explicit 'media=cdrom' is required for iso images")
    return Drive(file, cdrom, "volume")


def is_disk_key(key: str) -> bool:
    return bool(DISK_KEY.fullmatch(key)) or key.startswith("unused")


def alloc_requests(conf: dict) -> dict[str, tuple[str, float]]:
    """Disk keys whose value is `STORAGE:SIZE_GiB` (a volume to allocate), as {key: (storage, GiB)}; a cloud-init
    drive to allocate (`STORAGE:cloudinit`) is one of CLOUDINIT_GIB."""
    out = {}
    for key, value in conf.items():
        if re.fullmatch(r"(ide|sata|scsi|virtio)\d+", key) and CLOUDINIT_SPEC.fullmatch(volume_of(value)):
            out[key] = (volume_of(value).partition(":")[0], CLOUDINIT_GIB)
        elif DISK_KEY.fullmatch(key) and not is_cdrom(value):
            m = ALLOC_SPEC.fullmatch(volume_of(value))
            if m:
                out[key] = (m.group(1), float(m.group(2)))
    return out


def owned_volumes(vmid: int, conf: dict) -> list[str]:
    """Volumes of this guest referenced by its config (its own images, its cloud-init drive; not ISOs or other
    guests' bases)."""
    out = []
    for key, value in conf.items():
        if is_disk_key(key) and (not is_cdrom(value) or is_cloudinit(value)):
            volid = volume_of(value)
            try:
                volume = parse_volume(volid)
            except VolumeError:
                continue  # `none`, a host path (root's), or what no storage would resolve
            if volume.vtype == "images" and volume.owner == vmid:
                out.append(volid)
    return out


def volume_in_use(conf: dict, snapshots: dict, skip_key: str, volid: str) -> bool:
    """Does a drive other than `skip_key`, or any snapshot, still use `volid`? (qemu-server's `is_volume_in_use`:
    `unusedN` entries do not count, CD-ROMs neither.)"""
    def uses(c: dict, skip: str | None) -> bool:
        return any(DISK_KEY.fullmatch(k) and k != skip and not is_cdrom(str(v)) and volume_of(str(v)) == volid
                   for k, v in c.items())
    return uses(conf, skip_key) or any(uses(snap, None) for snap in snapshots.values())


def destroyed_volumes(vmid: int, conf: dict, snapshots: dict, intent: dict) -> list[tuple[str, str, bool]]:
    """(key, volid, still in use) of each volume a config change destroys: an `unusedN` deleted, or a disk deleted
    with `force` (not a CD-ROM); only the guest's own volumes, others just leave the config (qemu-server's
    `try_deallocate_drive`). `intent`: {"delete": [keys], "force": 0|1}."""
    out = []
    for key in intent.get("delete", []):
        value = conf.get(key)
        if value is None or not (key.startswith("unused") or (intent.get("force") and DISK_KEY.fullmatch(key))):
            continue
        if is_cdrom(str(value)):
            continue
        for volid in owned_volumes(vmid, {key: value}):
            out.append((key, volid, volume_in_use(conf, snapshots, key, volid)))
    return out
