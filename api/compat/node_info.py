"""/nodes/{node}: the node's status, version, time, DNS and hosts, and the RRD figures of the node and its
guests (Proxmox's `PVE::API2::Nodes::Nodeinfo`). Each answers on the node itself: the API forwards a request
for another member to it (api/forward.py), as Proxmox's `proxyto => 'node'`.
"""

from __future__ import annotations

import hashlib
import os
import time

from api.compat.access import GPVE_VERSION
from api.context import Ctx
from api.registry import API
from api.schema import NODE, VMID_PATH, Param, Permission
from api.services import guests
from hypervisor import host
from hypervisor.rrd import CFS, GUEST_TIMEFRAMES, NODE_TIMEFRAMES

SYS_AUDIT = Permission("Sys.Audit", "/nodes/{node}")
INT, NUM, STR = {"type": "integer"}, {"type": "number"}, {"type": "string"}


def _object(properties: dict, optional: tuple[str, ...] = (), more: bool = False) -> dict:
    """An object schema whose properties are all sent (Proxmox: no `optional`) but `optional`."""
    required = [k for k in properties if k not in optional]
    return {"type": "object", "properties": properties, "additionalProperties": more,
            **({"required": required} if required else {})}


STATUS = _object({
    "uptime": INT, "idle": INT, "cpu": {**NUM, "description": "CPU utilisation over the last 10 s (0..1)."},
    "wait": {**NUM, "description": "Share of CPU time waiting for I/O over the last 10 s (0..1)."},
    "loadavg": {"type": "array", "items": STR, "description": "Load averages of 1, 5 and 15 minutes."},
    "kversion": STR,
    "current-kernel": _object({"sysname": STR, "release": STR, "version": STR, "machine": STR}),
    "boot-info": _object({"mode": {"type": "string", "enum": ["efi", "legacy-bios"]}, "secureboot": INT},
                         optional=("secureboot",)),
    "cpuinfo": _object({"cpus": INT, "cores": INT, "sockets": INT, "model": STR, "mhz": STR, "hvm": INT,
                        "flags": STR, "user_hz": INT}),
    "memory": _object({"total": INT, "used": INT, "free": INT, "available": INT}),
    "swap": _object({"total": INT, "used": INT, "free": INT}),
    "ksm": _object({"shared": INT}),
    "rootfs": _object({"total": INT, "used": INT, "free": INT, "avail": INT}),
    "pveversion": STR,
}, more=True)
POINTS = {"type": "array", "items": {"type": "object", "required": ["time"], "properties": {"time": INT}}}


@API.endpoint("GET", "/nodes/{node}/status", params=[NODE], permission=SYS_AUDIT, returns=STATUS)
async def node_status(ctx: Ctx, p: dict) -> dict:
    """The node's uptime, load, CPU, memory, swap, KSM, root filesystem, kernel and boot mode."""
    mem, root, cpuinfo = host.meminfo(), host.filesystem("/"), host.cpuinfo()
    kernel = host.kernel()
    sampled = ctx.rt.sampler.host if ctx.rt.sampler is not None else {"cpu": 0.0, "wait": 0.0}
    return {
        "uptime": host.uptime(), "idle": 0, "loadavg": host.loadavg(),
        "cpu": round(sampled["cpu"], 4), "wait": round(sampled["wait"], 4),
        "kversion": f"{kernel['sysname']} {kernel['release']} {kernel['version']}", "current-kernel": kernel,
        "boot-info": host.boot_info(),
        "cpuinfo": {k: cpuinfo[k] for k in ("cpus", "cores", "sockets", "model", "mhz", "hvm", "flags", "user_hz")},
        "memory": {"total": mem["memtotal"], "used": mem["memused"], "free": mem["memfree"],
                   "available": mem["memavailable"]},
        "swap": {"total": mem["swaptotal"], "used": mem["swapused"], "free": mem["swapfree"]},
        "ksm": {"shared": mem["memshared"]},
        "rootfs": root,
        "pveversion": f"pve-manager/{GPVE_VERSION}/gpve",
    }


@API.endpoint("GET", "/nodes/{node}/version", params=[NODE],
              returns=_object({"version": STR, "release": STR, "repoid": STR}))
async def node_version(ctx: Ctx, p: dict) -> dict:
    """The node's API version (the Proxmox VE release gpve answers as)."""
    return {"version": GPVE_VERSION, "release": GPVE_VERSION.rsplit(".", 1)[0], "repoid": "gpve"}


