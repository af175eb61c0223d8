"""/cluster: status, nextid and resources."""

from __future__ import annotations

from api.compat.guests import guest_summary
from api.compat.hostinfo import cgroup_mode, host_figures
from api.context import Ctx, Reply
from api.native.figures import remote_figures
from api.registry import API
from api.returns import BOOL, INT, NUM, STR, array, const, obj, one_of
from api.schema import Param
from api.services import cluster
from api.views import views
from hypervisor.sampler import GUEST_FIGURES as SAMPLED


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


# Row shapes of /cluster/resources, per type, as pve-manager's `PVE/API2/Cluster.pm` resources and
# `PVE/API2Tools.pm` extract_{vm,node,storage}_stats build them: required keys are the ones Proxmox always sends.
NODE_STATUS = {"type": "string", "enum": ["online", "offline", "unknown"]}
NODE_KEYS = {"id": STR, "type": const("node"), "node": STR, "status": NODE_STATUS, "level": STR}
NODE_OPTIONAL = {"cgroup-mode": INT}  # from the node's registration (Proxmox: its `static-info`)
NODE_FIGURES = {"uptime": INT, "cpu": NUM, "mem": INT, "disk": INT, "maxcpu": INT, "maxmem": INT, "maxdisk": INT}
GUEST_FIGURES = {"uptime": INT, "cpu": NUM, "mem": INT, "maxmem": INT, "maxcpu": NUM}
QEMU_ROW = obj({"id": STR, "type": const("qemu"), "vmid": INT, "node": STR,
                "status": {"type": "string", "enum": ["running", "stopped", "unknown"]}, "name": STR,
                "template": BOOL, **GUEST_FIGURES, "memhost": INT, "maxdisk": INT, "disk": INT, "netin": INT,
                "netout": INT, "diskread": INT, "diskwrite": INT},
               {"pool": STR, "tags": STR, "lock": STR})
NODE_ROW = obj({**NODE_KEYS, **NODE_FIGURES}, NODE_OPTIONAL)  # for callers with Sys.Audit on /nodes/{node}
NODE_ROW_UNAUDITED = obj(NODE_KEYS, NODE_OPTIONAL)  # the others see no figures, as in Proxmox
STORAGE_ROW = obj({"id": STR, "type": const("storage"), "storage": STR, "node": STR,
                   "status": {"type": "string", "enum": ["available", "unknown"]}, "plugintype": STR, "content": STR,
                   "shared": BOOL, "disk": INT, "maxdisk": INT})
POOL_ROW = obj({"id": STR, "type": const("pool"), "pool": STR}, GUEST_FIGURES)  # figures: its running guests'
NETWORK_ROW = obj({"id": STR, "type": const("network"), "network-type": {"type": "string", "enum": ["zone"]},
                   "network": STR, "node": STR, "status": STR})
GUEST_LIVE = {k: QEMU_ROW["properties"][k] for k in SAMPLED}  # a guest's figures a sampler measures
RESOURCE_ROW = one_of(QEMU_ROW, NODE_ROW, NODE_ROW_UNAUDITED, STORAGE_ROW, POOL_ROW, NETWORK_ROW)


def node_resources(ctx: Ctx, remote: dict[str, dict] | None = None) -> list[dict]:
    """One row per member: figures for callers with Sys.Audit on the node (this node's measured here; another
    online member's from `remote`, its `/v1/figures` (api/native/figures.py); where it gave none, `maxcpu`/`maxmem`
    from its registration and zeros)."""
    with ctx.node.read() as s:
        members = {name: dict(n.get("static") or {}) for name, n in sorted(s.nodes.items())}
    rows = []
    for name, static in members.items():
        online = ctx.node.node_online(name)
        row: dict = {"id": f"node/{name}", "type": "node", "node": name, "status": "online" if online else "offline",
                     "level": ""}  # the subscription level: none
        mode = cgroup_mode() if name == ctx.node.name else static.get("cgroup-mode")
        if mode is not None:
            row["cgroup-mode"] = mode
        if ctx.can("Sys.Audit", f"/nodes/{name}"):
            if name == ctx.node.name:
                row.update(host_figures(ctx.node.spec.data_dir, ctx.rt.sampler))
            else:
                row.update(uptime=0, cpu=0, mem=0, disk=0, maxcpu=static.get("cpus", 0),
                           maxmem=static.get("memory", 0), maxdisk=0)
                if online:
                    row.update(_declared((remote or {}).get(name, {}).get("node", {}), NODE_FIGURES))
        rows.append(row)
    return rows


