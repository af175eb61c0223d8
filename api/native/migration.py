"""/v1/migration: what a migration's target node does for the source (internal calls between members)."""

from __future__ import annotations

import os
import socket

from quart import request

from api.context import Ctx
from api.registry import API
from api.schema import Param, Permission
from engine.errors import Rejection
from hypervisor.qemu import GuestError

INCOMING = Permission("Sys.Incoming", "/")
VMID = Param("vmid", "integer", optional=False, minimum=100, maximum=999_999_999, location="path")


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _not_owned_here(ctx: Ctx, vmid: int) -> None:
    with ctx.node.read() as s:
        guest = s.guests.get(vmid)
    if guest is None:
        raise Rejection(404, f"VM {vmid} does not exist")
    if guest["node"] == ctx.node.name:
        raise Rejection(409, f"VM {vmid} already belongs to node '{ctx.node.name}'")


@API.endpoint("POST", "/migration/{vmid}/incoming", native=True, permission=INCOMING,
              params=[VMID, Param("source", format="pve-node")],
              returns={"type": "object", "properties": {"uri": {"type": "string"}}})
async def incoming(ctx: Ctx, p: dict) -> dict:
    """Start the guest here, waiting for its state (`-incoming`); answers where to send it."""
    _not_owned_here(ctx, p["vmid"])
    with ctx.node.read() as s:
        conf = dict(s.guests[p["vmid"]]["conf"])
    ip = ctx.node.spec.ip
    uri = f"tcp:{ip}:{_free_port(ip)}"
    try:
        await ctx.rt.driver.start(p["vmid"], {k: v for k, v in conf.items() if k != "lock"}, incoming=uri)
    except GuestError as exc:
        raise Rejection(500, f"migration target: {exc}") from None
    return {"uri": uri}


@API.endpoint("POST", "/migration/{vmid}/abort", native=True, permission=INCOMING, params=[VMID],
              returns={"type": "object"})
async def abort(ctx: Ctx, p: dict) -> dict:
    """Stop a guest that was waiting here for a migration that failed."""
    _not_owned_here(ctx, p["vmid"])
    await ctx.rt.driver.stop(p["vmid"])
    return {}


@API.endpoint("PUT", "/migration/{vmid}/volume", native=True, permission=INCOMING,
              params=[VMID, Param("volid", optional=False)], returns={"type": "object"})
async def receive_volume(ctx: Ctx, p: dict) -> dict:
    """Receive a guest volume (offline migration): the request body is the image, stored under the same volid."""
    _not_owned_here(ctx, p["vmid"])
    storage = ctx.rt.storages.get(p["volid"].partition(":")[0])
    if storage is None or storage.volume_vmid(p["volid"]) != p["vmid"]:
        raise Rejection(400, f"volume '{p['volid']}' does not belong to VM {p['vmid']}")
    path = storage.volume_path(p["volid"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    size = 0
    with open(path + ".part", "wb") as f:
        async for chunk in request.body:
            f.write(chunk)
            size += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".part", path)
    return {"size": size}
