"""/nodes: the member list and task status."""

from __future__ import annotations

from api.compat.cluster import NODE_FIGURES, NODE_KEYS, node_resources
from api.context import Ctx, Reply
from api.native.figures import remote_figures
from api.registry import API
from api.returns import STR, array, obj, one_of
from api.schema import NODE, UPID_PATH, Param
from api.services import tasks as task_service
from engine.upid import Upid

# pve-manager `PVE/API2/Nodes.pm` index: the /cluster/resources node row (without `cgroup-mode`) and the node's
# certificate fingerprint; figures for callers with Sys.Audit on the node.
FINGERPRINT = {"ssl_fingerprint": STR}
NODES_ROW = one_of(obj({**NODE_KEYS, **NODE_FIGURES, **FINGERPRINT}), obj({**NODE_KEYS, **FINGERPRINT}))


@API.endpoint("GET", "/nodes/{node}", params=[NODE], returns=array(obj({"name": STR})))
async def node_index(ctx: Ctx, p: dict) -> list:
    """Directory index of a node (`{"name": …}` rows, as Proxmox's `/nodes/{node}`)."""
    return [{"name": name} for name in API.children("/nodes/{node}")]


@API.endpoint("GET", "/cluster", returns=array(obj({"name": STR})))
async def cluster_index(ctx: Ctx, p: dict) -> list:
    """Directory index of the cluster (`{"name": …}` rows, as Proxmox's `/cluster`)."""
    return [{"name": name} for name in API.children("/cluster")]


@API.endpoint("GET", "/nodes", returns=array(NODES_ROW), paged=True)
async def list_nodes(ctx: Ctx, p: dict) -> list:
    """Cluster nodes with their status, figures and `ssl_fingerprint` (SHA-256 of the node's API certificate, as
    colon-separated upper-case hex pairs)."""
    with ctx.node.read() as s:
        fingerprints = {name: n.get("fingerprint", "") for name, n in s.nodes.items()}
    rows = node_resources(ctx, await remote_figures(ctx))
    for row in rows:
        row.pop("cgroup-mode", None)
        row["ssl_fingerprint"] = fingerprints.get(row["node"], "")
    return rows


@API.endpoint("GET", "/nodes/{node}/tasks/{upid}/status", params=[NODE, UPID_PATH],
              returns={"type": "object"})
async def task_status(ctx: Ctx, p: dict) -> dict:
    """A task's status: `running`, or `stopped` with its `exitstatus`."""
    task = task_service.task_or_404(ctx, p["node"], p["upid"])
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
    task = task_service.task_or_404(ctx, p["node"], p["upid"])
    live = ctx.rt.reconciler.live_log(task["upid"]) if ctx.rt.reconciler is not None else None
    lines = (live if task["status"] == "running" and live is not None else task["log"]) or ["no content"]
    start, limit = p.get("start", 0), p.get("limit", 50)
    rows = [{"n": i + 1, "t": t} for i, t in enumerate(lines)][start:start + limit]
    return Reply(rows, extra={"total": len(lines)})


def _task_row(task: dict) -> dict:
    parsed = Upid.parse(task["upid"])
    row = {"upid": task["upid"], "node": task["node"], "pid": parsed.pid, "pstart": parsed.pstart,
           "starttime": task["starttime"], "type": task["type"], "id": task["id"], "user": task["user"]}
    if task["status"] == "stopped":
        row.update(endtime=task.get("endtime", task["starttime"]), status=task["exitstatus"])
    return row


@API.endpoint("GET", "/nodes/{node}/tasks",
              paged=True, default_limit=50,
              params=[NODE, Param("start", "integer", minimum=0, default=0),
                      Param("limit", "integer", minimum=0, maximum=500, default=50),
                      Param("vmid", "integer", minimum=100, maximum=999_999_999), Param("typefilter"),
                      Param("userfilter"), Param("statusfilter"), Param("errors", "boolean", default=0),
                      Param("source", enum=("archive", "active", "all"), default="archive"),
                      Param("since", "integer"), Param("until", "integer")],
              returns={"type": "array", "items": {"type": "object", "properties": {"upid": {"type": "string"}}}})
