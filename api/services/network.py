"""The node's network configuration, as pve-manager's `PVE/API2/Network.pm` handles it.

Changes are pending (the node's `interfaces.new`, hypervisor/network.py) until `reload` applies them in a
`srvreload` task, or `revert` drops them. Each change is checked as Proxmox checks it, with its words: a name in
use (`interface already exists`), a second default gateway, a port another bridge or bond holds, then what
Proxmox's writer refuses (a port, slave or VLAN parent that does not exist, an MTU above its parent's); and,
as Proxmox's GUI asks, bridges named `vmbrN` and bonds `bondN`. A refused change writes nothing.

Departures: `method`/`families` follow the interface's addresses after the change (Proxmox derives them from the
request alone, so a PUT that leaves `address` out marks a static interface `manual`); a PUT cannot change an
interface's `type`; OVS types answer Proxmox's "not installed" error, `alias`, `fabric` and `vnet` are refused;
an `eth` must be one of the host's NICs.
"""

from __future__ import annotations

import ipaddress
import re

from api.context import Ctx, Reply
from api.schema import ParamErrors
from engine.errors import Rejection, bad_request, not_found
from engine.network import RELOAD, RELOAD_ID, ReloadNetwork
from hypervisor import netconfig
from hypervisor.network import NodeNetwork

# The settings of an interface a request may give (Network.pm `$confdesc`, without OVS's)
SETTINGS = ("comments", "comments6", "autostart", "bridge_vlan_aware", "bridge_vids", "bridge_ports", "slaves",
            "bond_mode", "bond-primary", "bond_xmit_hash_policy", "vlan-raw-device", "vlan-id", "gateway", "netmask",
            "address", "cidr", "mtu", "gateway6", "netmask6", "address6", "cidr6")
TYPES = ("bridge", "bond", "eth", "vlan")
NAMES = {"bridge": (r"vmbr\d{1,4}", "Format: vmbrN, where 0 <= N <= 9999"),
         "bond": (r"bond\d{1,4}", "Format: bondN, where 0 <= N <= 9999")}
BOOLEAN_KEYS = ("autostart", "exists", "active", "bridge_vlan_aware")
INTEGER_KEYS = ("priority", "mtu", "vlan-id", "netmask6")


def _network(ctx: Ctx, node: str) -> NodeNetwork:
    if node != ctx.node.name:  # another member's request is forwarded before it gets here
        raise not_found(f"no such cluster node '{node}'")
    if ctx.rt.network is None:
        raise Rejection(501, "this node does not manage its network")
    return ctx.rt.network


def row(d: dict) -> dict:
    """An interface as Proxmox answers it: its settings, with booleans 1 and the declared integers as numbers."""
    out = {}
    for key, value in sorted(d.items()):  # keys in order, as Proxmox's JSON writer sorts them
        if key in BOOLEAN_KEYS:
            if value:
                out[key] = 1
        elif key in INTEGER_KEYS and str(value).isdigit():
            out[key] = int(value)
        elif value not in (None, ""):
            out[key] = value
    return out


def _visible(ctx: Ctx, name: str, d: dict) -> bool:
    """Bridges only for those who may use them (Proxmox's `check_sdn_bridge` on the `localnetwork` zone)."""
    if d.get("type") != "bridge" or ctx.user == "root@pam":
        return True
    return any(ctx.can(p, f"/sdn/zones/localnetwork/{name}") for p in ("SDN.Audit", "SDN.Use"))


async def list_interfaces(ctx: Ctx, node: str, kind: str | None = None) -> Reply:
    """Every interface but the loopback (with `changes`, the pending diff, beside the rows when there is one);
    `kind` filters by type, `any_bridge`/`any_local_bridge` meaning bridges and `include_sdn` everything."""
    snap = await _network(ctx, node).read()
    rows = []
    for name, d in sorted(snap.ifaces.items(), key=lambda item: item[0]):
        if name == "lo" or not _visible(ctx, name, d):
            continue
        if kind and kind != "include_sdn" and d["type"] != kind and \
                not (kind in ("any_bridge", "any_local_bridge") and d["type"] == "bridge"):
            continue
        rows.append(dict(sorted({"iface": name, **row(d)}.items())))
    return Reply(rows, extra={"changes": snap.changes} if snap.changes else {})


