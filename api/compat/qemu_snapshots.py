"""/nodes/{node}/qemu/{vmid}/snapshot: the snapshot tree, create, rollback, delete."""

from __future__ import annotations

from api.compat.qemu_power import guest_or_404
from api.compat.tasks import start_task
from api.context import Ctx
from api.registry import API
from api.schema import NODE, UPID_RETURN, VMID_PATH, Param, Permission
from engine import commands as cmd
from engine.errors import not_found

SNAPNAME = Param("snapname", optional=False, pattern=r"[a-zA-Z][a-zA-Z0-9_\-]{1,39}", max_length=40, location="path")
SNAPSHOT_PERM = Permission("VM.Snapshot", "/vms/{vmid}")


def _snapshot(ctx: Ctx, p: dict) -> tuple[dict, dict]:
    guest = guest_or_404(ctx, p["node"], p["vmid"])
    snap = guest.get("snapshots", {}).get(p["snapname"])
    if snap is None:
        raise not_found(f"snapshot '{p['snapname']}' does not exist")
    return guest, dict(snap)


@API.endpoint("GET", "/nodes/{node}/qemu/{vmid}/snapshot", params=[NODE, VMID_PATH],
              permission=Permission("VM.Audit", "/vms/{vmid}"),
              returns={"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}})
async def list_snapshots(ctx: Ctx, p: dict) -> list:
    """Every snapshot with its `parent`, and `current` for the live state."""
    guest = guest_or_404(ctx, p["node"], p["vmid"])
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
    guest_or_404(ctx, p["node"], p["vmid"])
    intent = {"snapname": p["snapname"], "description": p.get("description", ""), "vmstate": p.get("vmstate", 0)}
    return await start_task(ctx, p, "qmsnapshot", intent)


@API.endpoint("GET", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}", params=[NODE, VMID_PATH, SNAPNAME],
              permission=Permission("VM.Audit", "/vms/{vmid}"), returns={"type": "array", "items": {"type": "object"}})
async def snapshot_index(ctx: Ctx, p: dict) -> list:
    """Directory index."""
    _snapshot(ctx, p)
    return [{"cmd": "rollback"}, {"cmd": "config"}]


@API.endpoint("GET", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/config", params=[NODE, VMID_PATH, SNAPNAME],
              permission=Permission("VM.Audit", "/vms/{vmid}"), returns={"type": "object"})
async def snapshot_config(ctx: Ctx, p: dict) -> dict:
    """The config as it was when the snapshot was taken."""
    return _snapshot(ctx, p)[1]


@API.endpoint("PUT", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/config",
              params=[NODE, VMID_PATH, SNAPNAME, Param("description", max_length=8192)],
              permission=SNAPSHOT_PERM, returns={"type": "null"})
async def update_snapshot_config(ctx: Ctx, p: dict) -> None:
    """Change a snapshot's description."""
    guest, snap = _snapshot(ctx, p)
    snaps = dict(guest["snapshots"])
    snaps[p["snapname"]] = {**snap, "description": p.get("description", "")}
    await ctx.node.submit(cmd.SetSnapshots(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, vmid=p["vmid"],
                                           snapshots=snaps))
    return None


@API.endpoint("POST", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback",
              params=[NODE, VMID_PATH, SNAPNAME, Param("start", "boolean", default=0)],
              permission=Permission("VM.Snapshot.Rollback", "/vms/{vmid}"), returns=UPID_RETURN)
async def rollback_snapshot(ctx: Ctx, p: dict) -> str:
    """Return the guest to a snapshot; one with a saved VM state runs again from that state."""
    _snapshot(ctx, p)
    return await start_task(ctx, p, "qmrollback", {"snapname": p["snapname"], "start": p.get("start", 0)})


@API.endpoint("DELETE", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}",
              params=[NODE, VMID_PATH, SNAPNAME, Param("force", "boolean")],
              permission=SNAPSHOT_PERM, returns=UPID_RETURN)
async def delete_snapshot(ctx: Ctx, p: dict) -> str:
    """Delete a snapshot; its children take its parent."""
    _snapshot(ctx, p)
    return await start_task(ctx, p, "qmdelsnapshot", {"snapname": p["snapname"], "force": p.get("force", 0)})
