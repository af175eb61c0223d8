"""Proxmox's named scalar formats: the checks `format => NAME` runs on one value, with Proxmox's messages.

Each checker takes the value (a string) and returns nothing, or raises ValueError with the message Proxmox's
checker dies with; the caller prefixes `invalid format - ` as pve-common's `check_prop` does. A name ending in
`-list` checks every element of `split_list(value)`; `-opt` checks a non-empty value (`check_format`).

Sources: pve-common `PVE/JSONSchema.pm` (`pve_verify_*`, `parse_size`), `PVE/ParseUtils.pm` (`$IPV4RE`,
`$IPV6RE`, `split_list`), `PVE/CpuSet.pm` (`parse_cpuset`); pve-storage `PVE/Storage/Plugin.pm`
(`parse_volume_id`); qemu-server `PVE/QemuServer.pm` (`verify_volume_id_or_qm_path`, `verify_bootdev`,
`pve_verify_hotplug_features`), `PVE/QemuServer/Drive.pm` (`verify_bootdisk`), `PVE/QemuServer/CPUConfig.pm`
(`parse_phys_bits`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

_OCTET = r"(?:25[0-5]|(?:2[0-4]|1[0-9]|[1-9])?[0-9])"
IPV4_RE = rf"(?:(?:{_OCTET}\.){{3}}{_OCTET})"
_H16 = r"(?:[0-9a-fA-F]{1,4})"
_LS32 = rf"(?:(?:{IPV4_RE}|{_H16}:{_H16}))"
IPV6_RE = ("(?:"
           rf"(?:(?:(?:{_H16}:){{6}}){_LS32})|"
           rf"(?:(?:::(?:{_H16}:){{5}}){_LS32})|"
           rf"(?:(?:(?:{_H16})?::(?:{_H16}:){{4}}){_LS32})|"
           rf"(?:(?:(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}){_LS32})|"
           rf"(?:(?:(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}){_LS32})|"
           rf"(?:(?:(?:(?:{_H16}:){{0,3}}{_H16})?::(?:{_H16}:){{1}}){_LS32})|"
           rf"(?:(?:(?:(?:{_H16}:){{0,4}}{_H16})?::){_LS32})|"
           rf"(?:(?:(?:(?:{_H16}:){{0,5}}{_H16})?::){_H16})|"
           rf"(?:(?:(?:(?:{_H16}:){{0,6}}{_H16})?::)))")
DNS_NAME_RE = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?"
SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)([KMGT](?:iB)?)?")
SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
TAG_RE = re.compile(r"[a-z0-9_][a-z0-9_\-+.]*", re.I)
HOTPLUG_FEATURES = ("network", "disk", "cpu", "memory", "usb", "cloudinit")
# qemu-server's drive and device counts (Drive.pm `$MAX_*_DISKS`, Network.pm `$MAX_NETS`, USB.pm, PCI.pm)
DRIVE_BUSES = {"ide": 4, "sata": 6, "scsi": 31, "virtio": 16}
BOOT_DEVICES = {**DRIVE_BUSES, "net": 32, "usb": 14, "hostpci": 16}


def _fail(pattern: str, value: str, message: str, flags: int = 0) -> None:
    if not re.fullmatch(pattern, value, flags):
        raise ValueError(message)


def split_list(value: str) -> list[str]:
    """pve-common `split_list`: NUL-separated, else split on `,`, `;` and blanks."""
    if "\0" in value:
        return value.split("\0")
    return [v for v in re.split(r"[,;\s]+", value) if v]


def parse_size(value: str) -> int | None:
    """`parse_size`: `32G`, `512MiB`, `1.5T`, `1024` (bytes) -> bytes; None when it is none of these."""
    m = SIZE_RE.fullmatch(value)
    if not m:
        return None
    unit = (m.group(2) or "")[:1]
    return int(float(m.group(1)) * SIZE_UNITS.get(unit, 1))


def format_size(size: int) -> str:
    """`format_size`: bytes -> the largest unit that divides them (`32G`, `1536M`, `512`)."""
    for unit in ("T", "G", "M", "K"):
        if size % SIZE_UNITS[unit] == 0 and size >= SIZE_UNITS[unit]:
            return f"{size // SIZE_UNITS[unit]}{unit}"
    return str(size)


def mac_addr(value: str) -> None:
    # the I/G bit must be clear: a unicast address
    _fail(r"[a-f0-9][02468ace](?::[a-f0-9]{2}){5}", value, "value does not look like a valid unicast MAC address",
          re.I)


def ipv4(value: str) -> None:
    _fail(IPV4_RE, value, "value does not look like a valid IPv4 address")


def ipv6(value: str) -> None:
    _fail(IPV6_RE, value, "value does not look like a valid IPv6 address")


def _cidr(value: str, address: str, low: int, high: int) -> bool:
    m = re.fullmatch(rf"(?:{address})/(\d+)", value)
    return bool(m) and low < int(m.group(1)) <= high


def ipv4_config(value: str) -> None:
    if value not in ("dhcp", "manual") and not _cidr(value, IPV4_RE, 7, 32):
        raise ValueError("value does not look like a valid ipv4 network configuration")


def ipv6_config(value: str) -> None:
    if value not in ("auto", "dhcp", "manual") and not _cidr(value, IPV6_RE, 7, 128):
        raise ValueError("value does not look like a valid ipv6 network configuration")


def address(value: str) -> None:
    if not (re.fullmatch(IPV4_RE, value) or re.fullmatch(IPV6_RE, value) or re.fullmatch(DNS_NAME_RE, value)):
        raise ValueError(f"value does not look like a valid address: {value}")


def bridge_id(value: str) -> None:
    _fail(r"[-_.\w]+", value, f"invalid bridge ID '{value}'", re.A)


def configid(value: str) -> None:
    _fail(r"[a-z][a-z0-9_-]+", value, f"invalid configuration ID '{value}'", re.I)


def volume_id(value: str) -> None:
    _fail(r"[a-z][a-z0-9\-_.]*[a-z0-9]:.+", value, f"unable to parse volume ID '{value}'", re.I)


def volume_id_or_absolute_path(value: str) -> None:
    if not value.startswith("/"):
        volume_id(value)


def volume_id_or_qm_path(value: str) -> None:
    if value not in ("none", "cdrom"):
        volume_id_or_absolute_path(value)


def urlencoded(value: str) -> None:
    _fail(r"[-%a-zA-Z0-9_.!~*'()]*", value, f"invalid urlencoded string: {value}")


def disk_size(value: str) -> None:
    if parse_size(value) is None:
        raise ValueError(f"value does not look like a valid disk size: {value}")


def tag(value: str) -> None:
    if not TAG_RE.fullmatch(value):
        raise ValueError("invalid characters in tag")


def startup_order(value: str) -> None:
    parts = [p for p in value.split(",") if p.strip()]
    if value in ("", "0") or not all(re.fullmatch(r"(?:order=)?\d+|up=\d+|down=\d+", p) for p in parts):
        raise ValueError("unable to parse startup options")


def cpuset(value: str) -> None:
    for part in value.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:-(\d+))?\s*", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise ValueError("unable to parse cpuset option")


def hotplug_features(value: str) -> None:
    if value in ("0", "1"):
        return
    for feature in split_list(value):
        if feature not in HOTPLUG_FEATURES:
            raise ValueError(f"invalid hotplug feature '{feature}'")


def _device(value: str, buses: dict[str, int]) -> bool:
    m = re.fullmatch(r"([a-z]+)(\d+)", value)
    return bool(m) and m.group(1) in buses and int(m.group(2)) < buses[m.group(1)] and m.group(2) == str(
        int(m.group(2)))


def bootdisk(value: str) -> None:
    if not (_device(value, DRIVE_BUSES) or value in ("efidisk0", "tpmstate0")):
        raise ValueError(f"invalid boot disk '{value}'")


def bootdev(value: str) -> None:
    if not _device(value, BOOT_DEVICES):
        raise ValueError(f"invalid boot device '{value}'")


def phys_bits(value: str) -> None:
    if not re.fullmatch(r"host|\d{1,2}", value) or (value != "host" and not 8 <= int(value) <= 64):
        raise ValueError("value must be an integer between 8 and 64 or 'host'")


CHECKERS: dict[str, Callable[[str], None]] = {
    "mac-addr": mac_addr, "ipv4": ipv4, "ipv6": ipv6, "pve-ipv4-config": ipv4_config,
    "pve-ipv6-config": ipv6_config, "address": address, "pve-bridge-id": bridge_id, "pve-configid": configid,
    "pve-volume-id": volume_id, "pve-volume-id-or-absolute-path": volume_id_or_absolute_path,
    "pve-volume-id-or-qm-path": volume_id_or_qm_path, "urlencoded": urlencoded, "disk-size": disk_size,
    "pve-tag": tag, "pve-startup-order": startup_order, "pve-cpuset": cpuset,
    "pve-hotplug-features": hotplug_features, "pve-qm-bootdisk": bootdisk, "pve-qm-bootdev": bootdev,
    "pve-phys-bits": phys_bits,
}


def checker(name: str) -> Callable[[str], None] | None:
    """The check for `name`, `name-list` or `name-opt` (pve-common `check_format`), or None if unknown."""
    base, _, kind = name.rpartition("-")
    if kind in ("list", "opt") and base in CHECKERS:
        check = CHECKERS[base]
        if kind == "list":
            def check_list(value: str) -> None:
                for element in split_list(value):
                    check(element)
            return check_list
        return lambda value: check(value) if value else None
    return CHECKERS.get(name)