def _timezone() -> str:
    """/etc/timezone, else the zone /etc/localtime links to, else UTC."""
    try:
        with open("/etc/timezone") as f:
            zone = f.readline().strip()
        if zone:
            return zone
    except OSError:
        pass
    target = os.path.realpath("/etc/localtime")
    return target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else "UTC"


@API.endpoint("GET", "/nodes/{node}/time", params=[NODE], permission=SYS_AUDIT,
              returns=_object({"time": INT, "localtime": INT, "timezone": STR}))
async def node_time(ctx: Ctx, p: dict) -> dict:
    """The node's clock: `time` (UTC seconds), `localtime` (its local wall time as seconds), `timezone`."""
    now = int(time.time())
    return {"time": now, "localtime": now + time.localtime(now).tm_gmtoff, "timezone": _timezone()}


@API.endpoint("GET", "/nodes/{node}/dns", params=[NODE], permission=SYS_AUDIT,
              returns=_object({"search": STR, "dns1": STR, "dns2": STR, "dns3": STR},
                              optional=("search", "dns1", "dns2", "dns3")))
async def node_dns(ctx: Ctx, p: dict) -> dict:
    """The node's resolver (/etc/resolv.conf): `search` domain and up to three name servers `dns1`..`dns3`."""
    out: dict = {}
    servers: list[str] = []
    try:
        with open("/etc/resolv.conf") as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] in ("search", "domain") and "search" not in out:
                    out["search"] = words[1]
                elif len(words) >= 2 and words[0] == "nameserver" and len(servers) < 3:
                    servers.append(words[1])
    except OSError:
        pass
    out.update({f"dns{i}": server for i, server in enumerate(servers, start=1)})
    return out


@API.endpoint("GET", "/nodes/{node}/hosts", params=[NODE], permission=Permission("Sys.Audit", "/"),
              returns=_object({"data": STR, "digest": STR}, optional=("digest",)))
async def node_hosts(ctx: Ctx, p: dict) -> dict:
    """The node's /etc/hosts (`data`) and the SHA-1 `digest` of it."""
    try:
        with open("/etc/hosts", "rb") as f:
            raw = f.read()
    except OSError:
        raw = b""
    return {"data": raw.decode(errors="replace"), "digest": hashlib.sha1(raw).hexdigest()}


def _rrd_params(timeframes: tuple[str, ...]) -> list[Param]:
    return [Param("timeframe", enum=timeframes, optional=False, description="The time frame of the points."),
            Param("cf", enum=CFS, default="AVERAGE", description="The RRD consolidation function.")]


def _points(ctx: Ctx, key: str, p: dict) -> list[dict]:
    sampler = ctx.rt.sampler
    if sampler is None:
        return []
    return sampler.store.fetch(key, p["timeframe"], p.get("cf", "AVERAGE"), time.time())


@API.endpoint("GET", "/nodes/{node}/rrddata", params=[NODE, *_rrd_params(NODE_TIMEFRAMES)], permission=SYS_AUDIT,
              returns=POINTS)
async def node_rrddata(ctx: Ctx, p: dict) -> list:
    """The node's figures over a timeframe, one point per RRD row (`time`, `cpu`, `maxcpu`, `iowait`, `loadavg`,
    `memtotal`, `memused`, `swaptotal`, `swapused`, `roottotal`, `rootused`, `netin`, `netout` in bytes/s);
    a row without samples has `time` alone. Kept in memory on the node (hypervisor/rrd.py)."""
    return _points(ctx, f"node/{p['node']}", p)


@API.endpoint("GET", "/nodes/{node}/qemu/{vmid}/rrddata", params=[NODE, VMID_PATH, *_rrd_params(GUEST_TIMEFRAMES)],
              permission=Permission("VM.Audit", "/vms/{vmid}"), returns=POINTS)
async def guest_rrddata(ctx: Ctx, p: dict) -> list:
    """A guest's figures over a timeframe (`time`, `cpu`, `maxcpu`, `mem`, `maxmem`, `disk`, `maxdisk`, and
    `netin`, `netout`, `diskread`, `diskwrite` in bytes/s), sampled by the node it runs on since it came there."""
    guests.guest_or_404(ctx, p["node"], p["vmid"])
    return _points(ctx, f"qemu/{p['vmid']}", p)
