"""Tasks: starting a guest task (its intent in the log, run by the guest's node), waiting for it, finding one the
caller may see, and stopping it (pve-manager's `PVE/API2/Tasks.pm`).

Used by every interface; the task's kind (engine/tasks.py) decides its lock and which parameters it takes.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from api.context import Ctx
from api.errors import forbidden
from api.schema import ParamErrors
from engine import commands as cmd
from engine import tasks
from engine.errors import Rejection, not_found
from engine.upid import Upid


async def start_task(ctx: Ctx, node: str, vmid: int, task_type: str, intent: dict | None = None, *,
                     newid: int | None = None, digest: str | None = None, skiplock: bool = False) -> str:
    """Record the intent in the log; the guest's node runs it, under the lock its kind declares (engine/tasks.py).
    Returns the UPID. The kind's intent check runs here too, so a refusal costs no log entry.
    Raises 400 (unknown parameter, `skiplock` from anyone but root@pam), 403 (root-only parameter), 404/409/423
    from the engine (guest, state, lock)."""
    return (await submit_task(ctx, node, vmid, task_type, intent, newid=newid, digest=digest,
                              skiplock=skiplock))["upid"]


async def submit_task(ctx: Ctx, node: str, vmid: int, task_type: str, intent: dict | None = None, *,
                      newid: int | None = None, digest: str | None = None, skiplock: bool = False) -> dict:
    """As `start_task`, answering the log's result for the request: `{"upid": …}`, or, when an earlier attempt of
    the request was decided as another command (a config change chooses per attempt, by the state the serving
    node sees, between a task and a plain command), that command's result."""
    if skiplock and ctx.user != "root@pam":
        raise ParamErrors({"skiplock": "Only root may use this option."})
    intent = intent or {}
    tasks.kind(task_type).check_intent(intent, ctx.user)
    upid, starttime = ctx.node.new_upid(node, task_type, str(vmid), ctx.user)
    result = await ctx.node.submit(cmd.StartTask(
        request_id=ctx.command_id, ts=ctx.now, user=ctx.user, node=node, upid=upid, starttime=starttime,
        type=task_type, vmid=vmid, intent=intent, newid=newid, skiplock=skiplock, digest=digest))
    return result


async def task_end(node, upid: str, timeout: float, watch: Callable[[], None] | None = None) -> dict | None:
    """A copy of task `upid` once it has ended (`status` stopped), None after `timeout` s. `watch` is called at
    every look while it runs and may raise to stop waiting."""
    with trio.move_on_after(timeout):
        while True:
            changed = node.state_changed()
            with node.read() as s:
                task = dict(s.tasks.get(upid) or {})
            if task.get("status") == "stopped":
                return task
            if watch is not None:
                watch()
            with trio.move_on_after(1.0):
                await changed.wait()
    return None


async def wait_task(ctx: Ctx, upid: str, timeout: float = 600.0) -> dict:
    """Until the task has ended; for the synchronous calls Proxmox makes (PUT config)."""
    task = await task_end(ctx.node, upid, timeout)
    if task is None:
        raise Rejection(500, f"got timeout waiting for task {upid}")
    if task["exitstatus"] != "OK":
        raise Rejection(500, task["exitstatus"])
    return task


def owns(ctx: Ctx, task: dict) -> bool:
    """A user owns the tasks it (or one of its tokens) started."""
    return task["user"] == ctx.user or task["user"].partition("!")[0] == ctx.user


def task_or_404(ctx: Ctx, node: str, upid: str) -> dict:
    """A copy of task `upid` of `node`, for its owner or a holder of Sys.Audit on the node. 400 for a malformed
    UPID, 404 when `node` has no such task, 403 otherwise."""
    try:
        Upid.parse(upid)
    except ValueError as exc:
        raise ParamErrors({"upid": str(exc)}) from None
    with ctx.node.read() as s:
        task = s.tasks.get(upid)
        if task is None or task["node"] != node:
            raise not_found(f"no such task '{upid}'")
        task = dict(task)
    if not owns(ctx, task) and not ctx.can("Sys.Audit", f"/nodes/{node}"):
        raise forbidden("Sys.Audit", f"/nodes/{node}")
    return task


async def stop(ctx: Ctx, node: str, upid: str) -> None:
    """`DELETE /nodes/{node}/tasks/{upid}`: ask the task to stop (its node aborts it; one that runs to its end, as
    a destroy, goes on). Someone else's task needs Sys.Modify on the node, as Proxmox's `stop_task`."""
    task = task_or_404(ctx, node, upid)
    if not owns(ctx, task) and not ctx.can("Sys.Modify", f"/nodes/{node}"):
        raise forbidden("Sys.Modify", f"/nodes/{node}")
    await ctx.node.submit(cmd.AbortTask(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, upid=upid))
