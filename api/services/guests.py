"""Guests: create, change, resize, clone, template, destroy, power, snapshots and migrate (qemu-server's rules).

Every interface calls these with a `Ctx` (the caller: node, user, request id, time) and typed arguments;
they check what the caller may do (api/services/guest_access.py), submit commands and start tasks, and
raise the API's errors (Rejection with Proxmox's status and wording; ParamErrors for per-parameter 400s).
Behaviour follows Proxmox's `PVE/API2/Qemu.pm` endpoints named in each docstring.
"""

from __future__ import annotations

import hashlib
import re

from api.context import Ctx
from api.errors import ApiError
from api.schema import ParamErrors
from api.services import guest_access
from api.services.tasks import start_task, wait_task
from engine import commands as cmd
from engine import tasks
from engine.decide import conf_path
from engine.errors import not_found
from engine.volumes import alloc_requests, owned_volumes

NET_MODELS = ("e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e", "i82551", "i82557b",
              "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3")
PROXMOX_OUI = "BC:24:11"
READONLY_KEYS = {"parent", "snaptime", "vmstate"}


def guest_or_404(ctx: Ctx, node: str, vmid: int) -> dict:
    """A copy of the guest record (`vmid`, `node`, `conf`, `status`, `snapshots`); 404 with Proxmox's wording
    when it is not on `node`."""
    with ctx.node.read() as s:
        guest = s.guests.get(vmid)
        if guest is None or guest["node"] != node:
            raise not_found(f"Configuration file '{conf_path(node, vmid)}' does not exist")
        return {**guest, "conf": dict(guest["conf"])}


def snapshot_or_404(ctx: Ctx, node: str, vmid: int, snapname: str) -> tuple[dict, dict]:
    guest = guest_or_404(ctx, node, vmid)
    snap = guest.get("snapshots", {}).get(snapname)
    if snap is None:
        raise not_found(f"snapshot '{snapname}' does not exist")
    return guest, dict(snap)


# ---- create ------------------------------------------------------------------------------------
def _with_mac(ctx: Ctx, value: str) -> str:
    """`virtio,bridge=vmbr0` -> `virtio=BC:24:11:xx:xx:xx,bridge=vmbr0`, as Proxmox assigns MACs."""
    first, _, rest = value.partition(",")
    model = first.split("=", 1)[0]
    if model == "model":
        model = first.split("=", 1)[1]
    elif "=" in first or model not in NET_MODELS:
        return value
    entropy = _entropy(ctx)
    mac = PROXMOX_OUI + "".join(f":{entropy[i:i + 2].upper()}" for i in (0, 2, 4))
    return f"{model}={mac}" + ("," + rest if rest else "")


def _entropy(ctx: Ctx) -> str:
    """64 hex digits from the node's id source: random in production, seeded under the simulator."""
    return hashlib.sha256(ctx.node.new_request_id().encode()).hexdigest()


def new_guest_config(ctx: Ctx, values: dict) -> dict:
    """The config of a new guest: the given keys, MACs for NICs given without one, and the ids Proxmox
    generates on create (`smbios1` uuid, `vmgenid`)."""
    conf = dict(values)
    if isinstance(conf.get("memory"), str) and conf["memory"].isdigit():
        conf["memory"] = int(conf["memory"])
    for key in [k for k in conf if re.fullmatch(r"net\d+", k)]:
        conf[key] = _with_mac(ctx, conf[key])
    conf.setdefault("smbios1", f"uuid={ctx.node.new_uuid()}")
    conf.setdefault("vmgenid", ctx.node.new_uuid())
    return conf


async def create(ctx: Ctx, node: str, vmid: int, config: dict, *, pool: str | None = None,
                 storage: str | None = None, start: bool = False) -> str:
    """`POST /nodes/{node}/qemu`: the guest (and its pool membership, in the same command) in the log; volumes
    to allocate and the start run in its `qmcreate` task. Returns the UPID. 403 for what the caller may not
    set, 409 when the VMID is taken."""
    given, _ = guest_access.resolve_cdrom_alias(config)
    with ctx.node.read() as s:
        if pool and pool not in s.access.get("pool", {}):
            raise ApiError(403, f"pool '{pool}' does not exist")  # Proxmox's check_pool_exist
        guest_access.check_create(guest_access.held_in(s, ctx.user), ctx.user, vmid, given, pool=pool,
                                  storage=storage, start=start)
    upid, starttime = ctx.node.new_upid(node, "qmcreate", str(vmid), ctx.user)
    result = await ctx.node.submit(cmd.CreateGuest(
        request_id=ctx.command_id, ts=ctx.now, user=ctx.user, node=node, vmid=vmid,
        config=new_guest_config(ctx, given), upid=upid, starttime=starttime, start=start, pool=pool))
    return result["upid"]  # a retried request id answers with the first attempt's task