SORT_KEYS = ("id", "name", "vmid", "node", "status", "type", "mem", "maxmem", "cpu", "maxcpu", "disk", "maxdisk",
             "uptime")


@API.endpoint("GET", "/cluster/resources", paged=True,
              params=[Param("type", enum=("vm", "storage", "node", "sdn", "pool", "qemu", "lxc")),
                      Param("status"), Param("node", format="pve-node"), Param("pool"),
                      Param("sort", enum=SORT_KEYS), Param("order", enum=("asc", "desc"), default="asc")],
              returns=array(RESOURCE_ROW))
async def cluster_resources(ctx: Ctx, p: dict) -> Reply:
    """Every resource in the cluster, with `type`, `status`, `node`, `pool` filters and `sort`/`order`.

    Rows as Proxmox's: guests (`qemu`), pools (with their running guests' figures), nodes, storages and, unfiltered,
    each node's `localnetwork` zone (`network`, as Proxmox VE 9.1 lists it without SDN). No `sdn` rows: that type
    lists configured SDN zones, and there are none.
    """
    kind = p.get("type")
    remote = await remote_figures(ctx) if kind in (None, "vm", "qemu", "pool", "node") else {}
    before: list[dict] = []
    guests = all_guest_rows(ctx, remote) if kind in (None, "vm", "qemu", "pool") else []
    if kind in (None, "pool"):
        before += pool_resources(ctx, guests)
    visible, encoded = visible_guest_rows(ctx, guests) if kind in (None, "vm", "qemu") else ([], [])
    after: list[dict] = []
    if kind in (None, "node"):
        after.extend(node_resources(ctx, remote))
    if kind in (None, "storage"):
        after.extend(storage_resources(ctx))
    if kind is None and ctx.can("SDN.Audit", "/sdn/zones/localnetwork"):
        with ctx.node.read() as s:
            names = sorted(s.nodes)
        after += [{"id": f"network/{name}/zone/localnetwork", "type": "network", "network-type": "zone",
                   "network": "localnetwork", "node": name, "status": "ok"} for name in names]
    rows = before + visible + after
    if not any(p.get(key) for key in ("status", "node", "pool", "sort")):
        return Reply(rows, encoded=before + encoded + after)  # the kept guest rows answered with their JSON
    for key in ("status", "node", "pool"):
        if p.get(key):
            rows = [r for r in rows if r.get(key) == p[key]]
    if p.get("sort"):
        key = p["sort"]
        present = [r for r in rows if key in r]
        present.sort(key=lambda r: (isinstance(r[key], str), r[key]), reverse=p.get("order") == "desc")
        rows = present + [r for r in rows if key not in r]
    return Reply(rows)


def _declared(figures: dict, keys: dict) -> dict:
    """Only the figures a row declares (another member's answer is not trusted to be closed)."""
    return {k: v for k, v in figures.items() if k in keys}


def resource_row(guest: dict) -> dict:
    """A guest's `/cluster/resources` row without live figures or pool (kept per guest by api/views.py)."""
    summary = guest_summary(guest)
    summary["maxcpu"] = summary.pop("cpus")
    return {"id": f"qemu/{summary['vmid']}", "type": "qemu", "node": guest["node"], "template": 0, "memhost": 0,
            **summary}


def all_guest_rows(ctx: Ctx, remote: dict[str, dict]) -> list[dict]:
    """Every guest's row, whether the caller may see it or not: live figures from this node's sampler, or from
    `remote` (the other members' `/v1/figures`) for a guest running on another online member. Kept between requests
    (api/views.py `memo`) while the state, this node's sampled figures, the other members' figures and who is online
    stay the same; the rows are shared: do not change them."""
    sampler = ctx.rt.sampler
    with ctx.node.read() as s:
        online = tuple((name, ctx.node.node_online(name)) for name in sorted(s.nodes))
        basis = (s, s.applied, sampler.version if sampler is not None else -1, tuple(sorted(remote.items())), online)
        return views(ctx.node).memo(("guest-rows", tuple(sorted(remote))), basis,
                                    lambda: _guest_rows(ctx, s, remote, dict(online)))


