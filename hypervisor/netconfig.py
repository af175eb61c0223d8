"""A node's network configuration as Proxmox keeps it: `/etc/network/interfaces` text, read and written (pure).

`parse(text, links)` gives `{iface: settings}` with Proxmox's keys (pve-common `PVE/Network/Interfaces.pm`
`__read_etc_network_interfaces`): `type` (bridge, bond, vlan, eth, loopback, unknown; from the settings and the
name, as Proxmox infers it), `method`/`method6` (static, manual, ...), `families`, `priority` (the order in the
file), `autostart`, `address`/`netmask`/`cidr`/`gateway` (and `…6`), `bridge_ports`, `bridge_stp`, `bridge_fd`,
`bridge_vlan_aware`, `bridge_vids`, `slaves`, `bond_mode`, `bond_miimon`, `bond_xmit_hash_policy`, `bond-primary`,
`vlan-raw-device`, `vlan-id`, `mtu`, `comments`, and `options`/`options6` (lines gpve does not interpret, kept).
The host's NICs (`links`: name -> `{"nic": bool, "up": bool}`, see hypervisor/netlink.py) are listed even when the
file does not name them (`exists: 1`), and `active: 1` marks the interfaces that are up.

`render(ifaces, extra)` writes the file back as `__write_etc_network_interfaces` lays it out (ifupdown2 syntax),
and `check(ifaces)` raises ConfigError with Proxmox's messages for what that writer refuses: a port used twice, a
bridge port, bond slave or VLAN parent that does not exist or has the wrong type, an address on a bridged
interface, an MTU above its parent's.
"""

from __future__ import annotations

import difflib
import ipaddress
import re

NIC_NAME = re.compile(r"(?:eth\d+|en[^:.]+|ib[^:.]+|(?:nic|if)\d+)")  # Interfaces.pm `$PHYSICAL_NIC_RE`
ALIASES = {"bond-slaves": "slaves", "bond_slaves": "slaves", "bond-xmit-hash-policy": "bond_xmit_hash_policy",
           "bond-mode": "bond_mode", "bond-miimon": "bond_miimon", "bridge-vlan-aware": "bridge_vlan_aware",
           "bridge-fd": "bridge_fd", "bridge-stp": "bridge_stp", "bridge-ports": "bridge_ports",
           "bridge-vids": "bridge_vids"}
SIMPLE = {"mtu", "bridge_fd", "bridge_vids", "bond_miimon", "bond_xmit_hash_policy", "bond-primary",
          "vlan-protocol", "vlan-raw-device", "vlan-id", "link-type"}
BOND_MODES = {"balance-rr": "0", "active-backup": "1", "balance-xor": "2", "broadcast": "3", "802.3ad": "4",
              "balance-tlb": "5", "balance-alb": "6"}
# keys never written as options: derived on reading, or written by the code below
DERIVED = {"type", "priority", "method", "method6", "active", "exists", "comments", "comments6", "autostart",
           "options", "options6", "families", "cidr", "cidr6", "address", "netmask", "gateway", "address6",
           "netmask6", "gateway6"}
TYPE_ORDER = {"loopback": 100000, "eth": 200000, "bond": 400000, "bridge": 500000, "vlan": 600000}
HEADER = ("# network interface settings, written by gpve (changes made through the API are pending in\n"
          "# interfaces.new until applied); interfaces not named here are left as they are\n\n")


class ConfigError(Exception):
    """A configuration Proxmox's writer refuses; the message is Proxmox's."""