# ---- config ------------------------------------------------------------------------------------
def config_changes(values: dict, delete: list[str], is_key) -> tuple[dict, list[str]]:
    """Checked changes: what is set and what is deleted (`is_key(name)`: a config key). Raises ParamErrors."""
    errors = {k: "unable to delete and set the same option" for k in delete if k in values}
    errors.update({k: "property is read-only" for k in values if k in READONLY_KEYS})
    unknown = [k for k in delete if not is_key(k)]
    if unknown:
        errors["delete"] = f"invalid configuration ID '{unknown[0]}'"
    if errors:
        raise ParamErrors(errors)
    changes = dict(values)
    if isinstance(changes.get("memory"), str) and changes["memory"].isdigit():
        changes["memory"] = int(changes["memory"])
    return guest_access.resolve_cdrom_alias(changes, delete)


def _authorized(ctx: Ctx, node: str, vmid: int, changes: dict, delete: list[str]) -> None:
    with ctx.node.read() as s:
        guest = s.guests.get(vmid)
        if guest is not None and guest["node"] == node:
            guest_access.check_update(guest_access.held_in(s, ctx.user), ctx.user, vmid, changes, delete,
                                      dict(guest["conf"]))
            return
    guest_or_404(ctx, node, vmid)


def _needs_task(changes: dict, delete: list[str]) -> bool:
    return bool(alloc_requests(changes)) or any(re.fullmatch(r"(ide|sata|scsi|virtio)\d+", k) for k in delete)


async def update_config(ctx: Ctx, node: str, vmid: int, changes: dict, delete: list[str], *,
                        digest: str | None = None, skiplock: bool = False, background: bool = False) -> str | None:
    """`PUT` (synchronous) or `POST` (`background`: answers a UPID) `/nodes/{node}/qemu/{vmid}/config`.
    Changes that allocate or detach volumes run as a `qmconfig` task; the rest is one command."""
    _authorized(ctx, node, vmid, changes, delete)
    intent = {"set": changes, "delete": delete}
    if background:
        return await start_task(ctx, node, vmid, "qmconfig", intent, digest=digest, skiplock=skiplock)
    if _needs_task(changes, delete):
        await wait_task(ctx, await start_task(ctx, node, vmid, "qmconfig", intent, digest=digest,
                                              skiplock=skiplock))
        return None
    await ctx.node.submit(cmd.UpdateGuestConfig(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, node=node,
                                                vmid=vmid, set=changes, delete=delete, digest=digest,
                                                skiplock=skiplock))
    return None


async def resize(ctx: Ctx, node: str, vmid: int, disk: str, size: str, *, digest: str | None = None,
                 skiplock: bool = False) -> str:
    """`PUT /nodes/{node}/qemu/{vmid}/resize`: grow `disk` to `size`, or by `+size`."""
    guest = guest_or_404(ctx, node, vmid)
    with ctx.node.read() as s:
        guest_access.check_resize(guest_access.held_in(s, ctx.user), vmid, disk, guest["conf"])
    return await start_task(ctx, node, vmid, "resize", {"disk": disk, "size": size}, digest=digest,
                            skiplock=skiplock)


async def destroy(ctx: Ctx, node: str, vmid: int, *, purge: bool = False, destroy_unreferenced: bool = False,
                  skiplock: bool = False) -> str:
    """`DELETE /nodes/{node}/qemu/{vmid}`: the guest and its volumes, in a `qmdestroy` task."""
    guest_or_404(ctx, node, vmid)
    intent = {"purge": int(purge), "destroy-unreferenced-disks": int(destroy_unreferenced)}
    return await start_task(ctx, node, vmid, "qmdestroy", intent, skiplock=skiplock)


