"""Parameter formats checked by code, each failing with Proxmox's message (pve-common `PVE/JSONSchema.pm`
`pve_verify_ipv4`, `pve_verify_cidrv4`, `pve_verify_ipv4mask`, `pve_verify_iface`, `pve_verify_vlan_id_or_range`
and their `-list` forms). `api/schema.py` runs the one a parameter's `format` names."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

IFACE = re.compile(r"[a-z][a-z0-9_]{1,20}([:.]\d+)?", re.IGNORECASE)


def _ipv4(value: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError("value does not look like a valid IPv4 address") from None


def _ipv6(value: str) -> None:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        raise ValueError("value does not look like a valid IPv6 address") from None


def _cidr(value: str, version: int) -> None:
    address, _, bits = value.partition("/")
    ok = bits.isdigit() and 7 < int(bits) <= (32 if version == 4 else 128)
    try:
        ipaddress.ip_address(address)
        ok = ok and ipaddress.ip_address(address).version == version
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"value does not look like a valid IPv{version} CIDR network")


def _ipv4mask(value: str) -> None:
    try:
        ipaddress.IPv4Network(f"0.0.0.0/{value}")
        ok = "." in value
    except ValueError:
        ok = False
    if not ok:
        raise ValueError("value does not look like a valid IP netmask")


def _iface(value: str) -> None:
    if not IFACE.fullmatch(value):
        raise ValueError(f"invalid network interface name '{value}'")


def _items(value: str) -> list[str]:
    return [v for v in re.split(r"[,;\s]+", value) if v]


def _iface_list(value: str) -> None:
    for item in _items(value):
        try:
            _iface(item)
        except ValueError as exc:
            raise ValueError(f"invalid format - {exc}") from None


def _vlan_range(value: str) -> None:
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", value)
    if not m:
        raise ValueError(f"invalid VLAN configuration '{value}'")
    for tag in m.groups():
        if tag is not None and not 2 <= int(tag) <= 4094:
            raise ValueError(f"invalid VLAN tag '{tag}'")
    if m.group(2) and int(m.group(1)) >= int(m.group(2)):
        raise ValueError(f"VLAN range must go from lower to higher tag '{value}'")


def _vlan_range_list(value: str) -> None:
    for item in _items(value):
        try:
            _vlan_range(item)
        except ValueError as exc:
            raise ValueError(f"invalid format - {exc}") from None


FORMAT_CHECKS: dict[str, Callable[[str], None]] = {
    "ipv4": _ipv4, "ipv6": _ipv6, "CIDRv4": lambda v: _cidr(v, 4), "CIDRv6": lambda v: _cidr(v, 6),
    "ipv4mask": _ipv4mask, "pve-iface": _iface, "pve-iface-list": _iface_list,
    "pve-vlan-id-or-range-list": _vlan_range_list,
}
