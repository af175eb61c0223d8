"""A guest's cloud-init drive on disk: its image made from the config (engine/cloudinit.py writes the files),
the `cicustom` snippets it reads, the node's DNS.

Proxmox (qemu-server `PVE/QemuServer/Cloudinit.pm`) writes the files with genisoimage (`-iso-level 3 -J -R -V
LABEL`) and copies the ISO into the drive's volume with qemu-img; here pycdlib writes the same ISO 9660 image
(level 3, Joliet and Rock Ridge names, the label as volume id) and the storage converts it into the volume. A
volume that is gone (the drive freed, a snapshot rolled back to) is allocated anew, as Proxmox does.
"""

from __future__ import annotations

import io
import os
import re

import pycdlib

from engine import cloudinit
from engine.cloudinit import CloudinitError, HostDns
from engine.volumes import VolumeError, is_cloudinit, parse_volume, property_string, volume_of
from hypervisor.qemu_argv import disk_keys
from hypervisor.storage import DirStorage, StorageError

CICUSTOM_PARTS = ("user", "network", "meta", "vendor")
MAX_SNIPPET = 1024 * 1024  # Proxmox reads at most 1 MiB of each (read_cloudinit_snippets_file)
CLOUDINIT_SIZE = 4 * 1024 * 1024


def host_dns(path: str = "/etc/resolv.conf") -> HostDns:
    """The node's name servers and search domain, for guests that set neither."""
    try:
        with open(path) as f:
            return cloudinit.parse_resolv_conf(f.read())
    except OSError:
        return HostDns()


def drive_key(conf: dict) -> str | None:
    """The config key of the guest's cloud-init drive (the last one, as qemu-server's foreach_volume finds it)."""
    keys = [k for k in disk_keys(conf) if is_cloudinit(str(conf[k]))]
    return keys[-1] if keys else None


def snippet_path(volid: str, storages: dict[str, DirStorage]) -> str:
    """Where a `cicustom` snippet is: it must be a `snippets` volume that exists, on a storage holding snippets.
    CloudinitError with Proxmox's wording otherwise."""
    try:
        volume = parse_volume(volid)
    except VolumeError as exc:
        raise CloudinitError(str(exc)) from None
    if volume.vtype != "snippets":
        raise CloudinitError(f"{volid} is not in the snippets directory")
    storage = storages.get(volume.storage)
    if storage is None:
        raise CloudinitError(f"storage '{volume.storage}' does not exist")
    if "snippets" not in storage.content:
        raise CloudinitError(f"storage '{volume.storage}' is not configured for content-type 'snippets'")
    try:
        path = storage.volume_path(volid)
    except StorageError as exc:
        raise CloudinitError(str(exc)) from None
    if not os.path.isfile(path):
        raise CloudinitError(f"volume '{volid}' does not exist")
    return path


def check_custom(value: str, storages: dict[str, DirStorage]) -> None:
    """Every part of a `cicustom` value names an existing snippet (CloudinitError)."""
    for volid in property_string(value, None, strict=False).values():
        snippet_path(volid, storages)


def read_custom(conf: dict, storages: dict[str, DirStorage]) -> dict[str, str]:
    """The texts of the guest's `cicustom` parts, {user|network|meta|vendor: text}."""
    out = {}
    for part, volid in property_string(str(conf.get("cicustom", "")), None, strict=False).items():
        if part not in CICUSTOM_PARTS:
            continue
        with open(snippet_path(volid, storages), "rb") as f:
            data = f.read(MAX_SNIPPET + 1)
        if len(data) > MAX_SNIPPET:
            raise CloudinitError(f"snippet '{volid}' too long - unable to read")
        out[part] = data.decode(errors="replace")
    return out


def _iso_name(name: str, directory: bool = False) -> str:
    """An ISO 9660 level 3 name for a file or directory (the Rock Ridge and Joliet names keep the real one)."""
    name = re.sub(r"[^A-Z0-9_.]", "_", name.upper())
    if directory:
        return name.replace(".", "_")[:31]
    stem, _, ext = name.partition(".")
    return f"{stem[:30 - len(ext)]}.{ext.replace('.', '_')};1"


def write_iso(files: dict[str, str], label: str, path: str) -> None:
    """An ISO 9660 image of `files` ({"/openstack/latest/user_data": text}) with volume label `label`."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=label, joliet=3, rock_ridge="1.09")
    made: set[str] = set()
    try:
        for name in sorted(files):
            parts = [p for p in name.split("/") if p]
            for depth in range(1, len(parts)):
                sub = "/".join(parts[:depth])
                if sub not in made:
                    made.add(sub)
                    iso.add_directory("/" + "/".join(_iso_name(p, True) for p in parts[:depth]),
                                      rr_name=parts[depth - 1], joliet_path="/" + sub)
            data = files[name].encode()
            iso.add_fp(io.BytesIO(data), len(data),
                       "/" + "/".join([*(_iso_name(p, True) for p in parts[:-1]), _iso_name(parts[-1])]),
                       rr_name=parts[-1], joliet_path="/" + "/".join(parts))
        iso.write(path)
    finally:
        iso.close()


async def generate(vmid: int, conf: dict, storages: dict[str, DirStorage], host: HostDns) -> str | None:
    """Make the image of the guest's cloud-init drive from `conf`; returns the drive's key (None: the guest has
    no cloud-init drive). CloudinitError or StorageError when it cannot be made."""
    key = drive_key(conf)
    if key is None:
        return None
    volid = volume_of(str(conf[key]))
    storage = storages.get(volid.partition(":")[0])
    if storage is None:
        raise StorageError(f"storage '{volid.partition(':')[0]}' does not exist")
    label, files = cloudinit.files(conf, vmid, host, read_custom(conf, storages))
    path = storage.volume_path(volid)
    if not os.path.exists(path):
        volume = parse_volume(volid)
        await storage.alloc(vmid, CLOUDINIT_SIZE, volume.format, volume.filename.rsplit(".", 1)[0])
    iso = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.iso")
    try:
        write_iso(files, label, iso)
        await storage.replace_from_raw(volid, iso)
    finally:
        if os.path.exists(iso):
            os.unlink(iso)
    return key