def parse(text: str, links: dict[str, dict] | None = None) -> tuple[dict[str, dict], list[str]]:
    """The interfaces of `text` (and of the host, `links`), and the top-level lines kept as they are."""
    ifaces: dict[str, dict] = {}
    extra: list[str] = []
    priority = 2  # 1 is the loopback's
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"(?:allow-auto|auto|allow-hotplug)\s+(.*)", line)
        if m:
            for name in m.group(1).split():
                ifaces.setdefault(name, {})["autostart"] = 1
            continue
        m = re.fullmatch(r"iface\s+(\S+)(?:\s+(inet6?)\s+(\S+))?", line)
        if not m:
            extra.append(line)
            continue
        name, family, method = m.groups()
        d = ifaces.setdefault(name, {})
        if "priority" not in d:
            d["priority"], priority = priority, priority + 1
        suffix = "6" if family == "inet6" else ""
        if family:
            d.setdefault("families", []).append(family)
            d["method" + suffix] = method
        while i < len(lines) and lines[i].strip() and not re.match(
                r"(iface|mapping|auto|source|source-directory)\s|allow-", lines[i].strip()):
            _option(d, lines[i].strip(), suffix)
            i += 1
    for name, link in sorted((links or {}).items()):
        if link.get("nic"):
            ifaces.setdefault(name, {})["exists"] = 1
        if link.get("up") and name in ifaces:
            ifaces[name]["active"] = 1
    ifaces.setdefault("lo", {"priority": 1, "method": "loopback", "autostart": 1, "families": ["inet"]})
    for name, d in sorted(ifaces.items()):
        _complete(name, d, ifaces, links or {})
    return ifaces, extra


def _option(d: dict, line: str, suffix: str) -> None:
    if line.startswith("#"):
        d["comments" + suffix] = d.get("comments" + suffix, "") + line[1:].strip() + "\n"
        return
    key, _, value = line.partition(" ")
    key, value = ALIASES.get(key, key), value.strip()
    if key in ("address", "netmask", "gateway"):
        six = "6" if suffix or (":" in value and key != "netmask") else ""
        d[key + six] = value
    elif key in SIMPLE:
        d[key] = value
    elif key in ("bridge_ports", "slaves"):
        d[key] = " ".join(p for p in value.split() if p != "none")
    elif key == "bridge_stp":
        d[key] = "on" if value.lower() in ("on", "yes") else "off"
    elif key == "bridge_vlan_aware":
        d[key] = 1
    elif key == "bond_mode":
        d[key] = next((name for name, n in BOND_MODES.items() if n == value), value)
    else:
        d.setdefault("options" + suffix, []).append(line)


def _complete(name: str, d: dict, ifaces: dict[str, dict], links: dict[str, dict]) -> None:
    """Proxmox's type inference and the derived keys (cidr, netmask as bits, methods, families)."""
    vlan = re.fullmatch(r"(\S+)\.(\d+)", name)
    if "bridge_ports" in d:
        d["type"] = "bridge"
        d.setdefault("bridge_stp", "off")
        if d["bridge_stp"] == "off":
            d.setdefault("bridge_fd", "0")
    elif re.fullmatch(r"bond\d+", name):
        d["type"] = "bond"
    elif vlan or d.get("vlan-raw-device"):
        d["type"] = "vlan"
        if vlan:
            d.setdefault("vlan-raw-device", vlan.group(1))
            d["vlan-id"] = vlan.group(2)
        elif re.fullmatch(r"vlan(\d+)", name):
            d["vlan-id"] = name[4:]
    elif name == "lo":
        d["type"] = "loopback"
    elif links.get(name, {}).get("nic") or NIC_NAME.fullmatch(name):
        d["type"] = "eth"
    else:
        d["type"] = "unknown"
    for six, whole in (("", 32), ("6", 128)):
        addr = d.get("address" + six)
        if not addr:
            continue
        if "/" in addr:
            d["address" + six], d["netmask" + six] = addr.split("/", 1)
        elif d.get("netmask" + six):
            d["netmask" + six] = str(mask_bits(d["netmask" + six]))
        else:
            d["netmask" + six] = str(whole)
        d["cidr" + six] = f"{d['address' + six]}/{d['netmask' + six]}"
    d.setdefault("method", "manual")
    d.setdefault("method6", "manual")
    if d.get("comments6"):
        d["comments"] = d.get("comments", "") + d.pop("comments6")
    d.setdefault("families", ["inet"])


def mask_bits(mask: str) -> int | str:
    """`255.255.255.0` -> 24 (pve-common `get_netmask_bits`); bits as they are; anything else unchanged."""
    if str(mask).isdigit():
        return int(mask)
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    except ValueError:
        return mask


