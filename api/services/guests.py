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
from api.services import cloudinit, guest_access
from api.services.tasks import start_task, submit_task, wait_task
from engine import commands as cmd
from engine import nics, pending, tasks
from engine import vclusters as vc_rules
from engine.decide import conf_path
from engine.errors import Rejection, not_found
from engine.public_events import MASK, SECRET_CONFIG_KEYS
from engine.state import guest_digest
from engine.volumes import DISK_KEY, VolumeError, alloc_requests, owned_volumes, parse_drive, parse_import_source
from hypervisor.storage import StorageError, import_source

READONLY_KEYS = {"parent", "snaptime", "vmstate"}


def guest_or_404(ctx: Ctx, node: str, vmid: int) -> dict:
    """A copy of the guest record (`vmid`, `node`, `conf`, `status`, `snapshots`, and `pending`, `pending_delete`
    when changes are pending: engine/pending.py); 404 with Proxmox's wording when it is not on `node`."""
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
def with_macs(ctx: Ctx, values: dict) -> dict:
    """`values` with a `BC:24:11:…` MAC for every NIC given without one (engine/nics.py), as Proxmox assigns them on
    every path that adds a NIC: create, and config changes (pending ones included). The entropy comes from the
    node's id source: random in production, seeded under the simulator."""
    return {k: nics.with_mac(str(v), lambda: _entropy(ctx)) if nics.NET_KEY.fullmatch(k) else v
            for k, v in values.items()}


def _entropy(ctx: Ctx) -> str:
    """64 hex digits from the node's id source: random in production, seeded under the simulator."""
    return hashlib.sha256(ctx.node.new_request_id().encode()).hexdigest()


def new_guest_config(ctx: Ctx, values: dict) -> dict:
    """The config of a new guest: the given keys (`cipassword` hashed), MACs for NICs given without one, and the
    ids Proxmox generates on create (`smbios1` uuid, `vmgenid`)."""
    conf = cloudinit.with_hashed_password(with_macs(ctx, values), values.get("ostype"), _entropy(ctx))
    if isinstance(conf.get("memory"), str) and conf["memory"].isdigit():
        conf["memory"] = int(conf["memory"])
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
        vc_rules.check_snippet_use(s, vmid, given.get("cicustom"))
    await check_import_sources(ctx, node, given)
    cloudinit.check_custom_snippets(ctx, node, given)
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


async def check_import_sources(ctx: Ctx, node: str, values: dict) -> None:
    """Each `import-from` source exists and is an image gpve may import (format, size, no reference to other
    files), read on the guest's node (its storages are local: a request for another node is answered there).
    ParamErrors (400) name the disk, with Proxmox's wording; the task checks again before it copies."""
    if node != ctx.node.name:
        return
    for key, value in sorted(values.items()):
        if not DISK_KEY.fullmatch(key):
            continue
        try:
            drive = parse_drive(str(value), key)
        except VolumeError:
            continue  # refused by guest_access.check_values already
        if drive.import_from is None:
            continue
        if not ctx.rt.storages:  # asked only now: counting the storages looks at each one's directory
            return
        target = ctx.rt.storages.get(drive.file.partition(":")[0])
        if target is None:
            raise ParamErrors({key: f"storage '{drive.file.partition(':')[0]}' does not exist"})
        owner = parse_import_source(drive.import_from)
        with ctx.node.read() as s:
            owner_node = s.guests.get(owner.owner, {}).get("node") if owner is not None else None
        if owner_node not in (None, node):  # qemu-server's `$import_from_volid`
            raise ParamErrors({key: f"cannot import from '{drive.import_from}' - owner VM {owner.owner} not on "
                                    "local node"})
        try:
            await import_source(ctx.rt.storages, drive.import_from, target.qemu_img)
        except StorageError as exc:
            raise ParamErrors({key: str(exc)}) from None


def _authorized(ctx: Ctx, node: str, vmid: int, changes: dict, delete: list[str], revert: list[str],
                force: bool) -> dict:
    """The guest's config as `GET …/config` shows it (pending changes applied), once the caller may make these
    changes."""
    with ctx.node.read() as s:
        guest = s.guests.get(vmid)
        if guest is not None and guest["node"] == node:
            # a key deleted or reverted is judged by its value, current or pending (Proxmox's update_vm_api)
            known = {**pending.of(guest).values, **guest["conf"]}
            held = guest_access.held_in(s, ctx.user)
            guest_access.check_update(held, ctx.user, vmid, changes, delete, known, force)
            vc_rules.check_snippet_use(s, vmid, changes.get("cicustom"))
            if revert:
                guest_access.check_update(held, ctx.user, vmid, {}, revert, known)
            return pending.applied(guest["conf"], pending.of(guest))
    return guest_or_404(ctx, node, vmid)["conf"]


