"""/nodes/{node}/qemu/{vmid}/cloudinit: the drive's current and pending values, regeneration, generated texts."""

from __future__ import annotations

from api.context import Ctx
from api.registry import API
from api.schema import NODE, VMID_PATH, Param, Permission
from api.services import cloudinit, guests

ROW = {"type": "object", "required": ["key"], "properties": {
    "key": {"type": "string", "description": "Configuration option name."},
    "value": {"type": "string", "description": "Value as it was used to generate the current cloudinit image."},
    "pending": {"type": "string", "description": "The new pending value."},
    "delete": {"type": "integer", "minimum": 0, "maximum": 1,
               "description": "Indicates a pending delete request if present and not 0."}}}


@API.endpoint("GET", "/nodes/{node}/qemu/{vmid}/cloudinit", params=[NODE, VMID_PATH],
              permission=Permission("VM.Audit", "/vms/{vmid}"), returns={"type": "array", "items": ROW})
async def cloudinit_pending(ctx: Ctx, p: dict) -> list:
    """Get the cloudinit configuration with both current and pending values."""
    return cloudinit.pending(guests.guest_or_404(ctx, p["node"], p["vmid"]))


@API.endpoint("PUT", "/nodes/{node}/qemu/{vmid}/cloudinit", params=[NODE, VMID_PATH],
              permission=Permission("VM.Config.Cloudinit", "/vms/{vmid}"), returns={"type": "null"})
async def cloudinit_update(ctx: Ctx, p: dict) -> None:
    """Regenerate and change cloudinit config drive."""
    await cloudinit.regenerate(ctx, guests.guest_or_404(ctx, p["node"], p["vmid"]))


@API.endpoint("GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump",
              params=[NODE, VMID_PATH, Param("type", optional=False, enum=("user", "network", "meta"),
                                             description="Config type.")],
              permission=Permission("VM.Audit", "/vms/{vmid}"), returns={"type": "string"})
async def cloudinit_dump(ctx: Ctx, p: dict) -> str:
    """Get automatically generated cloudinit config."""
    return cloudinit.dump(ctx, guests.guest_or_404(ctx, p["node"], p["vmid"]), p["type"])