def render(ifaces: dict[str, dict], extra: list[str] = ()) -> str:
    """The configuration as Proxmox writes it: by type (loopback, NICs, bonds, bridges, VLANs), then file order;
    `auto` before each stanza that starts on boot; one stanza per address family."""
    out = [HEADER]

    def order(name: str) -> tuple:
        root = re.split(r"[.:]", name)[0]
        kind = ifaces.get(root, {}).get("type")
        base = TYPE_ORDER.get(kind or "", 0) + name.count(".") if kind in TYPE_ORDER else 0
        return (base + ifaces[name].get("priority", 50000), name)

    for name in sorted(ifaces, key=order):
        d = ifaces[name]
        if d.get("type") == "eth" and not _configured(d):
            continue  # a NIC the file does not name stays out of it
        if d.get("autostart"):
            out.append(f"auto {name}\n")
        families = d.get("families") or ["inet"]
        for n, family in enumerate(families):
            out.append(_stanza(name, d, family, first=n == 0))
    out += [line + "\n" for line in extra]
    return "".join(out)


def _configured(d: dict) -> bool:
    return any(k not in ("type", "exists", "active", "method", "method6", "families", "priority") for k in d) \
        or d.get("method", "manual") != "manual" or d.get("method6", "manual") != "manual" or "priority" in d


def _stanza(name: str, d: dict, family: str, first: bool) -> str:
    six = "6" if family == "inet6" else ""
    method = d.get("method" + six) or "manual"
    raw = [f"iface {name} {family} {method}"]
    if d.get("address" + six):
        addr = d["address" + six]
        if "/" not in addr and d.get("netmask" + six):
            addr += f"/{mask_bits(d['netmask' + six])}"
        raw.append(f"\taddress {addr}")
    if d.get("gateway" + six):
        raw.append(f"\tgateway {d['gateway' + six]}")
    if first:
        raw += _type_options(d)
        done = DERIVED | {"bridge_ports", "bridge_stp", "bridge_fd", "bridge_vlan_aware", "bridge_vids", "slaves",
                          "bond_miimon", "bond_mode", "bond_xmit_hash_policy", "bond-primary", "mtu"}
        if re.fullmatch(r"\S+\.\d+", name):  # the name says both (Proxmox drops them before writing)
            done |= {"vlan-raw-device", "vlan-id"}
        elif re.fullmatch(r"vlan\d+", name):
            done |= {"vlan-id"}
        raw += [f"\t{k} {v}" for k, v in sorted(d.items()) if k not in done and v not in (None, "", 0)]
    raw += [f"\t{line}" for line in d.get("options" + six, [])]
    if first:  # Proxmox reads both families' comments as one
        raw += [f"#{line}" for line in (str(d.get("comments") or "") + str(d.get("comments6") or "")).splitlines()]
    return "\n".join(raw) + "\n\n"


def _type_options(d: dict) -> list[str]:
    kind, raw = d.get("type"), []
    if kind == "bridge":
        raw.append(f"\tbridge-ports {' '.join(split(d.get('bridge_ports'))) or 'none'}")
        stp = d.get("bridge_stp", "off")
        raw.append(f"\tbridge-stp {stp}")
        fd = d.get("bridge_fd")
        if fd is not None and (stp == "off" or 2 <= _int(fd) <= 30):
            raw.append(f"\tbridge-fd {fd}")
        elif stp == "off":
            raw.append("\tbridge-fd 0")
        if d.get("bridge_vlan_aware"):
            raw.append("\tbridge-vlan-aware yes")
            raw.append(f"\tbridge-vids {d.get('bridge_vids') or '2-4094'}")
    elif kind == "bond":
        raw.append(f"\tbond-slaves {' '.join(split(d.get('slaves'))) or 'none'}")
        raw.append(f"\tbond-miimon {d.get('bond_miimon', 100)}")
        mode = d.get("bond_mode") or "balance-rr"
        raw.append(f"\tbond-mode {mode}")
        if d.get("bond_xmit_hash_policy") and mode in ("balance-xor", "802.3ad"):
            raw.append(f"\tbond-xmit-hash-policy {d['bond_xmit_hash_policy']}")
        if d.get("bond-primary") and mode == "active-backup":
            raw.append(f"\tbond-primary {d['bond-primary']}")
    if d.get("mtu"):
        raw.append(f"\tmtu {d['mtu']}")
    return raw


def _int(value) -> int:
    """A number the file gives (0 for what is none)."""
    return int(value) if str(value).isdigit() else 0


