"""/v1/migration: what a migration's target node does for the source (internal calls between members); the
work itself is hypervisor/migration_target.py."""

from __future__ import annotations

import json

from api.context import Ctx
from api.registry import API
from api.schema import Param, Permission
from hypervisor.migration_target import MigrationTarget, config_to_run, moving_here

INCOMING = Permission("Sys.Incoming", "/")
VMID = Param("vmid", "integer", optional=False, minimum=100, maximum=999_999_999, location="path")


def _target(ctx: Ctx, vmid: int) -> MigrationTarget:
    """This node as the target for guest `vmid`, which must exist and belong to another node."""
    moving_here(ctx.node, vmid)
    return MigrationTarget(ctx.rt.driver, ctx.rt.storages, ctx.node.spec.ip)


@API.endpoint("POST", "/migration/{vmid}/incoming", native=True, permission=INCOMING,
              params=[VMID, Param("source", format="pve-node"),
                      Param("volumes", description="JSON list of {key, volid, size}: local disks to receive by NBD")],
              returns={"type": "object", "properties": {"uri": {"type": "string"}, "nbd": {"type": "object"}}})
async def incoming(ctx: Ctx, p: dict) -> dict:
    """Start the guest here, paused and waiting for its state (`-incoming`); with local disks, make empty
    volumes and export them over NBD for the source to mirror into. Answers where to send what."""
    conf = await config_to_run(ctx.node, p["vmid"])
    target = MigrationTarget(ctx.rt.driver, ctx.rt.storages, ctx.node.spec.ip)
    return await target.incoming(p["vmid"], conf, json.loads(p.get("volumes") or "[]"))


@API.endpoint("POST", "/migration/{vmid}/resume", native=True, permission=INCOMING,
              params=[VMID, Param("exports", description="JSON list of the NBD export ids to remove")],
              returns={"type": "object"})
async def resume(ctx: Ctx, p: dict) -> dict:
    """After the state has arrived: end the disk exports and let the guest run here."""
    await _target(ctx, p["vmid"]).resume(p["vmid"], json.loads(p.get("exports") or "[]"))
    return {}


@API.endpoint("POST", "/migration/{vmid}/abort", native=True, permission=INCOMING, params=[VMID],
              returns={"type": "object"})
async def abort(ctx: Ctx, p: dict) -> dict:
    """Stop a guest that was waiting here for a migration that failed."""
    await _target(ctx, p["vmid"]).abort(p["vmid"])
    return {}


@API.endpoint("PUT", "/migration/{vmid}/volume", native=True, permission=INCOMING, raw_body=True,
              params=[VMID, Param("volid", optional=False)], returns={"type": "object"})
async def receive_volume(ctx: Ctx, p: dict) -> dict:
    """Receive a guest volume (offline migration): the request body is the image, stored under the same volid."""
    return {"size": await _target(ctx, p["vmid"]).receive_volume(p["vmid"], p["volid"], ctx.request.body)}


@API.endpoint("DELETE", "/migration/{vmid}/volume", native=True, permission=INCOMING,
              params=[VMID, Param("volid", optional=False)], returns={"type": "object"})
async def drop_volume(ctx: Ctx, p: dict) -> dict:
    """Remove a volume made for a migration that failed."""
    await _target(ctx, p["vmid"]).drop_volume(p["vmid"], p["volid"])
    return {}
