"""/nodes/{node}/network: the node's interfaces, pending changes, apply and revert (pve-manager
`PVE/API2/Network.pm`; the rules in api/services/network.py)."""

from __future__ import annotations

from api.context import Ctx, Reply
from api.registry import API
from api.returns import BOOL, INT, STR, array, obj
from api.schema import NODE, UPID_RETURN, Param, Permission, split_list
from api.services import network

TYPES = ("bridge", "bond", "eth", "alias", "vlan", "fabric", "OVSBridge", "OVSBond", "OVSPort", "OVSIntPort", "vnet")
BOND_MODES = ("balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb",
              "balance-slb", "lacp-balance-slb", "lacp-balance-tcp")
IFACE = Param("iface", format="pve-iface", optional=False, min_length=2, max_length=20,
              description="The interface's name.")
IFACE_PATH = Param("iface", format="pve-iface", optional=False, min_length=2, max_length=20, location="path",
                   description="The interface's name.")
# Network.pm `$confdesc` (OVS's options aside: gpve has no Open vSwitch)
SETTINGS = [
    Param("type", optional=False, enum=(*TYPES, "unknown"), description="The interface's type."),
    Param("comments", description="A note on the interface (its IPv4 stanza)."),
    Param("comments6", description="A note on the interface (its IPv6 stanza)."),
    Param("autostart", "boolean", description="Bring the interface up when the configuration is applied."),
    Param("bridge_vlan_aware", "boolean", description="VLAN filtering on the bridge."),
    Param("bridge_vids", format="pve-vlan-id-or-range-list",
          description="VLANs the ports of a VLAN-aware bridge carry, such as '2 4 100-200' (default 2-4094)."),
    Param("bridge_ports", format="pve-iface-list", description="The bridge's ports."),
    Param("slaves", format="pve-iface-list", description="The bond's slaves."),
    Param("bond_mode", enum=BOND_MODES, description="The bond's mode."),
    Param("bond-primary", format="pve-iface", description="The primary slave of an active-backup bond."),
    Param("bond_xmit_hash_policy", enum=("layer2", "layer2+3", "layer3+4"),
          description="How balance-xor and 802.3ad bonds pick a slave."),
    Param("vlan-raw-device", format="pve-iface", description="The interface a VLAN sits on."),
    Param("vlan-id", "integer", minimum=1, maximum=4094, description="The tag of a VLAN with a name of its own."),
    Param("gateway", format="ipv4", description="The IPv4 default gateway (one per node)."),
    Param("netmask", format="ipv4mask", description="The IPv4 netmask."),
    Param("address", format="ipv4", description="The IPv4 address."),
    Param("cidr", format="CIDRv4", description="The IPv4 address with its prefix length."),
    Param("mtu", "integer", minimum=1280, maximum=65520, description="The MTU."),
    Param("gateway6", format="ipv6", description="The IPv6 default gateway (one per node)."),
    Param("netmask6", "integer", minimum=0, maximum=128, description="The IPv6 prefix length."),
    Param("address6", format="ipv6", description="The IPv6 address."),
    Param("cidr6", format="CIDRv6", description="The IPv6 address with its prefix length."),
]
AUDIT = Permission("Sys.Audit", "/nodes/{node}")
MODIFY = Permission("Sys.Modify", "/nodes/{node}")
# An interface as Proxmox's reader gives it (pve-common `PVE/Network/Interfaces.pm`): what its file says, and
# `exists`/`active` from the host.
SETTINGS_SHAPE = {
    "type": STR, "method": STR, "method6": STR, "families": array({"type": "string", "enum": ["inet", "inet6"]}),
}
OPTIONAL_SHAPE = {
    "priority": INT, "autostart": BOOL, "exists": BOOL, "active": BOOL, "comments": STR, "address": STR,
    "netmask": STR, "cidr": STR, "gateway": STR, "address6": STR, "netmask6": INT, "cidr6": STR, "gateway6": STR,
    "bridge_ports": STR, "bridge_stp": STR, "bridge_fd": STR, "bridge_vlan_aware": BOOL, "bridge_vids": STR,
    "slaves": STR, "bond_mode": STR, "bond_miimon": STR, "bond_xmit_hash_policy": STR, "bond-primary": STR,
    "vlan-raw-device": STR, "vlan-id": INT, "vlan-protocol": STR, "link-type": STR, "mtu": INT,
    "options": array(STR), "options6": array(STR),
}
ROW = obj({"iface": STR, **SETTINGS_SHAPE}, OPTIONAL_SHAPE)


@API.endpoint("GET", "/nodes/{node}/network",
              params=[NODE, Param("type", enum=(*TYPES, "any_bridge", "any_local_bridge", "include_sdn"),
                                  description="Only interfaces of this type.")],
              returns=array(ROW))
async def list_network(ctx: Ctx, p: dict) -> Reply:
    """The node's interfaces: the pending configuration when there is one, its diff beside the rows as
    `changes`. Bridges only for callers with SDN.Audit or SDN.Use on /sdn/zones/localnetwork/BRIDGE."""
    return await network.list_interfaces(ctx, p["node"], p.get("type"))


@API.endpoint("POST", "/nodes/{node}/network", params=[NODE, IFACE, *SETTINGS], permission=MODIFY)
async def create_network(ctx: Ctx, p: dict) -> None:
    """Add an interface to the configuration (pending until applied)."""
    await network.create(ctx, p["node"], p["iface"], p["type"], p)


@API.endpoint("PUT", "/nodes/{node}/network", params=[NODE, Param("regenerate-frr", "boolean", default=0)],
              permission=MODIFY, returns=UPID_RETURN)
async def reload_network(ctx: Ctx, p: dict) -> str:
    """Apply the pending configuration: it becomes the node's and Linux is configured from it, in a `srvreload`
    task."""
    return await network.reload(ctx, p["node"])


@API.endpoint("DELETE", "/nodes/{node}/network", params=[NODE], permission=MODIFY)
async def revert_network(ctx: Ctx, p: dict) -> None:
    """Drop the pending changes."""
    await network.revert(ctx, p["node"])


@API.endpoint("GET", "/nodes/{node}/network/{iface}", params=[NODE, IFACE_PATH], permission=AUDIT,
              returns=obj(SETTINGS_SHAPE, OPTIONAL_SHAPE))
async def network_config(ctx: Ctx, p: dict) -> dict:
    """One interface's settings (pending ones when there are)."""
    return await network.get_interface(ctx, p["node"], p["iface"])


@API.endpoint("PUT", "/nodes/{node}/network/{iface}",
              params=[NODE, IFACE_PATH, *SETTINGS, Param("delete", format="pve-configid-list",
                                                         description="Settings to remove.")],
              permission=MODIFY)
async def update_network(ctx: Ctx, p: dict) -> None:
    """Change an interface's settings (pending until applied)."""
    await network.update(ctx, p["node"], p["iface"], p["type"], p, split_list(p.get("delete")))


@API.endpoint("DELETE", "/nodes/{node}/network/{iface}", params=[NODE, IFACE_PATH], permission=MODIFY)
async def delete_network(ctx: Ctx, p: dict) -> None:
    """Remove an interface from the configuration (pending until applied)."""
    await network.delete(ctx, p["node"], p["iface"])
