"""/v1/migration: what a migration's target node does for the source (internal calls between members)."""

from __future__ import annotations

import json
import os
import socket

from quart import request

from api.context import Ctx
from api.registry import API
from api.schema import Param, Permission
from engine.errors import Rejection
from hypervisor.qemu import GuestError
from hypervisor.storage import run

INCOMING = Permission("Sys.Incoming", "/")
VMID = Param("vmid", "integer", optional=False, minimum=100, maximum=999_999_999, location="path")


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _storage_for(ctx: Ctx, vmid: int, volid: str):
    """The storage holding `volid`, which must be a volume of guest `vmid`."""
    storage = ctx.rt.storages.get(volid.partition(":")[0])
    if storage is None or storage.volume_vmid(volid) != vmid:
        raise Rejection(400, f"volume '{volid}' does not belong to VM {vmid}")
    return storage


def _not_owned_here(ctx: Ctx, vmid: int) -> None:
    with ctx.node.read() as s:
        guest = s.guests.get(vmid)
    if guest is None:
        raise Rejection(404, f"VM {vmid} does not exist")
    if guest["node"] == ctx.node.name:
        raise Rejection(409, f"VM {vmid} already belongs to node '{ctx.node.name}'")


@API.endpoint("POST", "/migration/{vmid}/incoming", native=True, permission=INCOMING,
              params=[VMID, Param("source", format="pve-node"),
                      Param("volumes", description="JSON list of {key, volid, size}: local disks to receive by NBD")],
              returns={"type": "object", "properties": {"uri": {"type": "string"}, "nbd": {"type": "object"}}})
async def incoming(ctx: Ctx, p: dict) -> dict:
    """Start the guest here, paused and waiting for its state (`-incoming`); with local disks, make empty
    volumes and export them over NBD for the source to mirror into. Answers where to send what."""
    vmid = p["vmid"]
    _not_owned_here(ctx, vmid)
    with ctx.node.read() as s:
        conf = dict(s.guests[vmid]["conf"])
    volumes = json.loads(p.get("volumes") or "[]")
    for vol in volumes:
        storage = _storage_for(ctx, vmid, vol["volid"])
        path = storage.volume_path(vol["volid"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        await run("qemu-img", "create", "-q", "-f", storage.volume_format(vol["volid"]), path, str(vol["size"]))
    ip = ctx.node.spec.ip
    uri = f"tcp:{ip}:{_free_port(ip)}"
    driver = ctx.rt.driver
    try:
        # with disks to receive, the guest must not run here before their exports are gone
        await driver.start(vmid, {k: v for k, v in conf.items() if k != "lock"}, incoming=uri, paused=bool(volumes))
        nbd = {}
        if volumes:
            port = _free_port(ip)
            await driver.qmp(vmid, "nbd-server-start", {"addr": {"type": "inet", "data": {"host": ip,
                                                                                       "port": str(port)}}})
            nodes = {b["device"]: b["inserted"]["node-name"] for b in await driver.qmp(vmid, "query-block")
                     if b.get("inserted")}
            for vol in volumes:
                name = f"drive-{vol['key']}"
                await driver.qmp(vmid, "block-export-add", {"type": "nbd", "id": name, "node-name": nodes[name],
                                                            "name": name, "writable": True})
                nbd[vol["key"]] = f"nbd:{ip}:{port}:exportname={name}"
    except GuestError as exc:
        await driver.stop(vmid)
        raise Rejection(500, f"migration target: {exc}") from None
    return {"uri": uri, "nbd": nbd}


@API.endpoint("POST", "/migration/{vmid}/resume", native=True, permission=INCOMING,
              params=[VMID, Param("exports", description="JSON list of the NBD export ids to remove")],
              returns={"type": "object"})
async def resume(ctx: Ctx, p: dict) -> dict:
    """After the state has arrived: end the disk exports and let the guest run here."""
    _not_owned_here(ctx, p["vmid"])
    driver = ctx.rt.driver
    try:
        for export in json.loads(p.get("exports") or "[]"):
            await driver.qmp(p["vmid"], "block-export-del", {"id": export})
        if p.get("exports") and json.loads(p["exports"]):
            await driver.qmp(p["vmid"], "nbd-server-stop")
        await driver.qmp(p["vmid"], "cont")
    except GuestError as exc:  # nothing waits here for this guest
        raise Rejection(409, f"migration target: {exc}") from None
    return {}


@API.endpoint("POST", "/migration/{vmid}/abort", native=True, permission=INCOMING, params=[VMID],
              returns={"type": "object"})
async def abort(ctx: Ctx, p: dict) -> dict:
    """Stop a guest that was waiting here for a migration that failed."""
    _not_owned_here(ctx, p["vmid"])
    await ctx.rt.driver.stop(p["vmid"])
    return {}


@API.endpoint("PUT", "/migration/{vmid}/volume", native=True, permission=INCOMING, raw_body=True,
              params=[VMID, Param("volid", optional=False)], returns={"type": "object"})
async def receive_volume(ctx: Ctx, p: dict) -> dict:
    """Receive a guest volume (offline migration): the request body is the image, stored under the same volid."""
    _not_owned_here(ctx, p["vmid"])
    path = _storage_for(ctx, p["vmid"], p["volid"]).volume_path(p["volid"])
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


@API.endpoint("DELETE", "/migration/{vmid}/volume", native=True, permission=INCOMING,
              params=[VMID, Param("volid", optional=False)], returns={"type": "object"})
async def drop_volume(ctx: Ctx, p: dict) -> dict:
    """Remove a volume made for a migration that failed."""
    _not_owned_here(ctx, p["vmid"])
    await _storage_for(ctx, p["vmid"], p["volid"]).free(p["volid"])
    return {}
