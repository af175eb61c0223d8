"""/nodes/{node}/qemu: create, list and read guests."""

from __future__ import annotations

from api.compat.guests import guest_summary, sampled
from api.compat.qemu_options import CONFIG_PARAMS, CREATE_ONLY, CREATE_ONLY_PARAMS
from api.context import Ctx, Reply
from api.registry import API
from api.returns import NUM, STR, array, obj
from api.schema import NODE, UPID_RETURN, VMID, VMID_PATH, Param, ParamErrors, Permission
from api.services import guest_access, guests
from api.views import views

CONF_VALUE = {"anyOf": [STR, NUM]}  # a config value: text, or a number (memory, booleans as 0/1)


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
async def list_vms(ctx: Ctx, p: dict) -> Reply:
    """Guests on a node; only those the caller may audit."""
    with ctx.node.read() as s:
        grants = views(ctx.node).grants(s, ctx.user)
        memo = grants.memo.get(("qemu", p["node"]))
        if memo is None:  # the caller's rows at this applied index, their JSON, the running ones: once
            rows = [row for g, row in views(ctx.node).guest_rows(s, guest_summary)
                    if g["node"] == p["node"] and "VM.Audit" in grants.on_vm(row["vmid"])]
            running = [(i, s.guests[row["vmid"]]["conf"]) for i, row in enumerate(rows) if row["status"] == "running"]
            memo = grants.memo[("qemu", p["node"])] = (rows, views(ctx.node).encoded(rows), running)
        rows, encoded, running = memo
        live = [(i, dict(conf), sampled(ctx.rt.sampler, {**rows[i], "node": p["node"]})) for i, conf in running]
    if not live:
        return Reply(list(rows), encoded=encoded)  # a copy: the kept list is shared
    rows, encoded = list(rows), list(encoded)
    for i, conf, figures in live:  # copies: the kept rows are shared
        row = dict(rows[i])
        if ctx.rt.driver is not None and p["node"] == ctx.node.name:
            row.update(ctx.rt.driver.process_status(row["vmid"], conf))
        row.update(figures)
        rows[i] = encoded[i] = row
    return Reply(rows, encoded=encoded)


@API.endpoint(
    "GET", "/nodes/{node}/qemu/{vmid}/config",
    params=[NODE, VMID_PATH, Param("current", "boolean", default=0), Param("snapshot", pattern=r"[a-zA-Z][\w-]*")],
    permission=Permission("VM.Audit", "/vms/{vmid}"), returns={"type": "object"},
)
async def get_vm_config(ctx: Ctx, p: dict) -> dict:
    """The guest's configuration with pending changes applied (`current`: as it runs; `snapshot`: that snapshot's),
    with the `digest` of the whole config file that every digest-guarded write checks."""
    return guests.config_view(ctx, p["node"], p["vmid"], current=bool(p.get("current")), snapshot=p.get("snapshot"))


@API.endpoint(
    "GET", "/nodes/{node}/qemu/{vmid}/pending", params=[NODE, VMID_PATH],
    permission=Permission("VM.Audit", "/vms/{vmid}"),
    returns=array(obj({"key": STR}, {"value": CONF_VALUE, "pending": CONF_VALUE, "delete": {"type": "integer",
                                                                                         "enum": [1, 2]}})),
)
async def get_vm_pending(ctx: Ctx, p: dict) -> list:
    """The guest's configuration with both current and pending values: `{key, value, pending, delete}` per key
    (`delete` 1, or 2 for a forced delete)."""
    return guests.pending_view(ctx, p["node"], p["vmid"])
