"""Live figures of this host for /nodes and /cluster/resources (node-local, never in the log)."""

from __future__ import annotations

import os


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def host_figures(data_dir: str) -> dict:
    mem = _meminfo()
    st = os.statvfs(data_dir)
    ncpu = os.cpu_count() or 1
    try:
        with open("/proc/uptime") as f:
            uptime = int(float(f.read().split()[0]))
    except OSError:
        uptime = 0
    total = mem.get("MemTotal", 0)
    return {
        "cpu": round(min(1.0, os.getloadavg()[0] / ncpu), 4), "maxcpu": ncpu,
        "mem": total - mem.get("MemAvailable", total), "maxmem": total,
        "disk": (st.f_blocks - st.f_bfree) * st.f_frsize, "maxdisk": st.f_blocks * st.f_frsize,
        "uptime": uptime,
    }


def cgroup_mode() -> int:
    """2 on a unified (v2) cgroup hierarchy, else 1, as Proxmox's `PVE::CGroup::cgroup_mode`."""
    return 2 if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else 1


def host_static() -> dict:
    """The host facts a node registers in the log, as Proxmox's `static-info` node key: `cpus`, `memory` (bytes),
    `cgroup-mode`; other members show them in /cluster/resources and /nodes."""
    return {"cpus": os.cpu_count() or 1, "memory": _meminfo().get("MemTotal", 0), "cgroup-mode": cgroup_mode()}