def split(value) -> list[str]:
    return [p for p in re.split(r"[\s,;]+", str(value or "")) if p]


def ports(d: dict) -> list[str]:
    """The interfaces an interface holds: a bridge's ports, a bond's slaves."""
    return split(d.get("bridge_ports")) + split(d.get("slaves"))


def check(ifaces: dict[str, dict]) -> None:
    """Proxmox's checks before it writes the file (`__write_etc_network_interfaces`); ConfigError if one fails."""
    used: dict[str, str] = {}
    for name, d in sorted(ifaces.items()):
        for p in ports(d):
            if used.get(p, name) != name:
                raise ConfigError(f"port '{p}' is already used on interface '{used[p]}'")
            used[p] = name
    for name, d in sorted(ifaces.items()):
        kind = d.get("type")
        if kind == "bond":
            slaves = split(d.get("slaves"))
            for p in slaves:
                n = ifaces.get(p)
                if n is None:
                    raise ConfigError(f"bond '{name}' - unable to find slave '{p}'")
                if n.get("type") not in ("eth", "bond"):
                    raise ConfigError(f"bond '{name}' - wrong interface type on slave '{p}' "
                                      f"('{n.get('type')}' != 'eth or bond')")
                _check_mtu(ifaces, name, p)
            if d.get("bond-primary") and d["bond-primary"] not in slaves:
                raise ConfigError(f"bond '{name}' - bond-primary interface is not a slave")
        elif kind == "vlan":
            _check_vlan(ifaces, name, d)
        elif kind == "bridge":
            for p in split(d.get("bridge_ports")):
                n = ifaces.get(p)
                if n is None:
                    raise ConfigError(f"bridge '{name}' - unable to find bridge port '{p}'")
                if n.get("method") == "static" and n.get("address") not in (None, "0.0.0.0") or \
                        n.get("method6") == "static" and n.get("address6") not in (None, "::"):
                    raise ConfigError(f"iface {p} - ip address can't be set on interface if bridged in {name}")
                _check_mtu(ifaces, p, name)


def _check_vlan(ifaces: dict[str, dict], name: str, d: dict) -> None:
    m = re.fullmatch(r"(\S+)\.(\d+)", name) or re.fullmatch(r"(vlan)(\d+)", name)
    if m and d.get("vlan-id") not in (None, "") and _int(d.get("vlan-id")) != int(m.group(2)):
        raise ConfigError(f"vlan '{name}' - vlan-id {d['vlan-id']} does not match the id {m.group(2)} in its name")
    if m and m.group(1) != "vlan":
        parent, vid = m.group(1), int(m.group(2))
    else:
        if not d.get("vlan-raw-device"):
            raise ConfigError("missing vlan-raw-device option")
        parent = d["vlan-raw-device"]
        vid = int(name[4:]) if re.fullmatch(r"vlan\d+", name) else _int(d.get("vlan-id"))
        if not vid:
            raise ConfigError("missing vlan-id option")
    if vid > 4094:
        raise ConfigError(f"vlan '{name}' - vlan-id {vid} should be <= 4094")
    n = ifaces.get(parent)
    if n is None:
        raise ConfigError(f"vlan '{name}' - unable to find parent '{parent}'")
    if n.get("type") not in ("eth", "bridge", "bond", "vlan"):
        raise ConfigError(f"vlan '{name}' - wrong interface type on parent '{parent}' "
                          f"('{n.get('type')}' != 'eth|bond|bridge|vlan' )")
    _check_mtu(ifaces, parent, name)


def _check_mtu(ifaces: dict[str, dict], parent: str, child: str) -> None:
    cmtu = _int(ifaces.get(child, {}).get("mtu"))
    if not cmtu:
        return
    p = ifaces.get(parent, {})
    pmtu = _int(p.get("mtu")) or (cmtu if p.get("type") == "bond" else 1500)
    if pmtu < cmtu:
        raise ConfigError(f"interface '{parent}' - mtu {pmtu} is lower than '{child}' - mtu {cmtu}")


def diff(old: str, new: str, path: str) -> str | None:
    """The pending changes as `diff -u` shows them (Proxmox's `changes`), None without any."""
    lines = list(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                      path, path + ".new"))
    return "".join(lines) or None
