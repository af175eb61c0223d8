"""/pools: resource pools, whose members inherit the pool's ACLs."""

from __future__ import annotations

from api.compat.cluster import all_guest_rows, guest_resources, storage_resources
from api.context import Ctx
from api.registry import API
from api.schema import Param, ParamErrors, Permission, split_list
from api.services import access
from engine.errors import not_found

POOLID = Param("poolid", optional=False, pattern=r"[A-Za-z0-9.\-_]+", location="path")


@API.endpoint("GET", "/pools", params=[Param("poolid"), Param("type", enum=("qemu", "lxc", "storage"))], paged=True,
              returns={"type": "array", "items": {"type": "object", "properties": {"poolid": {"type": "string"}}}})
async def list_pools(ctx: Ctx, p: dict) -> list:
    """Pools the caller may audit."""
    with ctx.node.read() as s:
        pools = {k: dict(v) for k, v in s.access.get("pool", {}).items()}
    if p.get("poolid"):  # Proxmox 8.1+: one pool with its members, as `GET /pools/{poolid}` (not deprecated)
        if p["poolid"] not in pools:
            raise not_found(f"pool '{p['poolid']}' does not exist")
        if not ctx.can("Pool.Audit", f"/pool/{p['poolid']}"):
            return []
        return [{"poolid": p["poolid"], "comment": pools[p["poolid"]].get("comment", ""),
                 "members": members(ctx, pools[p["poolid"]], p["poolid"], p.get("type"))}]
    return [{"poolid": poolid, "comment": pool.get("comment", "")} for poolid, pool in sorted(pools.items())
            if ctx.can("Pool.Audit", f"/pool/{poolid}")]


def members(ctx: Ctx, pool: dict, poolid: str, kind: str | None = None) -> list[dict]:
    """The pool's guests and storages as their `/cluster/resources` rows (pve-manager `API2/Pool.pm`), those the
    caller may audit; `kind` (`qemu`, `lxc`, `storage`) keeps one type."""
    rows: list[dict] = []
    if kind in (None, "qemu"):
        rows += [r for r in guest_resources(ctx, all_guest_rows(ctx, {})) if r["vmid"] in pool["vms"]]
    if kind in (None, "storage"):
        rows += [r for r in storage_resources(ctx) if r["storage"] in pool["storage"]]
    return rows


@API.endpoint("POST", "/pools", params=[Param("poolid", optional=False, pattern=r"[A-Za-z0-9.\-_]+"),
                                         Param("comment", max_length=2048)],
              permission=Permission("Pool.Allocate", "/pool/{poolid}"), returns={"type": "null"})
async def create_pool(ctx: Ctx, p: dict) -> None:
    """Create a pool."""
    await access.create_pool(ctx, p["poolid"], p.get("comment", ""))


@API.endpoint("GET", "/pools/{poolid}", params=[POOLID, Param("type", enum=("qemu", "lxc", "storage"))],
              permission=Permission("Pool.Audit", "/pool/{poolid}"),
              returns={"type": "object"})
async def get_pool(ctx: Ctx, p: dict) -> dict:
    """A pool and its members."""
    with ctx.node.read() as s:
        pool = s.access.get("pool", {}).get(p["poolid"])
        pool = dict(pool) if pool is not None else None
    if pool is None:
        raise not_found(f"pool '{p['poolid']}' does not exist")
    return {"comment": pool.get("comment", ""), "members": members(ctx, pool, p["poolid"], p.get("type"))}


@API.endpoint("PUT", "/pools/{poolid}",
              params=[POOLID, Param("comment", max_length=2048), Param("vms"), Param("storage"),
                      Param("delete", "boolean", default=0), Param("allow-move", "boolean", default=0)],
              permission=Permission("Pool.Allocate", "/pool/{poolid}"), returns={"type": "null"})
async def update_pool(ctx: Ctx, p: dict) -> None:
    """Add (or with `delete`, remove) guests and storages."""
    vms = split_list(p.get("vms"))
    bad = [v for v in vms if not v.isdigit()]
    if bad:
        raise ParamErrors({"vms": f"invalid VMID '{bad[0]}'"})
    await access.update_pool(ctx, p["poolid"], p.get("comment"), [int(v) for v in vms], split_list(p.get("storage")),
                             remove=bool(p.get("delete")), allow_move=bool(p.get("allow-move")))


@API.endpoint("DELETE", "/pools/{poolid}", params=[POOLID], permission=Permission("Pool.Allocate", "/pool/{poolid}"),
              returns={"type": "null"})
async def delete_pool(ctx: Ctx, p: dict) -> None:
    """Delete an empty pool."""
    await access.delete_pool(ctx, p["poolid"])
