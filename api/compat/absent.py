"""Proxmox features gpve does not have (containers, replication, HA, backup jobs, subscription, Ceph, SDN, firewall,
hardware mappings, metric servers, package updates, host disks), answered as a Proxmox node without them
configured answers, so that clients that read them on their way (monitoring, Terraform, Ansible) keep working.

One table drives the declarations: each row is a path, the feature, what `GET` answers there on a Proxmox node
where the feature is not configured (an empty list, options with only their `digest`, the subscription's
`notfound` status, ...) and which write methods Proxmox has on it; each of those writes answers
`501 Method 'POST /cluster/ha/resources' not implemented - gpve has no high availability (HA)` whatever it is sent.
A row whose answer is UNSUPPORTED answers its read 501 too: where a Proxmox node without the feature refuses
the read itself (Ceph: `binary not installed`).

Who reads what (read from the clients' sources): prometheus-pve-exporter's default collectors
(`/nodes/{node}/lxc`, `/nodes/{node}/replication`, `/nodes/{node}/subscription`, `/cluster/backup-info/not-backed-up`,
`/cluster/config/qdevice`); Telmate's provider reads `/cluster/ha/resources/{vmid}` with every guest and accepts
only an error starting `no such resource`; bpg's provider reads it on migrations (404 or "does not exist" means
none); Ansible's community.proxmox info modules list backup jobs, HA groups, resources and rules, firewall options,
rules and groups, SDN zones, vnets and IPAMs, Ceph daemons and pools.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from api.context import Ctx
from api.registry import API
from api.schema import NODE, VMID_PATH, Param, Permission
from api.services.guests import guest_or_404
from engine.errors import bad_request, not_found

UNSUPPORTED = "unsupported"  # the read itself answers 501
NO_READ = "no read"  # Proxmox has only writes on this path


@dataclass(frozen=True)
class Index:
    """A directory index listing the rows one level below, each as `{key: name}` (Proxmox's index shapes)."""

    key: str = "name"


@dataclass(frozen=True)
class Row:
    """One path of a feature gpve does not have: its read's answer, return shape, Proxmox's privilege and
    parameters for the read, and the write methods Proxmox has there (each declared, answering 501)."""

    path: str
    feature: str
    answer: Any = field(default_factory=list)  # a value (copied), Index, UNSUPPORTED, NO_READ or fn(ctx, params)
    returns: dict = field(default_factory=lambda: {"type": "array", "items": {"type": "object"}})
    permission: Permission = field(default_factory=lambda: Permission(check="all"))
    params: tuple[Param, ...] = ()
    writes: tuple[str, ...] = ()  # the write methods Proxmox has on this path: 501 here


ALL = Permission(check="all")
SYS_AUDIT = Permission("Sys.Audit", "/")
NODE_AUDIT = Permission("Sys.Audit", "/nodes/{node}")
VM_AUDIT = Permission("VM.Audit", "/vms/{vmid}")
OBJECT = {"type": "object"}
NO_OPTIONS = {"digest": hashlib.sha1(b"").hexdigest()}  # pve-firewall `copy_opject_with_digest` of no options
PATH_PARAMS = {
    "node": NODE, "vmid": VMID_PATH,
    "sid": Param("sid", optional=False, location="path", max_length=128,
                 description="HA resource ID (`vm:100`), or a guest's VMID."),
    "id": Param("id", optional=False, location="path", format="pve-configid", description="The entry's ID."),
}
PENDING = (Param("pending", "boolean"), Param("running", "boolean"))

CONTAINERS = "containers (LXC)"
REPLICATION = "storage replication"
HA = "high availability (HA)"
BACKUP = "backup jobs (vzdump)"
SUBSCRIPTION = "subscription"
CEPH = "Ceph"
SDN = "software-defined networking (SDN)"
FIREWALL = "firewall"
MAPPING = "hardware mappings"
METRICS = "external metric servers"
APT = "package management (APT)"
DISKS = "host disk management"
QDEVICE = "QDevice"


def _guest_firewall(answer: Any) -> Callable[[Ctx, dict], Any]:
    """A guest's firewall part: the guest must exist on that node (Proxmox's wording otherwise)."""
    def read(ctx: Ctx, p: dict) -> Any:
        guest_or_404(ctx, p["node"], p["vmid"])
        return copy.deepcopy(answer)
    return read


def _ha_resource(ctx: Ctx, p: dict) -> Any:
    """No HA resource exists (pve-ha-manager `parse_sid` and `read`): 404 `no such resource 'vm:N'`."""
    sid = p["sid"]
    if sid.isdigit():
        with ctx.node.read() as s:
            if int(sid) not in s.guests:
                raise not_found(f"unable do detect SID from VMID - VM/CT {sid} does not exist")
        sid = f"vm:{sid}"
    elif not re.fullmatch(r"\S+:\S+", sid):
        raise bad_request(f"unable to parse service id '{sid}'")
    raise not_found(f"no such resource '{sid}'")


def _ha_quorum(ctx: Ctx) -> dict:
    name, quorate = ctx.node.name, ctx.node.quorate()
    return {"id": "quorum", "type": "quorum", "node": name, "quorate": int(quorate),
            "status": "OK" if quorate else f"No quorum on node '{name}'!"}


def _not_backed_up(ctx: Ctx, p: dict) -> list:
    """With no backup job every guest is uncovered: those the caller may audit (pve-manager `BackupInfo.pm`)."""
    with ctx.node.read() as s:
        guests = [(vmid, g["conf"].get("name")) for vmid, g in sorted(s.guests.items())]
    return [{"vmid": vmid, "type": "qemu", **({"name": name} if name else {})}
            for vmid, name in guests if ctx.can("VM.Audit", f"/vms/{vmid}")]


ROWS: tuple[Row, ...] = (
    Row("/nodes/{node}/lxc", CONTAINERS, writes=("POST",)),
    Row("/cluster/replication", REPLICATION, writes=("POST",)),
    Row("/nodes/{node}/replication", REPLICATION, params=(Param("guest", "integer", minimum=100),)),
    # pve-ha-manager src/PVE/API2/HA/*.pm
    Row("/cluster/ha", HA, Index("id"), permission=SYS_AUDIT),
    Row("/cluster/ha/resources", HA, params=(Param("type", enum=("ct", "vm")),), permission=SYS_AUDIT,
        writes=("POST",)),
    Row("/cluster/ha/resources/{sid}", HA, _ha_resource, OBJECT, SYS_AUDIT, writes=("PUT", "DELETE")),
    Row("/cluster/ha/resources/{sid}/migrate", HA, NO_READ, writes=("POST",)),
    Row("/cluster/ha/resources/{sid}/relocate", HA, NO_READ, writes=("POST",)),
    Row("/cluster/ha/groups", HA, permission=SYS_AUDIT, writes=("POST",)),
    Row("/cluster/ha/rules", HA, params=(Param("resource"), Param("type", enum=("node-affinity", "resource-affinity"))),
        permission=SYS_AUDIT, writes=("POST",)),
    Row("/cluster/ha/status", HA, Index("name")),
    Row("/cluster/ha/status/current", HA, lambda ctx, p: [_ha_quorum(ctx)], permission=SYS_AUDIT,
        returns={"type": "array", "items": {"type": "object", "required": ["id", "type", "status"], "properties": {
            "id": {"type": "string"}, "type": {"type": "string"}, "node": {"type": "string"},
            "status": {"type": "string"}, "quorate": {"type": "integer"}}}}),
    Row("/cluster/ha/status/manager_status", HA, lambda ctx, p: {
        "manager_status": {}, "quorum": {k: v for k, v in _ha_quorum(ctx).items() if k in ("node", "quorate")}},
        OBJECT, SYS_AUDIT),
    # pve-manager PVE/API2/Backup.pm, Cluster/BackupInfo.pm, VZDump.pm
    Row("/cluster/backup", BACKUP, permission=SYS_AUDIT, writes=("POST",)),
    Row("/cluster/backup-info", BACKUP, Index("subdir")),
    Row("/cluster/backup-info/not-backed-up", BACKUP, _not_backed_up, permission=SYS_AUDIT, returns={
        "type": "array", "items": {"type": "object", "required": ["vmid", "type"], "properties": {
            "vmid": {"type": "integer"}, "type": {"type": "string", "enum": ["qemu", "lxc"]},
            "name": {"type": "string"}}}}),
    Row("/nodes/{node}/vzdump", BACKUP, NO_READ, writes=("POST",)),
    # pve-manager PVE/API2/Subscription.pm: no key on this node
    Row("/nodes/{node}/subscription", SUBSCRIPTION, {"status": "notfound", "message": "There is no subscription key"},
        {"type": "object", "required": ["status"], "properties": {
            "status": {"type": "string", "enum": ["new", "notfound", "active", "invalid", "expired", "suspended"]},
            "message": {"type": "string"}}}, writes=("POST", "PUT", "DELETE")),
    # pve-cluster ClusterConfig.pm: no QDevice socket, `{}`
    Row("/cluster/config/qdevice", QDEVICE, {}, OBJECT, SYS_AUDIT),
    # pve-manager PVE/API2/Ceph*.pm: `binary not installed: /usr/bin/ceph-mon` (500) without Ceph
    Row("/cluster/ceph/status", CEPH, UNSUPPORTED),
    *(Row(f"/nodes/{{node}}/ceph/{part}", CEPH, UNSUPPORTED, writes=("POST",) if part in ("osd", "pool") else ())
      for part in ("status", "osd", "mon", "mgr", "mds", "pool", "fs")),
    # pve-network PVE/API2/Network/SDN*.pm: nothing configured
    Row("/cluster/sdn", SDN, Index("id"), permission=Permission("SDN.Audit", "/sdn"), writes=("PUT",)),
    Row("/cluster/sdn/zones", SDN, params=(*PENDING, Param("type")), writes=("POST",)),
    Row("/cluster/sdn/vnets", SDN, params=PENDING, writes=("POST",)),
    Row("/cluster/sdn/controllers", SDN, params=(*PENDING, Param("type")), writes=("POST",)),
    Row("/cluster/sdn/ipams", SDN, params=(Param("type"),), writes=("POST",)),
    Row("/cluster/sdn/dns", SDN, params=(Param("type"),), writes=("POST",)),
    # pve-firewall src/PVE/API2/Firewall/{Cluster,Host,VM,Rules,Groups,Aliases,IPSet}.pm: no rules, no options set
    Row("/cluster/firewall", FIREWALL, Index("name")),
    Row("/cluster/firewall/options", FIREWALL, NO_OPTIONS, OBJECT, SYS_AUDIT, writes=("PUT",)),
    *(Row(f"/cluster/firewall/{part}", FIREWALL, permission=ALL if part == "groups" else SYS_AUDIT, writes=("POST",))
      for part in ("rules", "groups", "aliases", "ipset")),
    Row("/cluster/firewall/refs", FIREWALL, permission=SYS_AUDIT, params=(Param("type", enum=("alias", "ipset")),)),
    Row("/nodes/{node}/firewall", FIREWALL, Index("name")),
    Row("/nodes/{node}/firewall/options", FIREWALL, NO_OPTIONS, OBJECT, NODE_AUDIT, writes=("PUT",)),
    Row("/nodes/{node}/firewall/rules", FIREWALL, permission=NODE_AUDIT, writes=("POST",)),
    Row("/nodes/{node}/qemu/{vmid}/firewall", FIREWALL, Index("name")),
    Row("/nodes/{node}/qemu/{vmid}/firewall/options", FIREWALL, _guest_firewall(NO_OPTIONS), OBJECT, VM_AUDIT,
        writes=("PUT",)),
    *(Row(f"/nodes/{{node}}/qemu/{{vmid}}/firewall/{part}", FIREWALL, _guest_firewall([]), permission=VM_AUDIT,
          writes=("POST",)) for part in ("rules", "aliases", "ipset")),
    Row("/nodes/{node}/qemu/{vmid}/firewall/refs", FIREWALL, _guest_firewall([]), permission=VM_AUDIT,
        params=(Param("type", enum=("alias", "ipset")),)),
    # pve-manager PVE/API2/Cluster/Mapping/*.pm, MetricServer.pm
    Row("/cluster/mapping", MAPPING, Index("name")),
    *(Row(f"/cluster/mapping/{kind}", MAPPING, params=(Param("check-node", format="pve-node"),), writes=("POST",))
      for kind in ("pci", "usb", "dir")),
    Row("/cluster/metrics", METRICS, Index("name")),
    Row("/cluster/metrics/server", METRICS, permission=SYS_AUDIT),
    Row("/cluster/metrics/server/{id}", METRICS, UNSUPPORTED, writes=("POST", "PUT", "DELETE")),
    # pve-manager PVE/API2/APT.pm, pve-storage PVE/API2/Disks*.pm: gpve manages neither packages nor host disks
    Row("/nodes/{node}/apt", APT, Index("id")),
    Row("/nodes/{node}/apt/update", APT, permission=Permission("Sys.Modify", "/nodes/{node}"), writes=("POST",)),
    Row("/nodes/{node}/disks", DISKS, Index("name")),
    Row("/nodes/{node}/disks/list", DISKS, permission=NODE_AUDIT,
        params=(Param("include-partitions", "boolean"), Param("skipsmart", "boolean"), Param("type"))),
    Row("/nodes/{node}/disks/lvm", DISKS, {"leaf": 0, "children": []}, OBJECT, SYS_AUDIT, writes=("POST",)),
    *(Row(f"/nodes/{{node}}/disks/{kind}", DISKS, permission=SYS_AUDIT, writes=("POST",))
      for kind in ("lvmthin", "zfs", "directory")),
)


def _index(row: Row) -> list[dict]:
    depth = row.path.count("/") + 1
    names = [r.path.rsplit("/", 1)[1] for r in ROWS if r.path.startswith(row.path + "/")
             and r.path.count("/") == depth and r.answer not in (UNSUPPORTED, NO_READ)]
    return [{row.answer.key: name} for name in sorted(n for n in names if not n.startswith("{"))]


def _params(row: Row) -> list[Param]:
    return [PATH_PARAMS[name] for name in re.findall(r"\{(\w+)\}", row.path)]


def _slug(path: str) -> str:
    return re.sub(r"\W+", "_", path.replace("{", "").replace("}", "")).strip("_")


def _read(row: Row) -> Callable:
    async def handler(ctx: Ctx, p: dict) -> Any:
        if isinstance(row.answer, Index):
            return _index(row)
        if callable(row.answer):
            return row.answer(ctx, p)
        return copy.deepcopy(row.answer)
    return handler


def _unsupported() -> Callable:
    async def handler(ctx: Ctx, p: dict) -> None:
        raise AssertionError("the app answers an unsupported endpoint 501 before it reads the parameters")
    return handler


def _declare(row: Row) -> None:
    slug = _slug(row.path)

    def declare(method: str, handler: Callable, name: str, **kwargs) -> None:
        handler.__name__ = handler.__qualname__ = name
        API.endpoint(method, row.path, absent=row.feature, **kwargs)(handler)

    unsupported = {"params": _params(row), "unsupported": True,
                   "description": f"Not implemented: gpve has no {row.feature}."}
    if row.answer == UNSUPPORTED:
        declare("GET", _unsupported(), f"unsupported_{slug}", **unsupported)
    elif row.answer != NO_READ:
        returns = {"type": "array", "items": {"type": "object"}} if isinstance(row.answer, Index) else row.returns
        declare("GET", _read(row), f"not_configured_{slug}", params=[*_params(row), *row.params],
                permission=row.permission, returns=returns,
                description=f"What a Proxmox node without {row.feature} configured answers (gpve has none).")
    for method in row.writes:
        declare(method, _unsupported(), f"unsupported_{slug}", **unsupported)


for _row in ROWS:
    _declare(_row)