def _guest_rows(ctx: Ctx, s, remote: dict[str, dict], online: dict[str, bool]) -> list[dict]:
    pool_of = {v: pid for pid, pool in s.access.get("pool", {}).items() for v in pool["vms"]}
    sampler, here = ctx.rt.sampler, ctx.node.name
    rows = []
    for _, row in views(ctx.node).guest_rows(s, resource_row):
        node_name = row["node"]
        if not online.get(node_name, False) and not ctx.node.node_online(node_name):
            row = {**row, "status": "unknown"}  # as Proxmox shows guests of a node it cannot reach
        elif row["status"] == "running":
            if node_name == here:
                live = sampler.guest(row["vmid"]) if sampler is not None else {}
            else:
                live = _declared(remote.get(node_name, {}).get("guests", {}).get(str(row["vmid"]), {}), GUEST_LIVE)
            if live:
                row = {**row, **live}
        if row["vmid"] in pool_of:
            row = {**row, "pool": pool_of[row["vmid"]]}
        rows.append(row)
    return rows


def guest_resources(ctx: Ctx, guests: list[dict]) -> list[dict]:
    """The guests the caller may audit; `pool` only where it may audit the pool too."""
    return visible_guest_rows(ctx, guests)[0]


def visible_guest_rows(ctx: Ctx, guests: list[dict]) -> tuple[list[dict], list]:
    """`guest_resources` and each row's JSON (api/views.py `encoded`), kept per caller while `guests` (a kept list
    from `all_guest_rows`) and the state stay the same."""
    with ctx.node.read() as s:
        grants = views(ctx.node).grants(s, ctx.user)
        basis = (guests, s, s.applied)

        def make() -> tuple[list[dict], list]:
            rows = []
            for row in guests:
                if "VM.Audit" not in grants.on_vm(row["vmid"]):
                    continue
                if "pool" in row and "Pool.Audit" not in grants.on(f"/pool/{row['pool']}"):
                    row = {k: v for k, v in row.items() if k != "pool"}
                rows.append(row)
            return rows, views(ctx.node).encoded(rows)

        return views(ctx.node).memo(("visible-guests", ctx.user), basis, make)


def pool_resources(ctx: Ctx, guests: list[dict]) -> list[dict]:
    """Pools the caller may audit, with the summed figures of their running guests (all of them, as Proxmox sums
    before it filters guests); `cpu` is weighted by each guest's CPUs."""
    with ctx.node.read() as s:
        pools = sorted(s.access.get("pool", {}))
        running_in = views(ctx.node).memo("pooled-running", (guests,), lambda: _running_in_pools(guests))
    rows = []
    for pid in pools:
        if not ctx.can("Pool.Audit", f"/pool/{pid}"):
            continue
        row: dict = {"id": f"/pool/{pid}", "type": "pool", "pool": pid}
        running = running_in.get(pid)
        if running:
            maxcpu = sum(g["maxcpu"] for g in running)
            row.update(uptime=max(g["uptime"] for g in running), mem=sum(g["mem"] for g in running),
                       maxmem=sum(g["maxmem"] for g in running), maxcpu=maxcpu,
                       cpu=sum(g["cpu"] * g["maxcpu"] for g in running) / maxcpu if maxcpu else 0)
        rows.append(row)
    return rows


def _running_in_pools(guests: list[dict]) -> dict[str, list[dict]]:
    running_in: dict[str, list[dict]] = {}
    for g in guests:
        if "pool" in g and g["status"] == "running":
            running_in.setdefault(g["pool"], []).append(g)
    return running_in


def storage_resources(ctx: Ctx) -> list[dict]:
    """This node's storages (other members' are not listed: their usage is measured on them)."""
    rows = []
    for sid, storage in sorted(ctx.rt.storages.items()):
        if not ctx.can("Datastore.Audit", f"/storage/{sid}"):
            continue
        usage = storage.usage()
        rows.append({"id": f"storage/{ctx.node.name}/{sid}", "type": "storage", "storage": sid, "node": ctx.node.name,
                     "status": "available", "plugintype": "dir", "content": ",".join(storage.content), "shared": 0,
                     "disk": usage["used"], "maxdisk": usage["total"]})
    return rows
