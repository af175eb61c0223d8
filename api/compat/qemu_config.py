"""Guest config changes, resize, destroy, clone and template."""

from __future__ import annotations

import re

import trio

from api.compat.qemu_options import CONFIG_PARAMS
from api.compat.qemu_power import SKIPLOCK
from api.context import Ctx
from api.registry import API
from api.schema import NODE, UPID_RETURN, VMID_PATH, Param, ParamErrors, Permission
from api.services import guest_access, guests
from api.services.tasks import wait_task

DISKS = tuple([f"ide{i}" for i in range(4)] + [f"scsi{i}" for i in range(31)] + [f"virtio{i}" for i in range(16)]
              + [f"sata{i}" for i in range(6)] + ["efidisk0", "tpmstate0"])
FORCE_DESCRIPTION = ("Destroy the volumes: without it a deleted disk leaves the config and its volume is kept as "
                     "'unused[n]'; deleting an 'unused[n]' always destroys its volume.")
CHANGE_PARAMS = [Param("delete", description="A list of settings you want to delete."), Param("digest", max_length=64),
                 Param("revert", description="Revert a pending change."), SKIPLOCK,
                 Param("force", "boolean", description=FORCE_DESCRIPTION)]


def _split_list(value) -> list[str]:
    """A list parameter: a list, or a string Proxmox's `split_list` splits at commas, semicolons and blanks."""
    value = value or ""
    return [k for k in re.split(r"[,;\s]+", ",".join(value) if isinstance(value, list) else value) if k]


def _is_key(key: str) -> bool:
    return any(param.matches(key) for param in CONFIG_PARAMS)


def _changes(p: dict) -> tuple[dict, list[str], list[str]]:
    """The keys set, deleted and reverted by a config request (`delete` and `revert` are lists, or strings Proxmox
    splits)."""
    if p.get("force") and p.get("delete") is None:
        raise ParamErrors({"delete": "missing property required by 'force'"})  # the schema's `requires`
    values = {k: v for k, v in p.items() if k not in ("node", "vmid", "delete", "digest", "revert", "skiplock",
                                                       "force", "background_delay")}
    revert = _split_list(p.get("revert"))
    unknown = [k for k in revert if not _is_key(k)]
    if unknown:
        raise ParamErrors({"revert": f"unknown option '{unknown[0]}'"})
    clash = [k for k in revert if k in values]
    if clash:
        raise ParamErrors({"delete": f"you can't use '-{clash[0]}' and '-revert {clash[0]}' at the same time"})
    changes, delete = guests.config_changes(values, _split_list(p.get("delete")), _is_key)
    clash = [k for k in revert if k in delete]
    if clash:
        raise ParamErrors({"revert": f"you can't use '-delete {clash[0]}' and '-revert {clash[0]}' at the same time"})
    return changes, delete, revert


@API.endpoint("PUT", "/nodes/{node}/qemu/{vmid}/config", params=[NODE, VMID_PATH, *CONFIG_PARAMS, *CHANGE_PARAMS],
              permission=guest_access.CONFIG_PERMISSION, returns={"type": "null"})
async def update_config_sync(ctx: Ctx, p: dict) -> None:
    """Set or delete config options (synchronously)."""
    changes, delete, revert = _changes(p)
    await guests.update_config(ctx, p["node"], p["vmid"], changes, delete, revert=revert, digest=p.get("digest"),
                               skiplock=bool(p.get("skiplock")), force=bool(p.get("force")))


@API.endpoint("PUT", "/nodes/{node}/qemu/{vmid}/unlink",
              params=[NODE, VMID_PATH, Param("idlist", optional=False, format="pve-configid-list",
                                             description="A list of disk IDs you want to delete."),
                      Param("force", "boolean", description=FORCE_DESCRIPTION)],
              permission=Permission("VM.Config.Disk", "/vms/{vmid}", description=guest_access.describe()),
              returns={"type": "null"})
async def unlink(ctx: Ctx, p: dict) -> None:
    """Unlink/delete disk images: each key in `idlist` leaves the config (pending on a running guest, as a delete
    through `PUT config`); its volume is kept as `unusedN`, or destroyed with `force` (an `unusedN`'s always is).
    Proxmox: the same as `PUT config` with `delete`."""
    _, delete = guests.config_changes({}, _split_list(p["idlist"]), _is_key)
    await guests.update_config(ctx, p["node"], p["vmid"], {}, delete, force=bool(p.get("force")))