async def get_interface(ctx: Ctx, node: str, iface: str) -> dict:
    snap = await _network(ctx, node).read()
    if iface not in snap.ifaces:
        raise ParamErrors({"iface": "interface does not exist"})
    return row(snap.ifaces[iface])


def _check_type(kind: str, iface: str, params: dict, links: dict) -> None:
    if kind.startswith("OVS"):
        raise bad_request("Open VSwitch is not installed (need package 'openvswitch-switch')")
    if kind not in TYPES:
        raise ParamErrors({"type": f"interface type '{kind}' is not supported by gpve"})
    if kind in NAMES and not re.fullmatch(NAMES[kind][0], iface):
        raise ParamErrors({"iface": NAMES[kind][1]})
    if kind == "vlan" and not re.fullmatch(r"\S+\.\d+", iface) and not params.get("vlan-raw-device"):
        raise ParamErrors({"vlan-raw-device": "a VLAN not named <interface>.<vlan id> needs its raw device"})
    if kind == "eth" and not links.get(iface, {}).get("nic"):
        raise ParamErrors({"iface": f"interface '{iface}' is no network card of this node"})


def _check_duplicates(ifaces: dict[str, dict], iface: str, params: dict) -> None:
    """Network.pm `$check_duplicate` (gateways) and `$check_duplicate_ports`."""
    for key, what in (("gateway", "Default gateway"), ("gateway6", "Default ipv6 gateway")):
        if params.get(key):
            other = next((n for n, d in sorted(ifaces.items()) if n != iface and d.get(key)), None)
            if other:
                raise ParamErrors({key: f"{what} already exists on interface '{other}'."})
    key = next((k for k in ("bridge_ports", "slaves") if params.get(k)), None)
    if key is None:
        return
    wanted = set(netconfig.split(params.get("bridge_ports"))) | set(netconfig.split(params.get("slaves")))
    for name, d in sorted(ifaces.items()):
        used = next((p for p in netconfig.ports(d) if p in wanted), None) if name != iface else None
        if used:
            raise ParamErrors({key: f"{used} is already used on interface '{name}'."})


def _cidr_to_address(params: dict) -> None:
    """Network.pm `$map_cidr_to_address_netmask`."""
    for six in ("", "6"):
        cidr = params.pop("cidr" + six, None)
        if not cidr:
            continue
        if params.get("address" + six):
            raise ParamErrors({"address" + six: f"address{six} conflicts with cidr{six}"})
        if params.get("netmask" + six):
            raise ParamErrors({"netmask" + six: f"netmask{six} conflicts with cidr{six}"})
        params["address" + six], params["netmask" + six] = cidr.split("/", 1)


def _check_requires(params: dict) -> None:
    """The schema's `requires`: an address comes with its netmask and a netmask with its address."""
    for key, other in (("address", "netmask"), ("netmask", "address"), ("address6", "netmask6"),
                       ("netmask6", "address6")):
        if params.get(key) not in (None, "") and params.get(other) in (None, ""):
            raise ParamErrors({other: f"missing property - '{key}' requires this property"})


def _check_ipv6(address: str, bits: int) -> None:
    """Network.pm `$check_ipv6_settings`: a global, unique-local or link-local unicast address, not its network's
    (anycast) address."""
    ip = ipaddress.IPv6Address(address)
    network = ipaddress.IPv6Network(f"{address}/{bits}", strict=False)
    kind = "ANYCAST" if bits < 128 and ip == network.network_address else \
        "MULTICAST" if ip.is_multicast else "UNSPECIFIED" if ip.is_unspecified else \
        "LOOPBACK" if ip.is_loopback else "RESERVED" if ip.is_reserved or ip.ipv4_mapped else ""
    if kind:
        raise ParamErrors({"address6": f"{address} with type '{kind}', cannot be used as host IPv6 address."})


