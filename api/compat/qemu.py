"""/nodes/{node}/qemu: create, list and read guests."""

from __future__ import annotations

from api.compat.guests import guest_summary, sampled
from api.compat.qemu_options import CONFIG_PARAMS, CREATE_ONLY, CREATE_ONLY_PARAMS
from api.context import Ctx
from api.registry import API
from api.schema import NODE, UPID_RETURN, VMID, VMID_PATH, Param, ParamErrors, Permission
from api.services import guest_access, guests
from api.views import views
from engine.state import guest_digest


@API.endpoint(
    "POST", "/nodes/{node}/qemu", params=[NODE, VMID, *CONFIG_PARAMS, *CREATE_ONLY_PARAMS],
    permission=guest_access.CREATE_PERMISSION, returns=UPID_RETURN,
)
async def create_vm(ctx: Ctx, p: dict) -> str:
    """Create a guest (its config; QEMU runs it once started)."""
    unsupported = {k: f"'{k}' is not supported yet" for k in ("archive", "live-restore") if p.get(k)}
    if unsupported:
        raise ParamErrors(unsupported)
    config = {k: v for k, v in p.items() if k not in ("node", "vmid") and k not in CREATE_ONLY}
    return await guests.create(ctx, p["node"], p["vmid"], config, pool=p.get("pool"), storage=p.get("storage"),
                               start=bool(p.get("start")))


@API.endpoint(
    "GET", "/nodes/{node}/qemu", params=[NODE, Param("full", "boolean")], paged=True,
    returns={"type": "array", "items": {"type": "object", "properties": {"vmid": {"type": "integer"}}}},
)
async def list_vms(ctx: Ctx, p: dict) -> list:
    """Guests on a node; only those the caller may audit."""
    with ctx.node.read() as s:
        grants = views(ctx.node).grants(s, ctx.user)
        guests = grants.memo.get(("qemu", p["node"]))
        if guests is None:  # the caller's rows at this applied index: once
            guests = grants.memo[("qemu", p["node"])] = [
                (row, g["conf"] if row["status"] == "running" else None)
                for g, row in views(ctx.node).guest_rows(s, guest_summary)
                if g["node"] == p["node"] and "VM.Audit" in grants.on_vm(row["vmid"])]
        running = [(row, dict(conf), sampled(ctx.rt.sampler, {**row, "node": p["node"]}))
                   for row, conf in guests if conf is not None]
    live_rows = {}
    for row, conf, live in running:  # copies: the cached rows are shared
        row = dict(row)
        if ctx.rt.driver is not None and p["node"] == ctx.node.name:
            row.update(ctx.rt.driver.process_status(row["vmid"], conf))
        row.update(live)
        live_rows[row["vmid"]] = row
    return [live_rows.get(row["vmid"], row) for row, _ in guests]


@API.endpoint(
    "GET", "/nodes/{node}/qemu/{vmid}/config",
    params=[NODE, VMID_PATH, Param("current", "boolean", default=0), Param("snapshot", pattern=r"[a-zA-Z][\w-]*")],
    permission=Permission("VM.Audit", "/vms/{vmid}"), returns={"type": "object"},
)
async def get_vm_config(ctx: Ctx, p: dict) -> dict:
    """The guest's configuration (or, with `snapshot`, that snapshot's), with the `digest` of the whole config
    file that every digest-guarded write checks (Proxmox: `GET /nodes/{node}/qemu/{vmid}/config`)."""
    guest = guests.guest_or_404(ctx, p["node"], p["vmid"])
    conf = guest["conf"]
    if p.get("snapshot"):
        conf = guest.get("snapshots", {}).get(p["snapshot"])
        if conf is None:
            raise ParamErrors({"snapshot": f"snapshot '{p['snapshot']}' does not exist"})
    return {**conf, "digest": guest_digest(guest)}
