"""/cluster: status, nextid and resources."""

from __future__ import annotations

from api.compat.guests import guest_summary
from api.compat.hostinfo import host_figures
from api.context import Ctx
from api.registry import API
from api.schema import Param
from api.services import cluster


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
    """The lowest free VMID; with `vmid`, check that one is free (linearizable: api/services/cluster.py).
    Returns a string, as Proxmox does."""
    return str(await cluster.next_id(ctx, p.get("vmid")))


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


SORT_KEYS = ("id", "name", "vmid", "node", "status", "type", "mem", "maxmem", "cpu", "maxcpu", "disk", "maxdisk",
             "uptime")


@API.endpoint("GET", "/cluster/resources", paged=True,
              params=[Param("type", enum=("vm", "storage", "node", "sdn", "pool", "qemu", "lxc")),
                      Param("status"), Param("node", format="pve-node"), Param("pool"),
                      Param("sort", enum=SORT_KEYS), Param("order", enum=("asc", "desc"), default="asc")],
              returns={"type": "array", "items": {"type": "object"}})
async def cluster_resources(ctx: Ctx, p: dict) -> list:
    """Every resource in the cluster, with `type`, `status`, `node`, `pool` filters and `sort`/`order`."""
    kind = p.get("type")
    rows: list[dict] = []
    if kind in (None, "vm", "qemu", "pool"):
        with ctx.node.read() as s:
            pool_of = {v: pid for pid, pool in s.access.get("pool", {}).items() for v in pool["vms"]}
            guests = [(g["node"], guest_summary(g)) for _, g in sorted(s.guests.items())]
            pools = sorted(s.access.get("pool", {}))
        if kind != "pool":
            online = {name: ctx.node.node_online(name) for name in {n for n, _ in guests}}
            for node_name, summary in guests:
                if not ctx.can("VM.Audit", f"/vms/{summary['vmid']}"):
                    continue
                summary["maxcpu"] = summary.pop("cpus")
                row = {"id": f"qemu/{summary['vmid']}", "type": "qemu", "node": node_name, **summary}
                if not online[node_name]:
                    row["status"] = "unknown"  # as Proxmox shows guests of a node it cannot reach
                if summary["vmid"] in pool_of:
                    row["pool"] = pool_of[summary["vmid"]]
                rows.append(row)
        if kind in (None, "pool"):
            rows += [{"id": f"/pool/{pid}", "type": "pool", "pool": pid} for pid in pools
                     if ctx.can("Pool.Audit", f"/pool/{pid}")]
    if kind in (None, "node"):
        rows.extend(node_resources(ctx))
    if kind in (None, "storage"):
        rows.extend(storage_resources(ctx))
    for key in ("status", "node", "pool"):
        if p.get(key):
            rows = [r for r in rows if r.get(key) == p[key]]
    if p.get("sort"):
        key = p["sort"]
        present = [r for r in rows if key in r]
        present.sort(key=lambda r: (isinstance(r[key], str), r[key]), reverse=p.get("order") == "desc")
        rows = present + [r for r in rows if key not in r]
    return rows


def storage_resources(ctx: Ctx) -> list[dict]:
    rows = []
    for sid, storage in sorted(ctx.rt.storages.items()):
        if not ctx.can("Datastore.Audit", f"/storage/{sid}"):
            continue
        usage = storage.usage()
        rows.append({"id": f"storage/{ctx.node.name}/{sid}", "type": "storage", "storage": sid, "node": ctx.node.name,
                     "status": "available", "plugintype": "dir", "content": ",".join(storage.content), "shared": 0,
                     "disk": usage["used"], "maxdisk": usage["total"]})
    return rows
