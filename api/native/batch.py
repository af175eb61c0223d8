"""`POST /v1/batch/vms/action`: one action on many guests, wherever they run (the spec's "Bulk Operations").

Each guest's action is the Proxmox endpoint it stands for (`POST …/status/start`, `DELETE …/{vmid}`,
`POST …/snapshot`), run through that endpoint's own declaration: its parameters, its privilege on the
guest's path, its handler and so its service. A batch therefore allows and refuses exactly what the single
calls do. Each guest's action carries its own request id derived from the batch's, so a retried batch
(same `X-Request-ID`) starts nothing twice.
"""

from __future__ import annotations

import trio

from api.context import Ctx
from api.errors import forbidden
from api.registry import API
from api.schema import Param, ParamErrors
from api.services.tasks import wait_task
from engine.errors import Rejection
from engine.roles import privileges_on

POWER = ("start", "stop", "shutdown", "reboot", "reset", "suspend", "resume")
ACTIONS: dict[str, tuple[str, str]] = {  # action -> the Proxmox endpoint (method, path) it stands for
    **{a: ("POST", f"/nodes/{{node}}/qemu/{{vmid}}/status/{a}") for a in POWER},
    "delete": ("DELETE", "/nodes/{node}/qemu/{vmid}"),
    "snapshot": ("POST", "/nodes/{node}/qemu/{vmid}/snapshot"),
}
ACTION_PARAMS = [Param("snapname", description="snapshot: the snapshot's name"),
                 Param("description", description="snapshot: its description"),
                 Param("vmstate", "boolean", description="snapshot: include the RAM of running guests"),
                 Param("timeout", "integer", minimum=0, description="stop, shutdown, reboot: seconds"),
                 Param("forceStop", "boolean", description="shutdown: stop after `timeout`"),
                 Param("purge", "boolean", description="delete: remove from jobs, ACLs and pools"),
                 Param("destroy-unreferenced-disks", "boolean", description="delete: also unused volumes"),
                 Param("skiplock", "boolean", description="root@pam only: ignore locks")]
RESULT = {"type": "object", "required": ["vmid", "success"], "properties": {
    "vmid": {"type": "integer"}, "success": {"type": "boolean"}, "upid": {"type": "string"},
    "error": {"type": "string"}, "status": {"type": "integer", "description": "the HTTP status of the refusal"},
    "exitstatus": {"type": "string", "description": "with `wait`: how the task ended"},
    "skipped": {"type": "boolean", "description": "not started: an earlier action failed"}}}


@API.endpoint("POST", "/batch/vms/action", native=True, rate_class="bulk",
              params=[Param("action", optional=False, enum=tuple(ACTIONS)),
                      Param("vmids", "array", optional=False, max_items=1000,
                            items=Param("vmid", "integer", minimum=100, maximum=999_999_999)),
                      Param("options", "object", properties=(
                          Param("parallel", "integer", minimum=1, maximum=32, default=4),
                          Param("continue_on_error", "boolean", default=1))),
                      Param("wait", "boolean", default=0,
                            description="Wait for the tasks and report how each ended."),
                      *ACTION_PARAMS],
              returns={"type": "object", "properties": {
                  "results": {"type": "array", "items": RESULT},
                  "summary": {"type": "object", "properties": {k: {"type": "integer"} for k in
                                                                ("total", "succeeded", "failed", "skipped")}}}})
async def batch_action(ctx: Ctx, p: dict) -> dict:
    """Run `action` on every guest of `vmids` (`options.parallel` at a time, in order). With
    `continue_on_error` false nothing starts after the first failure (those guests are `skipped`). A guest's
    result is its task's UPID, or the error the single call would have answered."""
    action, vmids = p["action"], p["vmids"]
    if len(set(vmids)) != len(vmids):
        raise ParamErrors({"vmids": "a VMID is listed twice"})
    method, path = ACTIONS[action]
    endpoint, _, _ = API.resolve(method, path.format(node="n", vmid=100))
    given = {k: v for k, v in p.items() if k not in ("action", "vmids", "options", "wait")}
    foreign = [k for k in given if not any(param.matches(k) for param in endpoint.params)]
    if foreign:
        raise ParamErrors({k: f"not a parameter of action '{action}'" for k in foreign})
    options = p.get("options", {})
    parallel, keep_going = options.get("parallel", 4), bool(options.get("continue_on_error", 1))
    results: list[dict | None] = [None] * len(vmids)
    failed = trio.Event()
    limiter = trio.Semaphore(parallel)

    async def one(i: int, vmid: int) -> None:
        async with limiter:
            if failed.is_set() and not keep_going:
                results[i] = {"vmid": vmid, "success": False, "skipped": True,
                              "error": "not started: an earlier action of the batch failed"}
                return
            results[i] = await _run(ctx, endpoint, action, vmid, given, bool(p.get("wait")))
            if not results[i]["success"]:
                failed.set()

    async with trio.open_nursery() as nursery:
        for i, vmid in enumerate(vmids):
            nursery.start_soon(one, i, vmid)
            await trio.sleep(0)  # start in order, so that "after the first failure" means the list's order
    done = [r for r in results if r is not None]
    skipped = sum(1 for r in done if r.get("skipped"))
    succeeded = sum(1 for r in done if r["success"])
    return {"results": done, "summary": {"total": len(done), "succeeded": succeeded,
                                         "failed": len(done) - succeeded - skipped, "skipped": skipped}}


async def _run(ctx: Ctx, endpoint, action: str, vmid: int, given: dict, wait: bool) -> dict:
    """One guest's action through its endpoint: privilege, parameters, handler; the refusal as its result."""
    sub = ctx.derived(str(vmid))
    try:
        with ctx.node.read() as s:
            guest = s.guests.get(vmid)
            params = endpoint.validate({"node": guest["node"] if guest else ctx.node.name, "vmid": vmid, **given})
            denied = endpoint.permission.denial(lambda path: privileges_on(s, ctx.user, path), params)
        if denied:
            raise forbidden(*denied)
        if guest is None:
            raise Rejection(404, f"VM {vmid} does not exist")
        if guest["node"] != ctx.node.name and not ctx.node.node_online(guest["node"]):
            raise Rejection(502, f"node '{guest['node']}' is unreachable")  # as the single call, forwarded
        upid = await endpoint.handler(sub, params)
    except ParamErrors as exc:
        return {"vmid": vmid, "success": False, "status": 400,
                "error": "; ".join(f"{k}: {v}" for k, v in sorted(exc.errors.items()))}
    except Rejection as exc:
        return {"vmid": vmid, "success": False, "status": exc.status, "error": exc.message}
    result = {"vmid": vmid, "success": True, "upid": upid}
    if wait:
        try:
            task = await wait_task(sub, upid)
            result["exitstatus"] = task["exitstatus"]
        except Rejection as exc:
            result.update(success=False, exitstatus=exc.message, error=exc.message)
    return result
