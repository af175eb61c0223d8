"""/nodes/{node}/qemu: create, list and read guests."""

from __future__ import annotations

import random
import re
import uuid

from api.compat.guests import guest_summary
from api.compat.qemu_options import CONFIG_PARAMS, CREATE_ONLY, CREATE_ONLY_PARAMS
from api.context import Ctx
from api.errors import ApiError
from api.registry import API
from api.schema import NODE, UPID_RETURN, VMID, VMID_PATH, Param, ParamErrors, Permission
from api.services import guest_access
from engine import access as acc
from engine import commands as cmd
from engine.decide import conf_path
from engine.errors import not_found
from engine.state import guest_digest

NET_MODELS = ("e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e", "i82551", "i82557b",
              "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3")
PROXMOX_OUI = "BC:24:11"


def _with_mac(value: str) -> str:
    """`virtio,bridge=vmbr0` -> `virtio=BC:24:11:xx:xx:xx,bridge=vmbr0`, as Proxmox assigns MACs."""
    first, _, rest = value.partition(",")
    model = first.split("=", 1)[0]
    if model == "model":
        model = first.split("=", 1)[1]
    elif "=" in first or model not in NET_MODELS:
        return value
    mac = PROXMOX_OUI + "".join(f":{random.randrange(256):02X}" for _ in range(3))
    return f"{model}={mac}" + ("," + rest if rest else "")


def new_guest_config(values: dict) -> dict:
    """The config of a new guest: given keys, plus the ids Proxmox generates on create."""
    conf = {k: v for k, v in values.items() if k not in {p.name for p in CREATE_ONLY_PARAMS}}
    if isinstance(conf.get("memory"), str) and conf["memory"].isdigit():
        conf["memory"] = int(conf["memory"])
    for key in [k for k in conf if re.fullmatch(r"net\d+", k)]:
        conf[key] = _with_mac(conf[key])
    conf.setdefault("smbios1", f"uuid={uuid.uuid4()}")
    conf.setdefault("vmgenid", str(uuid.uuid4()))
    return conf


@API.endpoint(
    "POST", "/nodes/{node}/qemu", params=[NODE, VMID, *CONFIG_PARAMS, *CREATE_ONLY_PARAMS],
    permission=guest_access.CREATE_PERMISSION, returns=UPID_RETURN,
)
async def create_vm(ctx: Ctx, p: dict) -> str:
    """Create a guest (its config; QEMU runs it once started)."""
    unsupported = {k: f"'{k}' is not supported yet" for k in ("archive", "live-restore") if p.get(k)}
    if unsupported:
        raise ParamErrors(unsupported)
    node, vmid, pool = p["node"], p["vmid"], p.get("pool")
    given, _ = guest_access.resolve_cdrom_alias({k: v for k, v in p.items() if k not in ("node", "vmid")
                                                 and k not in CREATE_ONLY})
    with ctx.node.read() as s:
        if pool and pool not in s.access.get("pool", {}):
            raise ApiError(403, f"pool '{pool}' does not exist")  # Proxmox's check_pool_exist
        guest_access.check_create(guest_access.held_in(s, ctx.user), ctx.user, vmid, given, pool=pool,
                                  storage=p.get("storage"), start=bool(p.get("start")))
    upid, starttime = ctx.node.new_upid(node, "qmcreate", str(vmid), ctx.user)
    config = new_guest_config(given)
    result = await ctx.node.submit(cmd.CreateGuest(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, node=node,
                                                   vmid=vmid, config=config, upid=upid, starttime=starttime,
                                                   start=bool(p.get("start"))))
    if pool:
        await ctx.node.submit(acc.SetPool(request_id=ctx.command_id + "/pool", ts=ctx.now, user=ctx.user,
                                          poolid=pool, vms=[vmid]))
    return result["upid"]  # a retried request id answers with the first attempt's task


@API.endpoint(
    "GET", "/nodes/{node}/qemu", params=[NODE, Param("full", "boolean")], paged=True,
    returns={"type": "array", "items": {"type": "object", "properties": {"vmid": {"type": "integer"}}}},
)
async def list_vms(ctx: Ctx, p: dict) -> list:
    """Guests on a node; only those the caller may audit."""
    with ctx.node.read() as s:
        guests = [(guest_summary(g), dict(g["conf"])) for vmid, g in sorted(s.guests.items()) if g["node"] == p["node"]]
    rows = []
    for row, conf in guests:
        if not ctx.can("VM.Audit", f"/vms/{row['vmid']}"):
            continue
        if ctx.rt.driver is not None and p["node"] == ctx.node.name and row["status"] == "running":
            row.update(ctx.rt.driver.process_status(row["vmid"], conf))
        rows.append(row)
    return rows


@API.endpoint(
    "GET", "/nodes/{node}/qemu/{vmid}/config",
    params=[NODE, VMID_PATH, Param("current", "boolean", default=0), Param("snapshot", pattern=r"[a-zA-Z][\w-]*")],
    permission=Permission("VM.Audit", "/vms/{vmid}"), returns={"type": "object"},
)
async def get_vm_config(ctx: Ctx, p: dict) -> dict:
    """The guest's configuration (or, with `snapshot`, that snapshot's), with the `digest` of the whole config
    file that every digest-guarded write checks (Proxmox: `GET /nodes/{node}/qemu/{vmid}/config`)."""
    with ctx.node.read() as s:
        guest = s.guests.get(p["vmid"])
        if guest is None or guest["node"] != p["node"]:
            raise not_found(f"Configuration file '{conf_path(p['node'], p['vmid'])}' does not exist")
        digest = guest_digest(guest)
        if p.get("snapshot"):
            snapshot = guest.get("snapshots", {}).get(p["snapshot"])
            if snapshot is None:
                raise ParamErrors({"snapshot": f"snapshot '{p['snapshot']}' does not exist"})
            conf = dict(snapshot)
        else:
            conf = dict(guest["conf"])
    return {**conf, "digest": digest}
