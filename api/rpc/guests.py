"""GuestService: guests by VMID, each call through the REST endpoint it mirrors (api/compat/qemu*.py).

The request's typed fields become that endpoint's parameters (`memory` in MiB, disks `{storage, size}` as
`scsiN=STORAGE:GiB`, `options` as further config keys), and its answer becomes the response message.
A guest's node is looked up from its VMID, so any node answers for any guest.
"""

from __future__ import annotations

import re
from typing import Any

import trio
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from api.forward import require_member
from api.rpc.core import Call, Runner, stream, unary
from api.rpc.operations import operation
from api.rpc.pb import guest_pb2, guest_pb2_grpc
from api.schema import MAX_LIMIT, ParamErrors, split_list
from engine.errors import Rejection
from engine.hub import TooOld

GUEST = "/nodes/{node}/qemu/{vmid}"
STATUS = GUEST + "/status/current"
CONFIG = GUEST + "/config"
BUSES = {guest_pb2.DISK_BUS_UNSPECIFIED: "scsi", guest_pb2.DISK_BUS_SCSI: "scsi", guest_pb2.DISK_BUS_VIRTIO: "virtio",
         guest_pb2.DISK_BUS_SATA: "sata", guest_pb2.DISK_BUS_IDE: "ide"}
STATES = {"running": guest_pb2.GUEST_STATE_RUNNING, "stopped": guest_pb2.GUEST_STATE_STOPPED}
SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGT]?)")
UNIT_KIB = {"K": 1, "M": 1 << 10, "G": 1 << 20, "T": 1 << 30, "": 1 << 20}
CREATE_ATTEMPTS = 5  # a VMID picked for the caller may be taken by someone else meanwhile: pick again
WATCH_STEP = 15.0  # s a stream waits for a change before the caller is checked again


def state_of(status: str) -> int:
    return STATES.get(status, guest_pb2.GUEST_STATE_UNKNOWN)


def gib(size: str) -> str:
    """`32G`, `512M`, `1.5T`, `10` (GiB) as Proxmox's allocation size in GiB (`32`, `0.5`); raises ValueError."""
    m = SIZE.fullmatch(size.strip())
    if not m or float(m.group(1)) * UNIT_KIB[m.group(2)] < 1:
        raise ValueError(f"value '{size}' is not a size: a number with K, M, G or T, at least 1K")
    value = float(m.group(1)) * UNIT_KIB[m.group(2)] / (1 << 20)
    return f"{value:.10f}".rstrip("0").rstrip(".")


def guest_message(row: dict, conf: dict | None = None) -> guest_pb2.Guest:
    """A Guest from REST's status/current (or /cluster/resources) row and, for Get, its config (with digest)."""
    msg = guest_pb2.Guest(
        vmid=row["vmid"], name=str(row.get("name", "")), node=row.get("node", ""),
        state=state_of(row.get("status", "")), qmp_status=str(row.get("qmpstatus", "")),
        cpus=int(row.get("cpus", row.get("maxcpu", 0))), cpu_usage=float(row.get("cpu", 0) or 0),
        max_memory_bytes=int(row.get("maxmem", 0)), memory_bytes=int(row.get("mem", 0) or 0),
        max_disk_bytes=int(row.get("maxdisk", 0)), uptime=Duration(seconds=int(row.get("uptime", 0) or 0)),
        pid=int(row.get("pid", 0) or 0), lock=str(row.get("lock", "")), is_template=bool(row.get("template")),
        tags=split_list(row.get("tags", "")))
    if conf is not None:
        conf = dict(conf)
        msg.digest = str(conf.pop("digest", ""))
        msg.config.update({k: str(v) for k, v in conf.items()})
    return msg


def _options(call: Call, options: Any, taken: set[str], field: str = "options") -> dict[str, Any]:
    """`options` (a map field) as REST parameters; a key the request's own fields set already is refused."""
    clash = {f"{field}[{k}]": f"'{k}' is set by the field '{call.fields.get(k, k)}'" for k in options if k in taken}
    if clash:
        raise ParamErrors(clash)
    call.fields.update({k: f"{field}[{k}]" for k in options})
    return dict(options)


