"""Linux's network interfaces, read and configured over netlink (pyroute2), in the node's network namespace.

`links()` reads what the host has; `configure(new, old, log)` brings Linux to configuration `new` (parsed by
hypervisor/netconfig.py) as ifupdown2's `ifreload -a` does for Proxmox: bridges, bonds and VLANs are created (and
those `old` had and `new` has not deleted), ports enslaved (and released when a bridge or bond no longer lists
them), VLAN filtering, MTU, addresses and default gateways set, interfaces marked `autostart` brought up. Only what
the configuration names is touched: an address or gateway is removed only when `old` set it, a port released only
from the bridge or bond `old` put it in. Errors are collected per interface and the rest still applied.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hypervisor.netconfig import BOND_MODES, split

ARPHRD_ETHER = 1
IFF_UP = 1
VLAN_RANGE_BEGIN, VLAN_RANGE_END = 0x08, 0x10  # BRIDGE_VLAN_INFO_RANGE_*
VIRTUAL = ("bridge", "bond", "vlan")
KERNEL_FEATURE = {"bond": "CONFIG_BONDING", "vlan": "CONFIG_VLAN_8021Q",
                  "vlan_filtering": "CONFIG_BRIDGE_VLAN_FILTERING"}


def _kind(link) -> tuple[str | None, str | None]:
    info = link.get_attr("IFLA_LINKINFO")
    if info is None:
        return None, None
    return info.get_attr("IFLA_INFO_KIND"), info.get_attr("IFLA_INFO_SLAVE_KIND")


def _vlan_filtering(link) -> int:
    info = link.get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    return int(data.get_attr("IFLA_BR_VLAN_FILTERING") or 0) if data is not None else 0


def links() -> dict[str, dict]:
    """The host's interfaces: name -> `{index, kind, nic, up, master, mtu, vlan_filtering}`. A NIC (Proxmox's
    `ip_link_is_physical`: an Ethernet link of no virtual kind) is also a veth, which is what a network namespace
    has for NICs."""
    with IPRoute() as ipr:
        found = list(ipr.get_links())
    by_index = {link["index"]: link.get_attr("IFLA_IFNAME") for link in found}
    out = {}
    for link in found:
        kind, _ = _kind(link)
        out[link.get_attr("IFLA_IFNAME")] = {
            "index": link["index"], "kind": kind, "up": bool(link["flags"] & IFF_UP),
            "nic": link["ifi_type"] == ARPHRD_ETHER and kind in (None, "veth"),
            "master": by_index.get(link.get_attr("IFLA_MASTER")), "mtu": link.get_attr("IFLA_MTU"),
            "vlan_filtering": _vlan_filtering(link) if kind == "bridge" else 0}
    return out


def _failure(exc: Exception, feature: str | None = None) -> str:
    if isinstance(exc, NetlinkError):
        text = os.strerror(exc.code) if exc.code else str(exc)
        if exc.code == 95 and feature:  # EOPNOTSUPP: the kernel was built without it
            text += f" (the kernel lacks {KERNEL_FEATURE[feature]})"
        return text
    return str(exc)


class _Run:
    """One `configure` call: an IPRoute socket, the links as they are, the errors met."""

    def __init__(self, ipr: IPRoute, log: Callable[[str], None]) -> None:
        self.ipr, self.log, self.errors = ipr, log, []
        self.refresh()

    def refresh(self) -> None:
        self.links = {link.get_attr("IFLA_IFNAME"): link for link in self.ipr.get_links()}

    def index(self, name: str) -> int | None:
        link = self.links.get(name)
        return link["index"] if link is not None else None

    def fail(self, error: str) -> None:
        self.log(f"error: {error}")
        self.errors.append(error)

    def step(self, iface: str, what: str, fn: Callable[[], object], feature: str | None = None) -> bool:
        try:
            fn()
            return True
        except (NetlinkError, OSError, ValueError) as exc:
            self.fail(f"{iface}: unable to {what} - {_failure(exc, feature)}")
            return False


def configure(new: dict[str, dict], old: dict[str, dict], log: Callable[[str], None]) -> list[str]:
    """Bring Linux to `new`; `old` is the configuration applied before. Returns the errors (empty: all applied)."""
    with IPRoute() as ipr:
        run = _Run(ipr, log)
        for name, d in sorted(old.items()):
            kind = d.get("type")
            link = run.links.get(name)
            if kind in VIRTUAL and new.get(name, {}).get("type") != kind and link is not None \
                    and _kind(link)[0] == kind:
                log(f"delete {kind} {name}")
                run.step(name, f"delete {kind}", lambda i=link["index"]: ipr.link("del", index=i))
        run.refresh()
        order = sorted((n for n, d in new.items() if d.get("type") in VIRTUAL),
                       key=lambda n: (VIRTUAL.index(new[n]["type"]) if new[n]["type"] != "vlan" else 2 + n.count("."),
                                      n))
        for name in order:
            _guarded(run, name, _create, new[name])
            run.refresh()
        for name, d in sorted(new.items()):
            if d.get("type") in ("bridge", "bond", "vlan", "eth") and name in run.links:
                _guarded(run, name, _settings, d, old.get(name, {}))
        for name, d in sorted(new.items()):  # once every address is in place: gateways need their subnet
            if name in run.links:
                _guarded(run, name, _gateways, d, old.get(name, {}))
        return run.errors


def _guarded(run: _Run, name: str, fn: Callable, *args) -> None:
    """A setting the file gives that makes no sense (a hand-edited address that is none) fails its interface only."""
    try:
        fn(run, name, *args)
    except ValueError as exc:
        run.fail(f"{name}: {exc}")


def _create(run: _Run, name: str, d: dict) -> None:
    ipr, kind = run.ipr, d["type"]
    link = run.links.get(name)
    if link is not None and _kind(link)[0] != kind:  # not the configuration's: left alone
        run.fail(f"{name}: unable to create {kind} - a {_kind(link)[0] or 'network device'} of that name exists")
        return
    if kind == "bridge":
        if link is None:
            run.log(f"create bridge {name}")
            if not run.step(name, "create bridge", lambda: ipr.link("add", ifname=name, kind="bridge")):
                return
            run.refresh()
            link = run.links[name]
        stp = 1 if d.get("bridge_stp") == "on" else 0
        fd = str(d.get("bridge_fd") or 0)
        delay = int(float(fd) * 100) if re.fullmatch(r"\d+(\.\d+)?", fd) else 0  # seconds, in clock ticks
        run.step(name, "set STP and forward delay", lambda: ipr.link("set", index=link["index"], kind="bridge",
                                                                     br_stp_state=stp, br_forward_delay=delay))
        aware = 1 if d.get("bridge_vlan_aware") else 0
        if _vlan_filtering(link) != aware:
            run.log(f"{'enable' if aware else 'disable'} VLAN filtering on {name}")
            run.step(name, f"{'enable' if aware else 'disable'} VLAN filtering",
                     lambda: ipr.link("set", index=link["index"], kind="bridge", br_vlan_filtering=aware),
                     "vlan_filtering")
    elif kind == "bond" and link is None:
        mode = int(BOND_MODES.get(d.get("bond_mode") or "balance-rr", 0))
        run.log(f"create bond {name} (mode {d.get('bond_mode') or 'balance-rr'})")
        run.step(name, "create bond", lambda: ipr.link("add", ifname=name, kind="bond", bond_mode=mode,
                                                        bond_miimon=int(d.get("bond_miimon") or 100)), "bond")
    elif kind == "vlan" and link is None:
        parent, vid = d.get("vlan-raw-device"), int(d.get("vlan-id") or 0)
        if run.index(parent) is None:
            run.fail(f"{name}: unable to create vlan - parent '{parent}' does not exist")
            return
        run.log(f"create vlan {name} (id {vid} on {parent})")
        run.step(name, "create vlan", lambda: ipr.link("add", ifname=name, kind="vlan", link=run.index(parent),
                                                        vlan_id=vid), "vlan")


def _addresses(d: dict) -> set[tuple[str, int]]:
    out = set()
    for six in ("", "6"):
        if d.get("method" + six) == "static" and d.get("address" + six):
            out.add((str(ipaddress.ip_address(d["address" + six])), int(d.get("netmask" + six) or
                                                                         (128 if six else 32))))
    return out


def _settings(run: _Run, name: str, d: dict, before: dict) -> None:
    ipr, index = run.ipr, run.index(name)
    if d.get("mtu") and run.links[name].get_attr("IFLA_MTU") != int(d["mtu"]):
        run.log(f"set mtu {d['mtu']} on {name}")
        run.step(name, "set mtu", lambda: ipr.link("set", index=index, mtu=int(d["mtu"])))
    members = split(d.get("bridge_ports")) + split(d.get("slaves"))
    for port in split(before.get("bridge_ports")) + split(before.get("slaves")):
        link = run.links.get(port)
        if port not in members and link is not None and link.get_attr("IFLA_MASTER") == index:
            run.log(f"release {port} from {name}")
            run.step(port, f"leave {name}", lambda p=link["index"]: ipr.link("set", index=p, master=0))
    for port in members:
        link = run.links.get(port)
        if link is None:
            run.fail(f"{name}: port '{port}' does not exist")
            continue
        if link.get_attr("IFLA_MASTER") != index:
            run.log(f"add {port} to {name}")
            if d["type"] == "bond":  # a bond takes only slaves that are down
                run.step(port, "take it down", lambda p=link["index"]: ipr.link("set", index=p, state="down"))
            run.step(port, f"join {name}", lambda p=link["index"]: ipr.link("set", index=p, master=index))
    have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index)}
    want = _addresses(d)
    for addr, bits in sorted(_addresses(before) - want):
        if (addr, bits) in have:
            run.log(f"remove address {addr}/{bits} from {name}")
            run.step(name, f"remove address {addr}/{bits}",
                     lambda a=addr, b=bits: ipr.addr("del", index=index, address=a, prefixlen=b))
    for addr, bits in sorted(want - have):
        run.log(f"add address {addr}/{bits} to {name}")
        run.step(name, f"add address {addr}/{bits}",
                 lambda a=addr, b=bits: ipr.addr("add", index=index, address=a, prefixlen=b))
    if d["type"] == "bridge" and d.get("bridge_vlan_aware") and _vlan_filtering(run.links[name]):
        for port in members:
            if run.index(port) is not None:
                _vids(run, port, d.get("bridge_vids") or "2-4094")
    if d.get("autostart"):
        for port in members:
            if run.index(port) is not None:
                run.step(port, "bring it up", lambda p=run.index(port): ipr.link("set", index=p, state="up"))
        if not run.links[name]["flags"] & IFF_UP:
            run.log(f"bring up {name}")
        run.step(name, "bring it up", lambda: ipr.link("set", index=index, state="up"))


def _vids(run: _Run, port: str, vids: str) -> None:
    """A VLAN-aware bridge's allowed VLANs on its port (ifupdown2's `bridge-vids`)."""
    for item in split(vids):
        first, _, last = item.partition("-")
        if last:
            infos = [{"vid": int(first), "flags": VLAN_RANGE_BEGIN}, {"vid": int(last), "flags": VLAN_RANGE_END}]
        else:
            infos = [{"vid": int(first), "flags": 0}]
        for info in infos:
            run.step(port, f"allow VLANs {item}",
                     lambda i=info: run.ipr.vlan_filter("add", index=run.index(port), vlan_info=i), "vlan_filtering")


def _gateways(run: _Run, name: str, d: dict, before: dict) -> None:
    ipr, index = run.ipr, run.index(name)
    for six, default in (("", "0.0.0.0/0"), ("6", "::/0")):
        gateway, old = d.get("gateway" + six), before.get("gateway" + six)
        if old and old != gateway:
            run.log(f"remove default gateway {old} from {name}")
            try:
                ipr.route("del", dst=default, gateway=old, oif=index)
            except NetlinkError:
                pass  # gone already
        if gateway:
            run.log(f"default gateway {gateway} on {name}")
            run.step(name, f"set default gateway {gateway}",
                     lambda g=gateway, dst=default: ipr.route("replace", dst=dst, gateway=g, oif=index))