async def list_tasks(ctx: Ctx, p: dict) -> Reply:
    """The node's tasks, newest first, with Proxmox's filters; `total` counts every match."""
    source = p.get("source", "archive")
    see_all = ctx.can("Sys.Audit", f"/nodes/{p['node']}")
    with ctx.node.read() as s:
        tasks = [dict(t) for t in s.tasks.values() if t["node"] == p["node"]]
    if not see_all:
        tasks = [t for t in tasks if task_service.owns(ctx, t)]
    rows = []
    for task in sorted(tasks, key=lambda t: (t["starttime"], t["upid"]), reverse=True):
        running = task["status"] == "running"
        if source == "active" and not running:
            continue
        if "vmid" in p and task["id"] != str(p["vmid"]):
            continue
        if p.get("typefilter") and task["type"] != p["typefilter"]:
            continue
        if p.get("userfilter") and p["userfilter"] not in task["user"]:
            continue
        if p.get("errors") and (running or task["exitstatus"] == "OK"):
            continue
        if "since" in p and task["starttime"] < p["since"]:
            continue
        if "until" in p and task["starttime"] > p["until"]:
            continue
        row = _task_row(task)
        if p.get("statusfilter"):
            wanted = {x.strip() for x in p["statusfilter"].split(",")}
            state = "running" if running else ("ok" if task["exitstatus"] == "OK" else
                                                "warning" if task["exitstatus"].startswith("WARNINGS") else "error")
            if state not in wanted:
                continue
        rows.append(row)
    start, limit = p.get("start", 0), p.get("limit", 50)
    return Reply(rows[start:start + limit] if limit else rows[start:], extra={"total": len(rows)})


@API.endpoint("GET", "/nodes/{node}/tasks/{upid}", params=[NODE, UPID_PATH],
              returns={"type": "array", "items": {"type": "object"}})
async def task_index(ctx: Ctx, p: dict) -> list:
    """Directory index."""
    task_service.task_or_404(ctx, p["node"], p["upid"])
    return [{"name": "log"}, {"name": "status"}]


@API.endpoint("DELETE", "/nodes/{node}/tasks/{upid}", params=[NODE, UPID_PATH], returns={"type": "null"})
async def stop_task(ctx: Ctx, p: dict) -> None:
    """Stop a running task."""
    await task_service.stop(ctx, p["node"], p["upid"])
    return None

RECENT_TASKS_PER_NODE = 25  # Proxmox's `active_workers`: a node's running tasks, then its newest finished ones


@API.endpoint("GET", "/cluster/tasks",
              returns={"type": "array", "items": {"type": "object", "required": ["upid", "node", "type", "user"],
                                                  "properties": {"upid": {"type": "string"}}}})
async def cluster_tasks(ctx: Ctx, p: dict) -> list:
    """Recent tasks of every node (Proxmox's cluster task list): per node its running tasks, then its newest
    finished ones, 25 in all; a token's tasks show its user in `user` and the token's name in `tokenid`. Without
    `Sys.Audit` on `/` only the caller's own tasks."""
    see_all = ctx.can("Sys.Audit", "/")
    with ctx.node.read() as s:
        tasks = sorted((dict(t) for t in s.tasks.values()), key=lambda t: (t["starttime"], t["upid"]), reverse=True)
    by_node: dict[str, list[dict]] = {}
    for task in tasks:
        by_node.setdefault(task["node"], []).append(task)
    rows = []
    for _node, listed in sorted(by_node.items()):
        running = [t for t in listed if t["status"] == "running"]
        finished = [t for t in listed if t["status"] != "running"]
        for task in running + finished[:max(0, RECENT_TASKS_PER_NODE - len(running))]:
            if not see_all and not task_service.owns(ctx, task):
                continue
            row = _task_row(task)
            del row["pstart"]
            if task["status"] != "running":
                del row["pid"]
            user, _, tokenid = row["user"].partition("!")
            if tokenid:
                row.update(user=user, tokenid=tokenid)
            rows.append(row)
    return rows