@API.endpoint("POST", "/nodes/{node}/qemu/{vmid}/config",
              params=[NODE, VMID_PATH, *CONFIG_PARAMS, *CHANGE_PARAMS,
                      Param("background_delay", "integer", minimum=1, maximum=30)],
              permission=guest_access.CONFIG_PERMISSION,
              returns={"type": ["string", "null"], "description": "The task's UPID (null: ended within the delay)."})
async def update_config_async(ctx: Ctx, p: dict) -> str | None:
    """Set or delete config options in a task; returns its UPID, or null when the task ended within
    `background_delay` seconds (as Proxmox)."""
    changes, delete, revert = _changes(p)
    upid = await guests.update_config(ctx, p["node"], p["vmid"], changes, delete, revert=revert,
                                      digest=p.get("digest"), skiplock=bool(p.get("skiplock")), background=True,
                                      force=bool(p.get("force")))
    if p.get("background_delay"):
        with trio.move_on_after(p["background_delay"]):
            await wait_task(ctx, upid)
            return None
    return upid


@API.endpoint("PUT", "/nodes/{node}/qemu/{vmid}/resize",
              params=[NODE, VMID_PATH, Param("disk", optional=False, enum=DISKS),
                      Param("size", optional=False, pattern=r"\+?\d+(\.\d+)?[KMGT]?"), Param("digest", max_length=64),
                      SKIPLOCK],
              permission=guest_access.RESIZE_PERMISSION, returns=UPID_RETURN)
async def resize_disk(ctx: Ctx, p: dict) -> str:
    """Grow a disk to `size`, or by `+size`."""
    return await guests.resize(ctx, p["node"], p["vmid"], p["disk"], p["size"], digest=p.get("digest"),
                               skiplock=bool(p.get("skiplock")))


@API.endpoint("DELETE", "/nodes/{node}/qemu/{vmid}",
              params=[NODE, VMID_PATH, Param("purge", "boolean"), Param("destroy-unreferenced-disks", "boolean",
                                                                         default=0), SKIPLOCK],
              permission=Permission("VM.Allocate", "/vms/{vmid}"), returns=UPID_RETURN)
async def destroy_vm(ctx: Ctx, p: dict) -> str:
    """Destroy the guest and its volumes."""
    return await guests.destroy(ctx, p["node"], p["vmid"], purge=bool(p.get("purge")),
                                destroy_unreferenced=bool(p.get("destroy-unreferenced-disks")),
                                skiplock=bool(p.get("skiplock")))


@API.endpoint("POST", "/nodes/{node}/qemu/{vmid}/clone",
              params=[NODE, VMID_PATH, Param("newid", "integer", optional=False, minimum=100, maximum=999_999_999),
                      Param("name", format="dns-name"), Param("description", max_length=8192),
                      Param("full", "boolean"), Param("target", format="pve-node"),
                      Param("storage", format="pve-storage-id"), Param("format", enum=("raw", "qcow2", "vmdk")),
                      Param("pool", format="pve-poolid"), Param("snapname"), Param("bwlimit", "integer", minimum=0)],
              permission=guest_access.CLONE_PERMISSION, returns=UPID_RETURN)
async def clone_vm(ctx: Ctx, p: dict) -> str:
    """Clone a guest: full (copies) or linked (qcow2 overlays on a template's disks)."""
    full = p.get("full")
    return await guests.clone(ctx, p["node"], p["vmid"], p["newid"], full=None if full is None else bool(full),
                              name=p.get("name"), description=p.get("description"), target=p.get("target"),
                              storage=p.get("storage"), format=p.get("format"), pool=p.get("pool"),
                              snapname=p.get("snapname"))


@API.endpoint("POST", "/nodes/{node}/qemu/{vmid}/template", params=[NODE, VMID_PATH, Param("disk", enum=DISKS)],
              permission=Permission("VM.Allocate", "/vms/{vmid}"), returns=UPID_RETURN)
async def make_template(ctx: Ctx, p: dict) -> str:
    """Turn the guest into a template (its disks become read-only bases for linked clones)."""
    return await guests.template(ctx, p["node"], p["vmid"], p.get("disk"))
