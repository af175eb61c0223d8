"""Guest config changes, resize, destroy, clone and template."""

from __future__ import annotations

import re

from api.compat.qemu_options import CONFIG_PARAMS
from api.compat.qemu_power import SKIPLOCK, guest_or_404
from api.compat.tasks import start_task, wait_task
from api.context import Ctx
from api.registry import API
from api.schema import NODE, UPID_RETURN, VMID_PATH, Param, ParamErrors, Permission
from api.services import guest_access
from engine import commands as cmd
from engine.volumes import alloc_requests, owned_volumes

DISKS = tuple([f"ide{i}" for i in range(4)] + [f"scsi{i}" for i in range(31)] + [f"virtio{i}" for i in range(16)]
              + [f"sata{i}" for i in range(6)] + ["efidisk0", "tpmstate0"])
CHANGE_PARAMS = [Param("delete", description="A list of settings you want to delete."), Param("digest", max_length=64),
                 Param("revert"), SKIPLOCK, Param("force", "boolean")]
READONLY_KEYS = {"parent", "snaptime", "vmstate"}


def _changes(p: dict) -> tuple[dict, list[str]]:
    delete_raw = p.get("delete", "")
    if isinstance(delete_raw, list):
        delete_raw = ",".join(delete_raw)
    delete = [k for k in re.split(r"[,;\s]+", delete_raw) if k]
    changes = {k: v for k, v in p.items() if k not in ("node", "vmid", "delete", "digest", "revert", "skiplock",
                                                        "force", "background_delay")}
    errors = {k: "unable to delete and set the same option" for k in delete if k in changes}
    errors.update({k: "property is read-only" for k in changes if k in READONLY_KEYS})
    unknown = [k for k in delete if not any(param.matches(k) for param in CONFIG_PARAMS)]
    if unknown:
        errors["delete"] = f"invalid configuration ID '{unknown[0]}'"
    if errors:
        raise ParamErrors(errors)
    if isinstance(changes.get("memory"), str) and changes["memory"].isdigit():
        changes["memory"] = int(changes["memory"])
    return guest_access.resolve_cdrom_alias(changes, delete)


def _authorized_changes(ctx: Ctx, p: dict) -> tuple[dict, list[str]]:
    """The keys set and deleted, once the caller may change each of them (api/services/guest_access.py)."""
    changes, delete = _changes(p)
    with ctx.node.read() as s:
        guest = s.guests.get(p["vmid"])
        conf = dict(guest["conf"]) if guest is not None and guest["node"] == p["node"] else None
        if conf is not None:
            guest_access.check_update(guest_access.held_in(s, ctx.user), ctx.user, p["vmid"], changes, delete, conf)
    if conf is None:
        guest_or_404(ctx, p["node"], p["vmid"])
    return changes, delete


def _needs_task(changes: dict, delete: list[str]) -> bool:
    return bool(alloc_requests(changes)) or any(re.fullmatch(r"(ide|sata|scsi|virtio)\d+", k) for k in delete)


@API.endpoint("PUT", "/nodes/{node}/qemu/{vmid}/config", params=[NODE, VMID_PATH, *CONFIG_PARAMS, *CHANGE_PARAMS],
              permission=guest_access.CONFIG_PERMISSION, returns={"type": "null"})
async def update_config_sync(ctx: Ctx, p: dict) -> None:
    """Set or delete config options (synchronously)."""
    changes, delete = _authorized_changes(ctx, p)
    if _needs_task(changes, delete):
        upid = await start_task(ctx, p, "qmconfig", {"set": changes, "delete": delete}, digest=p.get("digest"))
        await wait_task(ctx, upid)
        return None
    await ctx.node.submit(cmd.UpdateGuestConfig(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, node=p["node"],
                                                vmid=p["vmid"], set=changes, delete=delete, digest=p.get("digest"),
                                                skiplock=bool(p.get("skiplock"))))
    return None


@API.endpoint("POST", "/nodes/{node}/qemu/{vmid}/config",
              params=[NODE, VMID_PATH, *CONFIG_PARAMS, *CHANGE_PARAMS,
                      Param("background_delay", "integer", minimum=1, maximum=30)],
              permission=guest_access.CONFIG_PERMISSION, returns=UPID_RETURN)
async def update_config_async(ctx: Ctx, p: dict) -> str:
    """Set or delete config options in a task; returns its UPID."""
    changes, delete = _authorized_changes(ctx, p)
    return await start_task(ctx, p, "qmconfig", {"set": changes, "delete": delete}, digest=p.get("digest"))


