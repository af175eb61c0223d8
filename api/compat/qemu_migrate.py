"""/nodes/{node}/qemu/{vmid}/migrate: the precondition check and the migration itself."""

from __future__ import annotations

from api.context import Ctx
from api.registry import API
from api.schema import NODE, UPID_RETURN, VMID_PATH, Param, Permission
from api.services import guests
from engine.volumes import owned_volumes, volume_of

MIGRATE = Permission("VM.Migrate", "/vms/{vmid}")


@API.endpoint("GET", "/nodes/{node}/qemu/{vmid}/migrate", params=[NODE, VMID_PATH, Param("target", format="pve-node")],
              permission=MIGRATE, returns={"type": "object", "properties": {"running": {"type": "boolean"}}})
async def migrate_check(ctx: Ctx, p: dict) -> dict:
    """What a migration of this guest would have to deal with, and where it may go."""
    guest = guests.guest_or_404(ctx, p["node"], p["vmid"])
    with ctx.node.read() as s:
        others = sorted(n for n in s.nodes if n != p["node"])
    allowed, not_allowed = [], {}
    for name in others:
        if ctx.node.node_online(name):
            allowed.append(name)
        else:
            not_allowed[name] = {"offline": 1}
    conf = guest["conf"]
    disks = [{"volid": volume_of(v), "drivename": k, "is_unused": int(k.startswith("unused"))}
             for k, v in sorted(conf.items()) if volume_of(v) in owned_volumes(p["vmid"], {k: v})]
    return {"running": guest.get("status") == "running", "allowed_nodes": allowed, "not_allowed_nodes": not_allowed,
            "local_disks": disks, "local_resources": [], "mapped-resources": []}


@API.endpoint("POST", "/nodes/{node}/qemu/{vmid}/migrate",
              params=[NODE, VMID_PATH, Param("target", optional=False, format="pve-node"), Param("online", "boolean"),
                      Param("with-local-disks", "boolean"), Param("targetstorage"), Param("force", "boolean"),
                      Param("migration_type", enum=("secure", "insecure")), Param("migration_network"),
                      Param("bwlimit", "integer", minimum=0)],
              permission=MIGRATE, returns=UPID_RETURN)
async def migrate(ctx: Ctx, p: dict) -> str:
    """Move the guest to `target`: offline (config and local volumes) or online (QEMU live migration)."""
    options = {k: v for k, v in p.items() if k not in ("node", "vmid", "target")}
    return await guests.migrate(ctx, p["node"], p["vmid"], p["target"], options)
