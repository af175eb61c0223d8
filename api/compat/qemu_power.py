"""/nodes/{node}/qemu/{vmid}/status/*: status and the power actions."""

from __future__ import annotations

from api.compat.guests import guest_summary, sampled
from api.context import Ctx
from api.registry import API
from api.schema import NODE, UPID_RETURN, VMID_PATH, Param, Permission
from api.services import guests
from engine.errors import Rejection
from hypervisor.qemu import GuestError
from hypervisor.qemu_argv import agent_settings

POWER = Permission("VM.PowerMgmt", "/vms/{vmid}")
SKIPLOCK = Param("skiplock", "boolean", description="Ignore locks - only root is allowed to use this option.")
TIMEOUT = Param("timeout", "integer", minimum=0)


@API.endpoint("GET", "/nodes/{node}/qemu/{vmid}", params=[NODE, VMID_PATH],
              permission=Permission("VM.Audit", "/vms/{vmid}"), returns={"type": "array", "items": {"type": "object"}})
async def vm_index(ctx: Ctx, p: dict) -> list:
    """Directory index."""
    guests.guest_or_404(ctx, p["node"], p["vmid"])
    return [{"subdir": d} for d in API.children("/nodes/{node}/qemu/{vmid}")]


@API.endpoint("GET", "/nodes/{node}/qemu/{vmid}/status", params=[NODE, VMID_PATH],
              permission=Permission("VM.Audit", "/vms/{vmid}"), returns={"type": "array", "items": {"type": "object"}})
async def status_index(ctx: Ctx, p: dict) -> list:
    """Directory index."""
    guests.guest_or_404(ctx, p["node"], p["vmid"])
    return [{"subdir": d} for d in ("current", "start", "stop", "reset", "shutdown", "reboot", "suspend", "resume")]


@API.endpoint("GET", "/nodes/{node}/qemu/{vmid}/status/current", params=[NODE, VMID_PATH],
              permission=Permission("VM.Audit", "/vms/{vmid}"),
              returns={"type": "object", "properties": {"status": {"type": "string", "enum": ["running", "stopped"]},
                                                         "qmpstatus": {"type": "string"}}})
async def status_current(ctx: Ctx, p: dict) -> dict:
    """The guest's live status: `status`, `qmpstatus`, `pid`, `uptime`, `cpu`, `mem`, disk and net counters."""
    guest = guests.guest_or_404(ctx, p["node"], p["vmid"])
    conf = guest["conf"]
    row = guest_summary(guest)
    row.update(status=guest.get("status", "stopped"), qmpstatus=guest.get("status", "stopped"),
               ha={"managed": 0}, agent=1 if agent_settings(conf) else 0)
    driver = ctx.rt.driver
    if driver is not None and guest["node"] == ctx.node.name:
        live = await driver.status(p["vmid"], conf)
        row.update(live)
        if live["status"] == "running":
            row.update(sampled(ctx.rt.sampler, {**guest, "status": "running"}))
    for key in ("lock", "tags", "template"):
        if conf.get(key):
            row[key] = conf[key]
    if row.get("status") == "stopped":
        row.pop("pid", None)
    return row


@API.endpoint("POST", "/nodes/{node}/qemu/{vmid}/monitor", params=[NODE, VMID_PATH, Param("command", optional=False)],
              permission=Permission("Sys.Modify", "/"), returns={"type": "string"})
async def monitor(ctx: Ctx, p: dict) -> str:
    """Run a QEMU human monitor command on a running guest (root's debugging tool, as in Proxmox)."""
    guest = guests.guest_or_404(ctx, p["node"], p["vmid"])
    if ctx.rt.driver is None or guest["node"] != ctx.node.name:
        raise Rejection(501, "the guest runs on another node")
    try:
        return await ctx.rt.driver.hmp(p["vmid"], p["command"])
    except GuestError as exc:
        raise Rejection(409, str(exc)) from None


def _power_endpoint(action: str, task_type: str, params: list[Param], doc: str) -> None:
    async def handler(ctx: Ctx, p: dict) -> str:
        options = {k: v for k, v in p.items() if k not in ("node", "vmid", "skiplock")}
        return await guests.power(ctx, p["node"], p["vmid"], task_type, options, skiplock=bool(p.get("skiplock")))

    handler.__name__ = f"vm_{action}"
    handler.__doc__ = doc
    API.endpoint("POST", f"/nodes/{{node}}/qemu/{{vmid}}/status/{action}", params=[NODE, VMID_PATH, *params],
                 permission=POWER, returns=UPID_RETURN)(handler)


_power_endpoint("start", "qmstart", [SKIPLOCK, TIMEOUT, Param("machine"), Param("migratedfrom", format="pve-node"),
                                     Param("migration_type", enum=("secure", "insecure")), Param("stateuri"),
                                     Param("targetstorage"), Param("force-cpu")],
                "Start the guest.")
_power_endpoint("stop", "qmstop", [SKIPLOCK, TIMEOUT, Param("keepActive", "boolean", default=0),
                                   Param("migratedfrom", format="pve-node"),
                                   Param("overrule-shutdown", "boolean", default=0)],
                "Stop the guest at once (like pulling the plug).")
_power_endpoint("shutdown", "qmshutdown", [SKIPLOCK, TIMEOUT, Param("forceStop", "boolean", default=0),
                                           Param("keepActive", "boolean", default=0)],
                "Shut the guest down by ACPI; with `forceStop`, stop it after `timeout`.")
_power_endpoint("reboot", "qmreboot", [TIMEOUT], "Reboot the guest: shut it down, then start it.")
_power_endpoint("reset", "qmreset", [SKIPLOCK], "Reset the guest.")
_power_endpoint("suspend", "qmsuspend", [SKIPLOCK, Param("todisk", "boolean", default=0),
                                         Param("statestorage", format="pve-storage-id")],
                "Pause the guest.")
_power_endpoint("resume", "qmresume", [SKIPLOCK, Param("nocheck", "boolean")], "Resume a paused guest.")