@API.endpoint("PUT", "/nodes/{node}/qemu/{vmid}/resize",
              params=[NODE, VMID_PATH, Param("disk", optional=False, enum=DISKS),
                      Param("size", optional=False, pattern=r"\+?\d+(\.\d+)?[KMGT]?"), Param("digest", max_length=64),
                      SKIPLOCK],
              permission=guest_access.RESIZE_PERMISSION, returns=UPID_RETURN)
async def resize_disk(ctx: Ctx, p: dict) -> str:
    """Grow a disk to `size`, or by `+size`."""
    guest = guest_or_404(ctx, p["node"], p["vmid"])
    with ctx.node.read() as s:
        guest_access.check_resize(guest_access.held_in(s, ctx.user), p["vmid"], p["disk"], guest["conf"])
    return await start_task(ctx, p, "resize", {"disk": p["disk"], "size": p["size"]}, digest=p.get("digest"))


@API.endpoint("DELETE", "/nodes/{node}/qemu/{vmid}",
              params=[NODE, VMID_PATH, Param("purge", "boolean"), Param("destroy-unreferenced-disks", "boolean",
                                                                         default=0), SKIPLOCK],
              permission=Permission("VM.Allocate", "/vms/{vmid}"), returns=UPID_RETURN)
async def destroy_vm(ctx: Ctx, p: dict) -> str:
    """Destroy the guest and its volumes."""
    guest_or_404(ctx, p["node"], p["vmid"])
    intent = {"purge": p.get("purge", 0), "destroy-unreferenced-disks": p.get("destroy-unreferenced-disks", 0)}
    return await start_task(ctx, p, "qmdestroy", intent)


@API.endpoint("POST", "/nodes/{node}/qemu/{vmid}/clone",
              params=[NODE, VMID_PATH, Param("newid", "integer", optional=False, minimum=100, maximum=999_999_999),
                      Param("name", format="dns-name"), Param("description", max_length=8192),
                      Param("full", "boolean"), Param("target", format="pve-node"),
                      Param("storage", format="pve-storage-id"), Param("format", enum=("raw", "qcow2", "vmdk")),
                      Param("pool", format="pve-poolid"), Param("snapname"), Param("bwlimit", "integer", minimum=0)],
              permission=guest_access.CLONE_PERMISSION, returns=UPID_RETURN)
async def clone_vm(ctx: Ctx, p: dict) -> str:
    """Clone a guest: full (copies) or linked (qcow2 overlays on a template's disks)."""
    guest = guest_or_404(ctx, p["node"], p["vmid"])
    is_template = bool(guest["conf"].get("template"))
    full = bool(p.get("full", 0 if is_template else 1))
    if not full and not is_template:
        raise ParamErrors({"full": "linked clones need a template as source"})
    if not full and p.get("storage"):
        raise ParamErrors({"storage": "parameter 'storage' not allowed for linked clones"})
    with ctx.node.read() as s:
        guest_access.check_clone(guest_access.held_in(s, ctx.user), ctx.user, guest["conf"], p.get("storage"))
    if p.get("target") and p["target"] != p["node"]:
        with ctx.node.read() as s:
            known = p["target"] in s.nodes
        if not known:
            raise ParamErrors({"target": f"no such cluster node '{p['target']}'"})
        local = owned_volumes(p["vmid"], guest["conf"])
        if local:  # as Proxmox: another node cannot reach this node's local storage
            raise ParamErrors({"target": f"can't clone to node '{p['target']}' (VM uses local storage: "
                                         f"{', '.join(local)})"})
    if p.get("pool") or p.get("snapname"):
        raise ParamErrors({k: f"'{k}' is not supported yet" for k in ("pool", "snapname") if p.get(k)})
    intent = {"name": p.get("name"), "description": p.get("description"), "linked": not full,
              "storage": p.get("storage"), "format": p.get("format"), "target": p.get("target")}
    return await start_task(ctx, p, "qmclone", intent, newid=p["newid"])


@API.endpoint("POST", "/nodes/{node}/qemu/{vmid}/template", params=[NODE, VMID_PATH, Param("disk", enum=DISKS)],
              permission=Permission("VM.Allocate", "/vms/{vmid}"), returns=UPID_RETURN)
async def make_template(ctx: Ctx, p: dict) -> str:
    """Turn the guest into a template (its disks become read-only bases for linked clones)."""
    guest_or_404(ctx, p["node"], p["vmid"])
    return await start_task(ctx, p, "qmtemplate", {})