def _needs_task(ctx: Ctx, vmid: int, changes: dict, delete: list[str], revert: list[str], force: bool) -> bool:
    """Whether a change needs the guest's node: volumes to allocate, import or destroy (an `unusedN` deleted, a
    forced delete or a cloud-init drive's that applies now, a pending cloud-init drive reverted), or QEMU to drive
    (a hotplug). Everything else is one command, decided in the log (engine/decide.py)."""
    if alloc_requests(changes) or any(k.startswith("unused") for k in delete):
        return True
    with ctx.node.read() as s:
        guest = s.guests.get(vmid)
        if guest is None:
            return False
        before = pending.of(guest)
        conf, pend = pending.stage(vmid, guest["conf"], before, changes, delete, revert, force=force)
        chosen = pending.plan(conf, pend, pending.is_live(s, guest), [*changes, *delete, *revert])
        return bool(chosen.plug) or any(pending.destroys(vmid, conf, pend, k) for k in chosen.now) or \
            bool(pending.released(vmid, guest["conf"], before, conf, pend))


async def update_config(ctx: Ctx, node: str, vmid: int, changes: dict, delete: list[str], *,
                        revert: list[str] | None = None, digest: str | None = None, skiplock: bool = False,
                        background: bool = False, force: bool = False) -> str | None:
    """`PUT` (synchronous) or `POST` (`background`: answers a UPID) `/nodes/{node}/qemu/{vmid}/config`, and
    `PUT …/unlink`. Changes are written into the guest's pending changes and applied as far as Proxmox would
    (engine/pending.py): at once on a guest that does not run; on a running one what needs no restart, NICs and
    disks hot-plugged as its `hotplug` option allows; the rest at its next start. `revert` drops pending changes.
    A deleted disk's volume is kept as `unusedN`, or with `force` destroyed when the delete applies; deleting
    `unusedN` destroys its volume at once. NICs without a MAC get one; `cipassword` is hashed here, before it
    reaches the log. Changes that allocate, import or destroy volumes or drive QEMU run as a `qmconfig` task; a
    failed hotplug answers 400 `{KEY: "hotplug problem - …"}` (the change stays pending)."""
    revert = list(revert or [])
    changes = with_macs(ctx, changes)
    conf = _authorized(ctx, node, vmid, changes, delete, revert, force)
    await check_import_sources(ctx, node, changes)
    cloudinit.check_custom_snippets(ctx, node, changes)
    changes = cloudinit.with_hashed_password(changes, conf.get("ostype"), _entropy(ctx))
    intent = {"set": changes, "delete": delete, **({"revert": revert} if revert else {}),
              **({"force": 1} if force else {})}
    if background:
        return await start_task(ctx, node, vmid, "qmconfig", intent, digest=digest, skiplock=skiplock)
    # A retry of this request on another node may choose the other way (the state it sees differs): the log answers
    # with what the first attempt's command decided, a task to wait for or none (found by the simulator, membership
    # seed 15: a retry's task got the plain command's answer)
    if _needs_task(ctx, vmid, changes, delete, revert, force):
        result = await submit_task(ctx, node, vmid, "qmconfig", intent, digest=digest, skiplock=skiplock)
    else:
        result = await ctx.node.submit(cmd.UpdateGuestConfig(
            request_id=ctx.command_id, ts=ctx.now, user=ctx.user, node=node, vmid=vmid, set=changes, delete=delete,
            revert=revert, force=force, digest=digest, skiplock=skiplock))
    if result.get("upid"):
        try:
            await wait_task(ctx, result["upid"])
        except Rejection as exc:
            m = re.fullmatch(r"([a-z]+\d*): (hotplug problem - .*)", exc.message, re.S)
            if m:
                raise ParamErrors({m.group(1): m.group(2)}) from None
            raise
    return None


def config_view(ctx: Ctx, node: str, vmid: int, *, current: bool = False, snapshot: str | None = None) -> dict:
    """`GET /nodes/{node}/qemu/{vmid}/config`: the config with its pending changes applied (`current`: as it
    runs; `snapshot`: that snapshot's), with the `digest` of the whole config file (pending section included) that
    every digest-guarded write checks. Proxmox: vm_config, AbstractConfig load_current_config."""
    if snapshot and current:
        msg = "cannot use 'snapshot' parameter with 'current'"
        raise ParamErrors({"snapshot": msg, "current": msg})
    guest = guest_or_404(ctx, node, vmid)
    if snapshot:
        conf = guest.get("snapshots", {}).get(snapshot)
        if conf is None:
            raise ParamErrors({"snapshot": f"snapshot '{snapshot}' does not exist"})
    else:
        conf = guest["conf"] if current else pending.applied(guest["conf"], pending.of(guest))
    return {**cloudinit.shown(conf), "digest": guest_digest(guest)}


def pending_view(ctx: Ctx, node: str, vmid: int) -> list[dict]:
    """`GET /nodes/{node}/qemu/{vmid}/pending`: every key with its current `value`, its `pending` value and a
    pending `delete` (1, or 2 when forced), `digest` included (GuestHelpers config_with_pending_array)."""
    guest = guest_or_404(ctx, node, vmid)
    rows = pending.rows({**guest["conf"], "digest": guest_digest(guest)}, pending.of(guest))
    for row in rows:  # as Proxmox's vm_pending, the password never shows
        if row["key"] in SECRET_CONFIG_KEYS:
            row.update({k: MASK for k in ("value", "pending") if k in row})
    return rows


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
        vc_rules.check_snippet_use(s, newid, guest["conf"].get("cicustom"))
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
