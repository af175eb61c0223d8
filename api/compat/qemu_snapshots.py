"""/nodes/{node}/qemu/{vmid}/snapshot: the snapshot tree, create, rollback, delete."""

from __future__ import annotations

from api.context import Ctx
from api.registry import API
from api.schema import NODE, UPID_RETURN, VMID_PATH, Param, Permission
from api.services import cloudinit, guests

SNAPNAME = Param("snapname", optional=False, pattern=r"[a-zA-Z][a-zA-Z0-9_\-]{1,39}", max_length=40, location="path")
SNAPSHOT_PERM = Permission("VM.Snapshot", "/vms/{vmid}")


@API.endpoint("GET", "/nodes/{node}/qemu/{vmid}/snapshot", params=[NODE, VMID_PATH],
              permission=Permission("VM.Audit", "/vms/{vmid}"),
              returns={"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}})
async def list_snapshots(ctx: Ctx, p: dict) -> list:
    """Every snapshot with its `parent`, and `current` for the live state."""
    guest = guests.guest_or_404(ctx, p["node"], p["vmid"])
    rows = []
    for name, snap in sorted(guest.get("snapshots", {}).items(), key=lambda kv: kv[1].get("snaptime", 0)):
        row = {"name": name, "snaptime": snap.get("snaptime", 0), "description": snap.get("description", "")}
        if snap.get("parent"):
            row["parent"] = snap["parent"]
        if snap.get("vmstate"):
            row["vmstate"] = 1
        rows.append(row)
    current = {"name": "current", "description": "You are here!", "running": int(guest.get("status") == "running")}
    if guest["conf"].get("parent"):
        current["parent"] = guest["conf"]["parent"]
    return rows + [current]


@API.endpoint("POST", "/nodes/{node}/qemu/{vmid}/snapshot",
              params=[NODE, VMID_PATH, Param("snapname", optional=False, pattern=r"[a-zA-Z][a-zA-Z0-9_\-]{1,39}",
                                             max_length=40),
                      Param("description", max_length=8192), Param("vmstate", "boolean")],
              permission=SNAPSHOT_PERM, returns=UPID_RETURN)
async def create_snapshot(ctx: Ctx, p: dict) -> str:
    """Take a snapshot; with `vmstate`, of a running guest's RAM too."""
    return await guests.snapshot(ctx, p["node"], p["vmid"], p["snapname"], description=p.get("description", ""),
                                 vmstate=bool(p.get("vmstate")))


@API.endpoint("GET", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}", params=[NODE, VMID_PATH, SNAPNAME],
              permission=Permission("VM.Audit", "/vms/{vmid}"), returns={"type": "array", "items": {"type": "object"}})
async def snapshot_index(ctx: Ctx, p: dict) -> list:
    """Directory index."""
    guests.snapshot_or_404(ctx, p["node"], p["vmid"], p["snapname"])
    return [{"cmd": "rollback"}, {"cmd": "config"}]


@API.endpoint("GET", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/config", params=[NODE, VMID_PATH, SNAPNAME],
              permission=Permission("VM.Audit", "/vms/{vmid}"), returns={"type": "object"})
async def snapshot_config(ctx: Ctx, p: dict) -> dict:
    """The config as it was when the snapshot was taken (`cipassword` masked)."""
    return cloudinit.shown(guests.snapshot_or_404(ctx, p["node"], p["vmid"], p["snapname"])[1])


@API.endpoint("PUT", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/config",
              params=[NODE, VMID_PATH, SNAPNAME, Param("description", max_length=8192)],
              permission=SNAPSHOT_PERM, returns={"type": "null"})
async def update_snapshot_config(ctx: Ctx, p: dict) -> None:
    """Change a snapshot's description."""
    await guests.set_snapshot_description(ctx, p["node"], p["vmid"], p["snapname"], p.get("description", ""))


@API.endpoint("POST", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback",
              params=[NODE, VMID_PATH, SNAPNAME, Param("start", "boolean", default=0)],
              permission=Permission("VM.Snapshot.Rollback", "/vms/{vmid}"), returns=UPID_RETURN)
async def rollback_snapshot(ctx: Ctx, p: dict) -> str:
    """Return the guest to a snapshot; one with a saved VM state runs again from that state."""
    return await guests.rollback(ctx, p["node"], p["vmid"], p["snapname"], bool(p.get("start")))


@API.endpoint("DELETE", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}",
              params=[NODE, VMID_PATH, SNAPNAME, Param("force", "boolean")],
              permission=SNAPSHOT_PERM, returns=UPID_RETURN)
async def delete_snapshot(ctx: Ctx, p: dict) -> str:
    """Delete a snapshot; its children take its parent."""
    return await guests.delete_snapshot(ctx, p["node"], p["vmid"], p["snapname"], bool(p.get("force")))
