"""OperationService: tasks as `Operation`s (REST: GET /nodes/{node}/tasks/{upid}/status), and waiting on them."""

from __future__ import annotations

import trio
from google.protobuf.timestamp_pb2 import Timestamp

from api.rpc.core import Call, Runner, unary
from api.rpc.pb import operation_pb2, operation_pb2_grpc
from api.schema import ParamErrors
from engine.upid import Upid

STATUS = "/nodes/{node}/tasks/{upid}/status"
WAIT_DEFAULT = 60.0  # s
WAIT_MAX = 600.0  # s


def operation_message(task: dict) -> operation_pb2.Operation:
    """An Operation from REST's task status (`upid`, `node`, `type`, `id`, `user`, `starttime`, `status`,
    `exitstatus`)."""
    running = task["status"] == "running"
    exit_status = "" if running else task.get("exitstatus", "")
    if running:
        status = operation_pb2.OPERATION_STATUS_RUNNING
    elif exit_status == "OK":
        status = operation_pb2.OPERATION_STATUS_OK
    elif exit_status.startswith("WARNINGS"):
        status = operation_pb2.OPERATION_STATUS_WARNINGS
    else:
        status = operation_pb2.OPERATION_STATUS_FAILED
    vmid = int(task["id"]) if str(task.get("id", "")).isdigit() else 0
    return operation_pb2.Operation(upid=task["upid"], node=task["node"], type=task["type"], vmid=vmid,
                                   user=task["user"], status=status, exit_status=exit_status,
                                   start_time=Timestamp(seconds=int(task["starttime"])), done=not running)


async def task_status(call: Call, upid: str) -> dict:
    """REST's status of task `upid` (400 for a malformed UPID, 404 unknown, 403 another's without Sys.Audit)."""
    try:
        node = Upid.parse(upid).node
    except ValueError as exc:
        raise ParamErrors({"upid": str(exc)}) from None
    return await call.rest("GET", STATUS, {"node": node, "upid": upid})


async def operation(call: Call, upid: str) -> operation_pb2.Operation:
    return operation_message(await task_status(call, upid))


class OperationService(operation_pb2_grpc.OperationServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    @unary("GET", STATUS)
    async def Get(self, call: Call, request: operation_pb2.GetOperationRequest) -> operation_pb2.Operation:
        return await operation(call, request.upid)

    @unary("GET", STATUS)
    async def Wait(self, call: Call, request: operation_pb2.WaitOperationRequest) -> operation_pb2.Operation:
        timeout = request.timeout.ToTimedelta().total_seconds() if request.HasField("timeout") else 0.0
        if timeout < 0 or timeout > WAIT_MAX:
            raise ParamErrors({"timeout": f"value must be between 0 and {WAIT_MAX:.0f} seconds"})
        deadline = trio.current_time() + (timeout or WAIT_DEFAULT)
        while True:
            changed = call.node.state_changed()
            task = await task_status(call, request.upid)
            if task["status"] != "running" or trio.current_time() >= deadline:
                return operation_message(task)
            with trio.move_on_at(deadline):
                await changed.wait()