def _settings(params: dict) -> dict:
    out = {}
    for key in SETTINGS:
        if key in params and params[key] not in (None, ""):
            out[key] = params[key]
    if out.get("bridge_vids"):  # space separated, as the file wants it
        out["bridge_vids"] = " ".join(netconfig.split(out["bridge_vids"]))
    for key in ("bridge_ports", "slaves"):
        if key in out:
            out[key] = " ".join(netconfig.split(out[key]))
    if "netmask" in out:
        out["netmask"] = str(netconfig.mask_bits(out["netmask"]))
    return out


def _addressing(d: dict) -> None:
    """`families` and `method`/`method6` from the interface's addresses."""
    d["families"] = [f for f, key in (("inet", "address"), ("inet6", "address6")) if d.get(key)] or ["inet"]
    d["method"] = "static" if d.get("address") else "manual"
    d["method6"] = "static" if d.get("address6") else "manual"
    for six in ("", "6"):
        if not d.get("address" + six):
            for key in ("netmask", "gateway", "cidr"):
                d.pop(key + six, None)
        else:
            d.pop("cidr" + six, None)


def _write(net: NodeNetwork, snap) -> None:
    try:
        net.write(snap)
    except netconfig.ConfigError as exc:
        raise bad_request(str(exc)) from None


async def create(ctx: Ctx, node: str, iface: str, kind: str, params: dict) -> None:
    net = _network(ctx, node)
    params = dict(params)
    async with net.lock:
        snap = await net.read()
        _check_type(kind, iface, params, await net.host_links())
        _check_requires(params)
        if iface in snap.ifaces:
            raise ParamErrors({"iface": "interface already exists"})
        _check_duplicates(snap.ifaces, iface, params)
        _cidr_to_address(params)
        if params.get("address6"):
            _check_ipv6(params["address6"], int(params["netmask6"]))
        d = {"type": kind, **_settings(params)}
        _addressing(d)
        snap.ifaces[iface] = d
        _write(net, snap)


async def update(ctx: Ctx, node: str, iface: str, kind: str, params: dict, delete: list[str]) -> None:
    net = _network(ctx, node)
    params = dict(params)
    async with net.lock:
        snap = await net.read()
        d = snap.ifaces.get(iface)
        if d is None:
            raise ParamErrors({"iface": "interface does not exist"})
        if kind != d["type"]:
            raise ParamErrors({"type": f"interface '{iface}' is a {d['type']}, not a {kind}"})
        _check_requires(params)
        for key in delete:
            d.pop(key, None)
            if key in ("cidr", "cidr6"):
                six = key[4:]
                d.pop("address" + six, None)
                d.pop("netmask" + six, None)
        _cidr_to_address(params)
        _check_duplicates(snap.ifaces, iface, params)
        if params.get("address6"):
            _check_ipv6(params["address6"], int(params["netmask6"]))
        d.update(_settings(params))
        _addressing(d)
        _write(net, snap)


async def delete(ctx: Ctx, node: str, iface: str) -> None:
    net = _network(ctx, node)
    async with net.lock:
        snap = await net.read()
        if iface not in snap.ifaces:
            raise ParamErrors({"iface": "interface does not exist"})
        del snap.ifaces[iface]
        _write(net, snap)


async def revert(ctx: Ctx, node: str) -> None:
    net = _network(ctx, node)
    async with net.lock:
        net.revert()


async def reload(ctx: Ctx, node: str) -> str:
    """Start the task that applies the pending configuration; its UPID."""
    _network(ctx, node)
    upid, starttime = ctx.node.new_upid(node, RELOAD, RELOAD_ID, ctx.user)
    result = await ctx.node.submit(ReloadNetwork(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, node=node,
                                                 upid=upid, starttime=starttime))
    return result["upid"]
