"""/nodes: the member list and task status."""

from __future__ import annotations

from api.compat.cluster import node_resources
from api.context import Ctx, Reply
from api.registry import API
from api.schema import NODE, UPID_PATH, Param, ParamErrors
from engine.errors import not_found
from engine.upid import Upid


@API.endpoint("GET", "/nodes", returns={"type": "array", "items": {"type": "object"}})
async def list_nodes(ctx: Ctx, p: dict) -> list:
    """Cluster nodes with their status."""
    rows = node_resources(ctx)
    for row in rows:
        row.pop("type")
    return rows


def _task(ctx: Ctx, node: str, upid: str) -> dict:
    try:
        Upid.parse(upid)
    except ValueError as exc:
        raise ParamErrors({"upid": str(exc)}) from None
    with ctx.node.read() as s:
        task = s.tasks.get(upid)
        if task is None or task["node"] != node:
            raise not_found(f"no such task '{upid}'")
        return dict(task)


@API.endpoint("GET", "/nodes/{node}/tasks/{upid}/status", params=[NODE, UPID_PATH],
              returns={"type": "object"})
async def task_status(ctx: Ctx, p: dict) -> dict:
    """A task's status: `running`, or `stopped` with its `exitstatus`."""
    task = _task(ctx, p["node"], p["upid"])
    parsed = Upid.parse(task["upid"])
    out = {"upid": task["upid"], "node": task["node"], "pid": parsed.pid, "pstart": parsed.pstart,
           "starttime": task["starttime"], "type": task["type"], "id": task["id"], "user": task["user"],
           "status": task["status"]}
    if task["status"] == "stopped":
        out["exitstatus"] = task["exitstatus"]
    return out


@API.endpoint("GET", "/nodes/{node}/tasks/{upid}/log",
              params=[NODE, UPID_PATH, Param("start", "integer", minimum=0, default=0),
                      Param("limit", "integer", minimum=0, default=50)],
              returns={"type": "array", "items": {"type": "object"}})
async def task_log(ctx: Ctx, p: dict) -> Reply:
    """A task's log lines as `{n, t}`, with `total`."""
    lines = _task(ctx, p["node"], p["upid"])["log"] or ["no content"]
    start, limit = p.get("start", 0), p.get("limit", 50)
    rows = [{"n": i + 1, "t": t} for i, t in enumerate(lines)][start:start + limit]
    return Reply(rows, extra={"total": len(lines)})
