"""/cluster: status, nextid and resources."""

from __future__ import annotations

from api.compat.guests import guest_summary
from api.compat.hostinfo import host_figures
from api.context import Ctx
from api.registry import API
from api.schema import Param, ParamErrors
from engine.errors import Rejection


@API.endpoint("GET", "/cluster/status", returns={"type": "array", "items": {"type": "object"}})
async def cluster_status(ctx: Ctx, p: dict) -> list:
    """Cluster and node membership, with quorum."""
    node = ctx.node
    with node.read() as s:
        name, version, nodes = s.cluster_name, s.version, sorted(s.nodes.values(), key=lambda n: n["nodeid"])
    quorate = int(node.quorate())
    rows: list[dict] = [{"type": "cluster", "id": "cluster", "name": name, "nodes": len(nodes), "quorate": quorate,
                         "version": version}]
    for n in nodes:
        rows.append({"type": "node", "id": f"node/{n['name']}", "name": n["name"], "nodeid": n["nodeid"],
                     "ip": n["ip"], "online": int(node.node_online(n["name"])), "local": int(n["name"] == node.name),
                     "level": ""})
    return rows


@API.endpoint("GET", "/cluster/nextid",
              params=[Param("vmid", "integer", minimum=100, maximum=999_999_999, format="pve-vmid")],
              returns={"type": "string", "description": "The next free VMID."})
async def next_id(ctx: Ctx, p: dict) -> str:
    """The lowest free VMID; with `vmid`, check that one is free. Returns a string, as Proxmox does."""
    with ctx.node.read() as s:
        if "vmid" in p:
            if s.vmid_taken(p["vmid"], ctx.now, ctx.user):
                raise ParamErrors({"vmid": f"VM {p['vmid']} already exists"})
            return str(p["vmid"])
        vmid = s.next_free_vmid(ctx.now)
    if vmid is None:
        raise Rejection(500, "unable to get any free VMID in range [100, 999999999]")
    return str(vmid)


def node_resources(ctx: Ctx) -> list[dict]:
    with ctx.node.read() as s:
        names = sorted(s.nodes)
    rows = []
    for name in names:
        online = ctx.node.node_online(name)
        row = {"id": f"node/{name}", "type": "node", "node": name, "status": "online" if online else "offline",
               "level": ""}
        if name == ctx.node.name:
            row.update(host_figures(ctx.node.spec.data_dir))
        rows.append(row)
    return rows


@API.endpoint("GET", "/cluster/resources",
              params=[Param("type", enum=("vm", "storage", "node", "sdn", "pool", "qemu", "lxc"))],
              returns={"type": "array", "items": {"type": "object"}})
async def cluster_resources(ctx: Ctx, p: dict) -> list:
    """Every resource in the cluster (guests, nodes), filtered by `type`."""
    kind = p.get("type")
    rows: list[dict] = []
    if kind in (None, "vm", "qemu"):
        with ctx.node.read() as s:
            guests = [(g["node"], guest_summary(g)) for _, g in sorted(s.guests.items())]
        for node_name, summary in guests:
            if not ctx.can("VM.Audit", f"/vms/{summary['vmid']}"):
                continue
            summary["maxcpu"] = summary.pop("cpus")
            rows.append({"id": f"qemu/{summary['vmid']}", "type": "qemu", "node": node_name, **summary})
    if kind in (None, "node"):
        rows.extend(node_resources(ctx))
    return rows