def _power(call: Call, vmid: int, action: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return GUEST + f"/status/{action}", {"node": call.owner(vmid), "vmid": vmid, **params}


async def get_guest(call: Call, vmid: int) -> guest_pb2.Guest:
    """REST's status/current and config of the guest, as one Guest."""
    params = {"node": call.owner(vmid), "vmid": vmid}
    row = await call.rest("GET", STATUS, params)
    conf = await call.rest("GET", CONFIG, params)
    return guest_message({**row, "node": params["node"]}, conf)


async def watch_step(call: Call, cursor: tuple[int, int]) -> tuple[list, tuple[int, int], bool]:
    """The guest's status changes after event `cursor[1]`, waiting up to WATCH_STEP s for one. Done after its
    deletion. 404 when resuming for a guest that no longer exists and whose deletion this node no longer
    has; 410 (OUT_OF_RANGE) when the events after the cursor are no longer kept."""
    vmid, since = cursor
    call.check("GET", STATUS, {"node": call.owner(vmid), "vmid": vmid})
    hub = call.node.hub
    with trio.move_on_after(WATCH_STEP):
        while True:
            changed = call.node.state_changed()
            try:
                events = hub.read(since, 500)
            except TooOld as exc:
                raise Rejection(410, str(exc)) from None
            out = []
            for event in events:
                since = event.id
                if event.data.get("vmid") != vmid:
                    continue
                when = Timestamp()
                when.FromNanoseconds(int(event.timestamp * 1e9))
                if event.type == "vm.status.changed":
                    out.append(guest_pb2.GuestStatus(
                        vmid=vmid, node=event.data["node"], state=state_of(event.data["new_status"]),
                        previous_state=state_of(event.data["old_status"]), event_id=event.id, time=when))
                elif event.type == "vm.deleted":
                    out.append(guest_pb2.GuestStatus(vmid=vmid, node=event.data.get("node", ""),
                                                     state=guest_pb2.GUEST_STATE_DELETED, event_id=event.id,
                                                     previous_state=guest_pb2.GUEST_STATE_STOPPED,  # destroy needs it
                                                     time=when))
                    return out, (vmid, since), True
            if out:
                return out, (vmid, since), False
            if not events:
                with call.node.read() as s:
                    gone = vmid not in s.guests and hub.last_id() >= since  # (not a node still behind)
                if gone:
                    await call.rest("GET", STATUS, {"node": call.node.name, "vmid": vmid})  # Proxmox's 404
                await changed.wait()
    return [], (vmid, since), False


class GuestService(guest_pb2_grpc.GuestServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    @unary("POST", "/nodes/{node}/qemu")
    async def Create(self, call: Call, request: guest_pb2.CreateGuestRequest) -> guest_pb2.CreateGuestResponse:
        node = request.node or call.node.name
        params: dict[str, Any] = {"node": node, "name": request.name or None, "cores": request.cores or None,
                                  "memory": request.memory or None, "start": int(request.start) or None,
                                  "pool": request.pool or None}
        call.fields.update({k: k for k, v in params.items() if v is not None})
        counters: dict[str, int] = {}
        errors = {}
        for i, disk in enumerate(request.disks):
            bus = BUSES.get(disk.bus, "scsi")
            key = f"{bus}{counters.get(bus, 0)}"
            counters[bus] = counters.get(bus, 0) + 1
            call.fields[key] = f"disks[{i}]"
            try:
                params[key] = f"{disk.storage}:{gib(disk.size)}"
            except ValueError as exc:
                errors[f"disks[{i}].size"] = str(exc)
        call.fields["vmid"] = "vmid"
        params.update(_options(call, request.options, {k for k, v in params.items() if v is not None} | {"vmid"}))
        if errors:  # with whatever else REST's declaration finds wrong
            try:
                call.check("POST", "/nodes/{node}/qemu", {**params, "vmid": request.vmid or 100})
            except ParamErrors as exc:
                errors.update(exc.errors)
            except Rejection:
                pass
            raise ParamErrors(errors)
        base = call.request_id
        for attempt in range(CREATE_ATTEMPTS):
            vmid = request.vmid or int(await call.rest("GET", "/cluster/nextid", {}))
            call.request_id = f"{base}.{attempt}"  # each attempt is its own write (a retry of the RPC repeats them)
            try:
                upid = await call.rest("POST", "/nodes/{node}/qemu", {**params, "vmid": vmid})
            except Rejection as exc:
                if request.vmid or exc.status != 409 or attempt == CREATE_ATTEMPTS - 1:
                    raise
                continue
            # a retried RPC is answered from its first attempt: the guest is the one that task created
            created = int(upid.split(":")[6])
            return guest_pb2.CreateGuestResponse(vmid=created, operation=await operation(call, upid))
        raise AssertionError("unreachable")

    @unary("GET", STATUS)
    async def Get(self, call: Call, request: guest_pb2.GetGuestRequest) -> guest_pb2.Guest:
        return await get_guest(call, request.vmid)

    @unary("GET", "/cluster/resources")
    async def List(self, call: Call, request: guest_pb2.ListGuestsRequest) -> guest_pb2.ListGuestsResponse:
        call.fields.update(limit="page_size", start="page_token", node="node")
        if request.page_token and not request.page_token.isdigit():
            raise ParamErrors({"page_token": "not a page token this API gave"})
        start = int(request.page_token or 0)
        limit = request.page_size or None
        if limit is not None and limit > MAX_LIMIT:
            raise ParamErrors({"page_size": f"value must have a maximum value of {MAX_LIMIT}"})
        if request.node:  # a filter naming no member is an error, as every `/nodes/{node}` path answers
            with call.node.read() as s:
                require_member(s.nodes, request.node)
        rows = await call.rest("GET", "/cluster/resources", {"type": "vm", "node": request.node or None,
                                                              "sort": "vmid"})
        page = rows[start:start + limit] if limit else rows[start:]
        more = limit is not None and start + limit < len(rows)
        return guest_pb2.ListGuestsResponse(guests=[guest_message(r) for r in page], total_size=len(rows),
                                            next_page_token=str(start + limit) if more else "")

    @unary("PUT", CONFIG)
    async def Update(self, call: Call, request: guest_pb2.UpdateGuestRequest) -> guest_pb2.Guest:
        params: dict[str, Any] = {"node": call.owner(request.vmid), "vmid": request.vmid}
        for name in ("name", "cores", "memory"):
            if request.HasField(name):
                params[name] = getattr(request, name)
                call.fields[name] = name
        call.fields.update(delete="delete", digest="digest")
        params.update(_options(call, request.options, set(params) | {"delete", "digest"}))
        if request.delete:
            params["delete"] = ",".join(request.delete)
        params["digest"] = request.digest or None
        await call.rest("PUT", CONFIG, params)
        return await get_guest(call, request.vmid)

    @unary("DELETE", GUEST)
    async def Delete(self, call: Call, request: guest_pb2.DeleteGuestRequest) -> guest_pb2.DeleteGuestResponse:
        upid = await call.rest("DELETE", GUEST, {
            "node": call.owner(request.vmid), "vmid": request.vmid, "purge": int(request.purge) or None,
            "destroy-unreferenced-disks": int(request.destroy_unreferenced_disks) or None})
        return guest_pb2.DeleteGuestResponse(operation=await operation(call, upid))

    @unary("POST", GUEST + "/status/start")
    async def Start(self, call: Call, request: guest_pb2.StartGuestRequest):
        call.fields["timeout"] = "timeout_seconds"
        timeout = request.timeout_seconds if request.HasField("timeout_seconds") else None
        path, params = _power(call, request.vmid, "start", {"timeout": timeout})
        return await operation(call, await call.rest("POST", path, params))

    @unary("POST", GUEST + "/status/stop")
    async def Stop(self, call: Call, request: guest_pb2.StopGuestRequest):
        call.fields["timeout"] = "timeout_seconds"
        if request.force_stop and not request.graceful:
            raise ParamErrors({"force_stop": "only with 'graceful' (a stop that is not graceful is forced)"})
        timeout = request.timeout_seconds if request.HasField("timeout_seconds") else None
        if request.graceful:
            call.fields["forceStop"] = "force_stop"
            path, params = _power(call, request.vmid, "shutdown",
                                  {"timeout": timeout, "forceStop": int(request.force_stop) or None})
        else:
            path, params = _power(call, request.vmid, "stop", {"timeout": timeout})
        return await operation(call, await call.rest("POST", path, params))

    @unary("POST", GUEST + "/status/reboot")
    async def Restart(self, call: Call, request: guest_pb2.RestartGuestRequest):
        call.fields["timeout"] = "timeout_seconds"
        timeout = request.timeout_seconds if request.HasField("timeout_seconds") else None
        path, params = _power(call, request.vmid, "reboot", {"timeout": timeout})
        return await operation(call, await call.rest("POST", path, params))

    @unary("POST", GUEST + "/migrate")
    async def Migrate(self, call: Call, request: guest_pb2.MigrateGuestRequest):
        call.fields.update({"target": "target", "online": "online", "with-local-disks": "with_local_disks"})
        upid = await call.rest("POST", GUEST + "/migrate", {
            "node": call.owner(request.vmid), "vmid": request.vmid, "target": request.target,
            "online": int(request.online) or None, "with-local-disks": int(request.with_local_disks) or None})
        return await operation(call, upid)

    @unary("POST", GUEST + "/clone")
    async def Clone(self, call: Call, request: guest_pb2.CloneGuestRequest):
        call.fields.update(newid="new_vmid")
        upid = await call.rest("POST", GUEST + "/clone", {
            "node": call.owner(request.vmid), "vmid": request.vmid, "newid": request.new_vmid,
            "name": request.name or None, "description": request.description or None,
            "full": int(request.full) if request.HasField("full") else None, "target": request.target or None,
            "storage": request.storage or None, "format": request.format or None})
        return await operation(call, upid)

    @stream("GET", STATUS, step=watch_step)
    async def WatchStatus(self, call: Call, request: guest_pb2.WatchStatusRequest) -> tuple:
        """The current state (unless resuming), then `watch_step` until the guest is deleted."""
        vmid = request.vmid
        call.check("GET", STATUS, {"node": call.owner(vmid), "vmid": vmid})
        with call.node.read() as s:
            guest = s.guests.get(vmid)
            status, node = (guest.get("status", "stopped"), guest["node"]) if guest is not None else ("", "")
            last = call.node.hub.last_id()
        if request.since_id:
            return await watch_step(call, (vmid, request.since_id))
        if guest is None:
            await call.rest("GET", STATUS, {"node": call.node.name, "vmid": vmid})  # Proxmox's 404
        now = Timestamp()
        now.GetCurrentTime()
        first = guest_pb2.GuestStatus(vmid=vmid, node=node, state=state_of(status), event_id=last, time=now)
        return [first], (vmid, last), False
