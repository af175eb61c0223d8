"""/nodes/{node}/storage and /cluster/log."""

from __future__ import annotations

from api.context import Ctx
from api.registry import API
from api.schema import NODE, Param, Permission
from engine.errors import not_found

STORAGE = Param("storage", optional=False, format="pve-storage-id", location="path")


@API.endpoint("GET", "/nodes/{node}/storage",
              params=[NODE, Param("content"), Param("enabled", "boolean"), Param("storage", format="pve-storage-id")],
              returns={"type": "array", "items": {"type": "object", "properties": {"storage": {"type": "string"}}}})
async def list_storage(ctx: Ctx, p: dict) -> list:
    """The node's storages with usage."""
    rows = []
    for sid, storage in sorted(ctx.rt.storages.items()):
        if p.get("storage") and sid != p["storage"]:
            continue
        if not (ctx.can("Datastore.Audit", f"/storage/{sid}") or ctx.can("Datastore.AllocateSpace", f"/storage/{sid}")):
            continue
        if p.get("content") and p["content"] not in storage.content:
            continue
        usage = storage.usage()
        rows.append({"storage": sid, "type": "dir", "active": 1, "enabled": 1, "shared": 0,
                     "content": ",".join(storage.content), **usage,
                     "used_fraction": round(usage["used"] / usage["total"], 6) if usage["total"] else 0})
    return rows


@API.endpoint("GET", "/nodes/{node}/storage/{storage}/content",
              params=[NODE, STORAGE, Param("content"), Param("vmid", "integer", minimum=100, maximum=999_999_999)],
              paged=True,
              permission=Permission("Datastore.Audit", "/storage/{storage}"),
              returns={"type": "array", "items": {"type": "object", "properties": {"volid": {"type": "string"}}}})
async def list_content(ctx: Ctx, p: dict) -> list:
    """Volumes on a storage (`content` and `vmid` filters)."""
    storage = ctx.rt.storages.get(p["storage"])
    if storage is None:
        raise not_found(f"storage '{p['storage']}' does not exist")
    return storage.list_volumes(p.get("content"), p.get("vmid"))


@API.endpoint("GET", "/cluster/log", params=[Param("max", "integer", minimum=1)],
              permission=Permission("Sys.Syslog", "/"),
              returns={"type": "array", "items": {"type": "object"}})
async def cluster_log(ctx: Ctx, p: dict) -> list:
    """Recent cluster log entries (guest crashes among them), newest first."""
    with ctx.node.read() as s:
        rows = [dict(r, uid=i) for i, r in enumerate(s.cluster_log)]
    return list(reversed(rows))[: p.get("max", 50)]