async def clone(ctx: Ctx, node: str, vmid: int, newid: int, *, full: bool | None = None, name: str | None = None,
                description: str | None = None, target: str | None = None, storage: str | None = None,
                format: str | None = None, pool: str | None = None, snapname: str | None = None) -> str:
    """`POST /nodes/{node}/qemu/{vmid}/clone`: full (copies) or linked (overlays on a template's disks)."""
    guest = guest_or_404(ctx, node, vmid)
    is_template = bool(guest["conf"].get("template"))
    full = (not is_template) if full is None else full
    if not full and not is_template:
        raise ParamErrors({"full": "linked clones need a template as source"})
    if not full and storage:
        raise ParamErrors({"storage": "parameter 'storage' not allowed for linked clones"})
    with ctx.node.read() as s:
        guest_access.check_clone(guest_access.held_in(s, ctx.user), ctx.user, guest["conf"], storage)
        known = target in s.nodes
    if target and target != node:
        if not known:
            raise ParamErrors({"target": f"no such cluster node '{target}'"})
        local = owned_volumes(vmid, guest["conf"])
        if local:  # as Proxmox: another node cannot reach this node's local storage
            raise ParamErrors({"target": f"can't clone to node '{target}' (VM uses local storage: "
                                         f"{', '.join(local)})"})
    if pool or snapname:
        raise ParamErrors({k: f"'{k}' is not supported yet" for k, v in (("pool", pool), ("snapname", snapname))
                           if v})
    intent = {"name": name, "description": description, "linked": int(not full), "storage": storage,
              "format": format, "target": target}
    return await start_task(ctx, node, vmid, "qmclone", intent, newid=newid)


async def template(ctx: Ctx, node: str, vmid: int, disk: str | None = None) -> str:
    """`POST /nodes/{node}/qemu/{vmid}/template`: the guest becomes a template."""
    guest_or_404(ctx, node, vmid)
    return await start_task(ctx, node, vmid, "qmtemplate", {"disk": disk} if disk else {})


async def power(ctx: Ctx, node: str, vmid: int, task_type: str, params: dict, skiplock: bool = False) -> str:
    """`POST /nodes/{node}/qemu/{vmid}/status/{start,stop,shutdown,reboot,reset,suspend,resume}`: `params` are
    the action's options; those its task kind does not honour are refused (engine/tasks.py)."""
    guest_or_404(ctx, node, vmid)
    return await start_task(ctx, node, vmid, task_type, tasks.kind(task_type).intent_from(params),
                            skiplock=skiplock)


# ---- snapshots ---------------------------------------------------------------------------------
async def snapshot(ctx: Ctx, node: str, vmid: int, snapname: str, *, description: str = "",
                   vmstate: bool = False) -> str:
    """`POST /nodes/{node}/qemu/{vmid}/snapshot`; with `vmstate`, a running guest's RAM too."""
    guest_or_404(ctx, node, vmid)
    intent = {"snapname": snapname, "description": description, "vmstate": int(vmstate)}
    return await start_task(ctx, node, vmid, "qmsnapshot", intent)


async def set_snapshot_description(ctx: Ctx, node: str, vmid: int, snapname: str, description: str) -> None:
    """`PUT /nodes/{node}/qemu/{vmid}/snapshot/{snapname}/config`."""
    guest, snap = snapshot_or_404(ctx, node, vmid, snapname)
    snaps = {**guest["snapshots"], snapname: {**snap, "description": description}}
    await ctx.node.submit(cmd.SetSnapshots(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, vmid=vmid,
                                           snapshots=snaps))


async def rollback(ctx: Ctx, node: str, vmid: int, snapname: str, start: bool = False) -> str:
    """`POST …/snapshot/{snapname}/rollback`; a snapshot with a saved VM state runs again from that state."""
    snapshot_or_404(ctx, node, vmid, snapname)
    return await start_task(ctx, node, vmid, "qmrollback", {"snapname": snapname, "start": int(start)})


async def delete_snapshot(ctx: Ctx, node: str, vmid: int, snapname: str, force: bool = False) -> str:
    """`DELETE …/snapshot/{snapname}`: its children take its parent."""
    snapshot_or_404(ctx, node, vmid, snapname)
    return await start_task(ctx, node, vmid, "qmdelsnapshot", {"snapname": snapname, "force": int(force)})


# ---- migrate -----------------------------------------------------------------------------------
async def migrate(ctx: Ctx, node: str, vmid: int, target: str, params: dict) -> str:
    """`POST /nodes/{node}/qemu/{vmid}/migrate`: offline (config and local volumes) or `online` (QEMU live
    migration, with `with-local-disks` mirrored over NBD). `params`: the request's migration options."""
    guest_or_404(ctx, node, vmid)
    with ctx.node.read() as s:
        guest_access.check_migrate(guest_access.held_in(s, ctx.user), ctx.user, vmid, params)
    if params.get("targetstorage") and params["targetstorage"] not in ("1", "local"):
        raise ParamErrors({"targetstorage": f"storage '{params['targetstorage']}' does not exist on '{target}'"})
    if not ctx.node.node_online(target):
        raise ParamErrors({"target": f"target node '{target}' is not online"})
    intent = {"target": target, "online": int(params.get("online", 0)),
              "with-local-disks": int(params.get("with-local-disks", 0))}
    return await start_task(ctx, node, vmid, "qmigrate", intent)
