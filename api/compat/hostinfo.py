"""Live figures of this host for /nodes and /cluster/resources (node-local, never in the log)."""

from __future__ import annotations

import os

from hypervisor import host


def host_figures(data_dir: str, sampler=None) -> dict:
    """`cpu` (utilisation over the sampler's last interval, 0..1), `maxcpu`, `mem`/`maxmem`, `disk`/`maxdisk` (the
    data dir's filesystem) and `uptime`; `sampler` is the node's (hypervisor/sampler.py), None before it runs."""
    mem = host.meminfo()
    fs = host.filesystem(data_dir)
    return {
        "cpu": round(sampler.host["cpu"], 4) if sampler is not None else 0, "maxcpu": host.cpuinfo()["cpus"],
        "mem": mem["memused"], "maxmem": mem["memtotal"], "disk": fs["used"], "maxdisk": fs["total"],
        "uptime": host.uptime(),
    }


def cgroup_mode() -> int:
    """2 on a unified (v2) cgroup hierarchy, else 1, as Proxmox's `PVE::CGroup::cgroup_mode`."""
    return 2 if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else 1


def host_static() -> dict:
    """The host facts a node registers in the log, as Proxmox's `static-info` node key: `cpus`, `memory` (bytes),
    `cgroup-mode`; other members show them in /cluster/resources and /nodes."""
    return {"cpus": host.cpuinfo()["cpus"], "memory": host.meminfo()["memtotal"], "cgroup-mode": cgroup_mode()}
